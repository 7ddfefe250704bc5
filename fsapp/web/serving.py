"""The console on gevent's WSGI server: alone (``fsapp web``) or inside ``fsapp serve`` (``[web] in_serve``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent.pywsgi import WSGIServer

from fsapp import log as logmod
from fsapp.config import Config
from fsapp.store import Store
from fsapp.web.app import create_app


def start(cfg: Config, *, store: Store | None = None, crm_of: Callable[[], Any] | None = None,
          health: Callable[[], dict[str, Any]] | None = None) -> WSGIServer:
    """Serve the console on ``[web] listen`` in this event loop; the started server (``.stop()`` ends it).

    Raises StorageError (the database), ValueError (the session secret) or OSError (the address)."""
    app = create_app(cfg, store, crm_of=crm_of, health=health)
    server = WSGIServer((cfg.web.listen_host, cfg.web.listen_port), app, log=None)
    server.start()
    logmod.get("fsapp.web").info("web_listening", address=address(cfg, server))
    return server


def address(cfg: Config, server: WSGIServer) -> str:
    return f"http://{cfg.web.listen_host}:{server.server_port}/"
