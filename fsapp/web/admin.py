"""Console users managed in the browser (admin only): add, change a role, reset a password, remove.

Every form is a POST carrying the session's CSRF token (checked in ``app._before``);
passwords are hashed as ``fsapp web users add`` hashes them; an admin cannot remove
or demote themself, and the store refuses to leave the console without an admin.
Every change, and every refusal, is logged with the acting user.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from fsapp import log as logmod
from fsapp.store import LastAdmin
from fsapp.web import auth
from fsapp.web.context import current_store
from fsapp.web.views import need

admin = Blueprint("admin", __name__)
log = logmod.get("fsapp.web")


@admin.app_context_processor
def _roles() -> dict[str, Any]:
    return {"roles": auth.ROLES}


@admin.route("/users/add", methods=["POST"])
@need("admin")
def add() -> Any:
    name, role, password = request.form.get("name", "").strip(), request.form.get("role", ""), _password()
    problem = auth.name_problem(name) or _role_problem(role) or auth.password_problem(password)
    if problem:
        return _refused("add", name, problem)
    if not current_store().web_user_add(name, role, auth.hash_password(password)):
        return _refused("add", name, f"there is already a user {name!r}")
    return _done("web_user_added", name, "user_added", role=role)


@admin.route("/users/<name>/role", methods=["POST"])
@need("admin")
def role(name: str) -> Any:
    new = request.form.get("role", "")
    problem = _role_problem(new) or _not_me(name, "change your own role")
    if problem:
        return _refused("role", name, problem)
    return _change("web_user_role_changed", name, "role_changed", role=new)


@admin.route("/users/<name>/password", methods=["POST"])
@need("admin")
def password(name: str) -> Any:
    new = _password()
    if auth.password_problem(new):
        return _refused("password", name, auth.password_problem(new))
    hashed = auth.hash_password(new)
    response = _change("web_user_password_reset", name, "password_reset", password_hash=hashed)
    if name == g.user["name"]:
        session["password"] = auth.password_mark(hashed)  # every other session of theirs ends, not this one
    return response


@admin.route("/users/<name>/remove", methods=["POST"])
@need("admin")
def remove(name: str) -> Any:
    problem = _not_me(name, "remove yourself")
    if problem:
        return _refused("remove", name, problem)
    try:
        removed = current_store().web_user_remove(name)
    except LastAdmin as exc:
        return _refused("remove", name, str(exc))
    return _done("web_user_removed", name, "user_removed") if removed else _no_such(name)


def _change(event: str, name: str, label: str, **change: str) -> Any:
    try:
        changed = current_store().web_user_update(name, **change)
    except LastAdmin as exc:
        return _refused(event, name, str(exc))
    if not changed:
        return _no_such(name)
    return _done(event, name, label, **{k: v for k, v in change.items() if k == "role"})


def _password() -> str:
    return request.form.get("password", "")


def _role_problem(role: str) -> str:
    return "" if role in auth.ROLES else f"role must be one of {', '.join(auth.ROLES)}, not {role!r}"


def _not_me(name: str, what: str) -> str:
    return f"you cannot {what}: another admin can" if name == g.user["name"] else ""


def _done(event: str, name: str, label: str, **fields: str) -> Any:
    log.info(event, user=g.user["name"], target=name, address=request.remote_addr, **fields)
    flash(name, label)
    return redirect(url_for("views.users"), code=303)


def _refused(action: str, name: str, problem: str, status: int = 400) -> Any:
    log.warning("web_user_change_refused", user=g.user["name"], target=name, action=action, reason=problem,
                address=request.remote_addr)
    return render_template("users.html", users=current_store().web_users(), problems=[problem]), status


def _no_such(name: str) -> Any:
    return _refused("change", name, f"no user {name!r}", status=404)
