"""The console's Flask app: the factory, the login gate, CSRF, security headers, template helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, g, redirect, request, session, url_for
from markupsafe import Markup, escape

from fsapp.config import Config
from fsapp.store import Store, open_store
from fsapp.web import auth, i18n
from fsapp.web.context import current_config, current_store, language

PUBLIC = ("views.login", "static")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_app(cfg: Config, store: Store | None = None, *, crm_of: Callable[[], Any] | None = None,
               health: Callable[[], dict[str, Any]] | None = None) -> Flask:
    """The console over ``cfg``'s database (``store`` when given). Inside ``fsapp serve``, ``crm_of``
    gives the daemon's current CRM and ``health`` is its health callable; else the console makes
    its CRM when a page first needs it and reads the health from ``[web] daemon_health_url``."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=auth.session_secret(cfg), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", FSAPP_CONFIG=cfg, FSAPP_CRM_OF=crm_of, FSAPP_HEALTH=health,
                      FSAPP_STORE=store or open_store(cfg.storage_url, pool_size=cfg.storage_pool_size))
    from fsapp.web.admin import admin
    from fsapp.web.customer import customer
    from fsapp.web.live import live
    from fsapp.web.stats import stats
    from fsapp.web.views import views

    for blueprint in (views, stats, live, admin, customer):
        app.register_blueprint(blueprint)
    app.before_request(_before)
    app.after_request(_headers)
    app.context_processor(_template_globals)
    return app


def _before() -> Any:
    lang = request.args.get("lang", "")
    if lang in i18n.LANGUAGES:
        session["lang"] = lang
    if request.method == "POST" and not auth.same_token(request.form.get("csrf"), session.get("csrf")):
        abort(400, "the form's CSRF token is missing or wrong: reload the page")
    g.user = None
    name = session.get("user")
    if name:
        g.user = current_store().web_user(name)
        if g.user is None or not auth.same_token(session.get("password"), auth.password_mark(g.user["password_hash"])):
            g.user = None  # removed, or its password changed since this session logged in
            session.clear()
    if g.user is None and request.endpoint not in PUBLIC:
        return redirect(url_for("views.login"))
    return None


def _headers(response: Any) -> Any:
    response.headers.update(HEADERS)
    return response


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = auth.new_token()
    return str(session["csrf"])


def _template_globals() -> dict[str, Any]:
    lang = language()
    return {
        "lang": lang, "dir": "rtl" if lang == "fa" else "ltr", "csrf_token": csrf_token,
        "t": lambda key: i18n.label(lang, key), "num": lambda v: i18n.digits(lang, v),
        "moment": lambda iso: i18n.moment(lang, iso, current_config().journal.zone),
        "dur": lambda s: i18n.duration(lang, s),
        "pct": lambda ratio: i18n.percent(lang, ratio),
        "icon": icon,
        "user": g.get("user"), "may": lambda needed: bool(g.get("user")) and auth.may(g.user["role"], needed),
    }


@functools.lru_cache(maxsize=256)
def icon(name: str, title: str = "") -> Markup:
    """One of the sprite's icons (``_icons.html``), titled: made once per icon and title, since a
    journal page shows a few in each of its fifty rows."""
    return Markup('<svg class="icon i-{0}" viewBox="0 0 16 16" role="img" aria-label="{1}"><title>{1}</title>'
                  '<use href="#i-{0}"/></svg>').format(escape(name), escape(title))
