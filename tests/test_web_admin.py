"""Console users managed in the browser, through Flask's test client, on SQLite and PostgreSQL:
add, change a role, reset a password, remove; CSRF, roles, never yourself, never the last admin."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from flask import Flask
from flask.testing import FlaskClient

from fsapp import config as configmod
from fsapp.store import LastAdmin, open_store
from fsapp.web import auth
from fsapp.web.app import create_app
from tests.helpers import HANGUP_MENU, write_config
from tests.webconsole import PASSWORD, add_users, csrf, login

NEW_PASSWORD = "a brand new passphrase"


def config_on(tmp_path: Path, store_url: str, extra: str = "") -> configmod.Config:
    """A config whose storage is ``store_url`` (SQLite in tmp_path, or a PostgreSQL database)."""
    path = write_config(tmp_path, HANGUP_MENU, extra=extra)
    text = re.sub(r'(?m)^url = "sqlite:///.*"$', f'url = "{store_url}"', path.read_text(encoding="utf-8"))
    path.write_text(text, encoding="utf-8")
    return configmod.load(path, check_files=False)


@pytest.fixture
def app(tmp_path: Path, store_url: str) -> Iterator[Flask]:
    app = create_app(config_on(tmp_path, store_url))
    add_users(app.config["FSAPP_STORE"])
    yield app
    app.config["FSAPP_STORE"].close()


def as_user(app: Flask, name: str, password: str = PASSWORD) -> FlaskClient:
    c = app.test_client()
    c.get("/login?lang=en")
    assert login(c, name, password).status_code == 302
    return c


def post(c: FlaskClient, path: str, **form: str):  # noqa: ANN201 - a TestResponse
    return c.post(path, data={"csrf": csrf(c.get("/").get_data(as_text=True)), **form})


def roles(app: Flask) -> dict[str, str]:
    return {u["name"]: u["role"] for u in app.config["FSAPP_STORE"].web_users()}


def test_an_admin_adds_a_user_who_can_then_log_in(app: Flask) -> None:
    admin = as_user(app, "admin")
    with structlog.testing.capture_logs() as logs:
        r = post(admin, "/users/add", name="maryam", role="reviewer", password=NEW_PASSWORD)
    assert r.status_code == 303 and r.headers["Location"].endswith("/users")
    assert "User added: maryam" in admin.get("/users").get_data(as_text=True)
    assert roles(app)["maryam"] == "reviewer"
    stored = app.config["FSAPP_STORE"].web_user("maryam")["password_hash"]
    assert stored.startswith("scrypt$16384$8$1$") and NEW_PASSWORD not in stored
    assert [(e["event"], e["user"], e["target"], e["role"]) for e in logs if e["event"] == "web_user_added"] == [
        ("web_user_added", "admin", "maryam", "reviewer")]
    assert all(NEW_PASSWORD not in str(e) for e in logs)
    as_user(app, "maryam", NEW_PASSWORD)


@pytest.mark.parametrize(("form", "message", "status"), [
    ({"name": "bad name", "role": "viewer", "password": NEW_PASSWORD}, "NAME must be 1-64 printable", 400),
    ({"name": "ali", "role": "boss", "password": NEW_PASSWORD}, "role must be one of viewer, reviewer, admin", 400),
    ({"name": "ali", "role": "viewer", "password": "short"}, "at least 8 characters", 400),
    ({"name": "viewer", "role": "admin", "password": NEW_PASSWORD}, "there is already a user 'viewer'", 400),
])
def test_a_bad_new_user_is_refused_and_named(app: Flask, form: dict[str, str], message: str, status: int) -> None:
    before = roles(app)
    r = post(as_user(app, "admin"), "/users/add", **form)
    assert r.status_code == status and message in html.unescape(r.get_data(as_text=True))
    assert roles(app) == before  # an existing user's role and password are not overwritten by "add"


def test_role_change_password_reset_and_removal(app: Flask) -> None:
    admin = as_user(app, "admin")
    viewer = as_user(app, "viewer")
    with structlog.testing.capture_logs() as logs:
        assert post(admin, "/users/viewer/role", role="reviewer").status_code == 303
        assert post(admin, "/users/reviewer/password", password=NEW_PASSWORD).status_code == 303
    assert roles(app)["viewer"] == "reviewer"
    assert viewer.get("/call/nothing/recording").status_code == 404  # the new role counts at once: no more 403
    c = app.test_client()
    assert login(c, "reviewer", PASSWORD).status_code == 401
    assert login(c, "reviewer", NEW_PASSWORD).status_code == 302
    assert {(e["event"], e["user"], e["target"]) for e in logs} >= {
        ("web_user_role_changed", "admin", "viewer"), ("web_user_password_reset", "admin", "reviewer")}
    assert post(admin, "/users/viewer/remove").status_code == 303
    assert "viewer" not in roles(app)
    assert viewer.get("/").status_code == 302  # a removed user's session ends
    assert post(admin, "/users/nobody/remove").status_code == 404


def test_a_new_password_ends_the_users_other_sessions(app: Flask) -> None:
    admin = as_user(app, "admin")
    reviewer = as_user(app, "reviewer")
    assert reviewer.get("/").status_code == 200
    assert post(admin, "/users/reviewer/password", password=NEW_PASSWORD).status_code == 303
    assert reviewer.get("/").status_code == 302  # logged in with the old password: logged out
    assert as_user(app, "reviewer", NEW_PASSWORD).get("/").status_code == 200
    # the same when the password is set again from the command line (the store's web_user_set)
    again = as_user(app, "viewer")
    app.config["FSAPP_STORE"].web_user_set("viewer", "viewer", auth.hash_password(NEW_PASSWORD))
    assert again.get("/").status_code == 302


def test_an_admin_who_resets_their_own_password_stays_logged_in_here_only(app: Flask) -> None:
    here, elsewhere = as_user(app, "admin"), as_user(app, "admin")
    assert post(here, "/users/admin/password", password=NEW_PASSWORD).status_code == 303
    assert here.get("/users").status_code == 200
    assert elsewhere.get("/").status_code == 302


@pytest.mark.parametrize(("path", "form"), [
    ("/users/add", {"name": "mallory", "role": "admin", "password": NEW_PASSWORD}),
    ("/users/admin/role", {"role": "viewer"}),
    ("/users/admin/password", {"password": NEW_PASSWORD}),
    ("/users/admin/remove", {}),
])
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_viewers_and_reviewers_get_403_on_every_admin_post(app: Flask, role: str, path: str,
                                                           form: dict[str, str]) -> None:
    before = {u["name"]: (u["role"], app.config["FSAPP_STORE"].web_user(u["name"])["password_hash"])
              for u in app.config["FSAPP_STORE"].web_users()}
    assert post(as_user(app, role), path, **form).status_code == 403
    after = {u["name"]: (u["role"], app.config["FSAPP_STORE"].web_user(u["name"])["password_hash"])
             for u in app.config["FSAPP_STORE"].web_users()}
    assert after == before


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(app: Flask) -> None:
    admin = as_user(app, "admin")
    for data in ({}, {"csrf": "forged"}):
        r = admin.post("/users/add", data={"name": "mallory", "role": "admin", "password": NEW_PASSWORD, **data})
        assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
        assert admin.post("/users/viewer/remove", data=data).status_code == 400
    assert "mallory" not in roles(app) and "viewer" in roles(app)


def test_an_admin_cannot_remove_or_demote_themself(app: Flask) -> None:
    admin = as_user(app, "admin")
    r = post(admin, "/users/admin/remove")
    assert r.status_code == 400 and "you cannot remove yourself" in r.get_data(as_text=True)
    r = post(admin, "/users/admin/role", role="viewer")
    assert r.status_code == 400 and "you cannot change your own role" in r.get_data(as_text=True)
    assert roles(app)["admin"] == "admin"
    page = admin.get("/users").get_data(as_text=True)
    assert 'action="/users/admin/remove"' not in page and 'action="/users/viewer/remove"' in page


def test_the_last_admin_is_never_removed_or_demoted(app: Flask) -> None:
    store = app.config["FSAPP_STORE"]
    store.web_user_set("boss", "admin", store.web_user("admin")["password_hash"])
    boss, admin = as_user(app, "boss"), as_user(app, "admin")
    assert post(boss, "/users/admin/role", role="viewer").status_code == 303  # two admins: one may go
    assert roles(app) == {"admin": "viewer", "boss": "admin", "reviewer": "reviewer", "viewer": "viewer"}
    assert post(admin, "/users/boss/remove").status_code == 403  # the demoted one lost the right at once
    # the store itself refuses, whoever asks (two admins removing each other, a script)
    with pytest.raises(LastAdmin, match="boss is the last admin"):
        store.web_user_remove("boss")
    with pytest.raises(LastAdmin, match="boss is the last admin"):
        store.web_user_update("boss", role="reviewer")
    assert store.web_user_update("boss", password_hash=store.web_user("boss")["password_hash"])  # may change it
    assert roles(app)["boss"] == "admin"


def test_two_admins_removing_each_other_leave_one(tmp_path: Path, store_url: str) -> None:
    """Two stores (two console processes) each remove the other admin, one after the other: the second is refused."""
    cfg = config_on(tmp_path, store_url)
    a, b = open_store(cfg.storage_url), open_store(cfg.storage_url)
    a.web_user_set("one", "admin", "h")
    a.web_user_set("two", "admin", "h")
    results = []
    for store, other in ((a, "two"), (b, "one")):
        try:
            results.append(store.web_user_remove(other))
        except LastAdmin:
            results.append("refused")
    assert results == [True, "refused"]
    assert [(u["name"], u["role"]) for u in b.web_users()] == [("one", "admin")]
    a.close()
    b.close()


def test_the_users_page_has_the_forms_in_both_languages(app: Flask) -> None:
    admin = as_user(app, "admin")
    en = admin.get("/users").get_data(as_text=True)
    assert 'id="add-user"' in en and "New password" in en and "Remove" in en
    fa = admin.get("/users?lang=fa").get_data(as_text=True)
    assert "کاربر تازه" in fa and "حذف" in fa and "بیننده" in fa
    assert "<script" not in fa and " style=" not in fa
    # logout, add; a role form and a remove form for each of the two others; a password form for all three
    assert fa.count('name="csrf"') == 1 + 1 + 2 + 2 + 3
