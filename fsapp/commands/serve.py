"""``fsapp serve``: run the daemon."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fsapp import config as configmod
from fsapp import log as logmod
from fsapp import pins
from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, config_arg, config_path

if TYPE_CHECKING:
    from fsapp.app import App

NAME = "serve"
HELP = "run the daemon"
GEVENT = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)


def run(args: argparse.Namespace) -> int:
    from fsapp.app import App
    from fsapp.server import Server, StartingSignals
    from fsapp.store import StorageError

    path = config_path(args)
    cfg = configmod.load(path)
    metrics = None
    if cfg.server.metrics_listen:
        from fsapp.metrics import PrometheusMetrics

        metrics = PrometheusMetrics()
    problem = _first_run(cfg)
    if problem:
        print(f"{cfg.file}:storage.url: {problem}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        app = App(cfg, metrics=metrics)
        app.store.check_writable()
    except StorageError as exc:
        msg = str(exc)
        print(msg if msg.startswith("storage.url") else f"{cfg.file}:storage.url: cannot write: {msg}",
              file=sys.stderr)
        return EXIT_RUNTIME
    except ValueError as exc:  # a CRM section that cannot work (missing token variable, ...)
        print(f"{cfg.file}:{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # From the first port bound (not before: a Ctrl-C while the store opens still ends it at once),
    # a stop or a reload asked before the loop serves is kept and acted on once it does.
    starting = StartingSignals()
    try:
        server = Server(app)
    except OSError as exc:  # the port is taken, the address is not this host's, a port below 1024...
        app.stop()
        listen = f"{cfg.server.listen_host}:{cfg.server.listen_port}"
        print(f"{cfg.file}:server.listen: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    warning = pins.pepper_warning(cfg)
    if warning:  # a production concern: serve says it, a simulated call does not
        app.log.warning("pin_pepper_missing", reason=warning)
    if cfg.crm.kind == "local" and not app.store.customer_count():
        from fsapp.site import EMPTY_DIRECTORY

        logmod.get("fsapp").warning("customer_directory_empty", hint=EMPTY_DIRECTORY)
    http = None
    if metrics is not None:
        from fsapp.metrics import health_of, start_http

        try:
            http = start_http(cfg.server.metrics_listen, metrics, health_of(server))
        except OSError as exc:
            print(f"{cfg.file}:server.metrics_listen: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
    console = None
    if cfg.web.in_serve:
        console, code = _start_console(cfg, app, server)
        if console is None:
            return code
    from fsapp.analysis import service

    # Recorded calls are analysed in worker processes of their own: never in this event loop.
    workers = service.WorkerPool(path, cfg.analysis.workers, logmod.get("fsapp")) if service.active(cfg) else None
    if workers is not None:
        workers.start()
    cdr = None
    if cfg.cdr.listen:
        from fsapp.cdr.listener import Listener

        try:
            cdr = Listener(app)
        except OSError as exc:
            print(f"{cfg.file}:cdr.listen: cannot listen on {cfg.cdr.listen}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_RUNTIME
    reloaded = [workers.recycle] if workers is not None else []
    if cdr is not None:
        reloaded.append(cdr.reconfigure)
    server.on_reload = _reloader(app, path, cfg.file, after=reloaded)
    try:
        server.serve_forever(starting)
    finally:
        if cdr is not None:
            cdr.stop()  # after the drain: the legs of the calls that drained are still taken
        if workers is not None:
            workers.stop()
        if http is not None:
            http.stop(timeout=1)
        if console is not None:
            console.stop(timeout=1)  # after the drain: the live page showed the calls draining
    return EXIT_OK


def _start_console(cfg: configmod.Config, app: App, server: Any) -> tuple[Any, int]:
    """``[web] in_serve``: the console on ``[web] listen`` in this event loop, over the daemon's
    own store, CRM and health; (None, exit code) when it cannot start (said on stderr)."""
    from fsapp.metrics import health_of
    from fsapp.store import StorageError
    from fsapp.web import serving

    try:
        return serving.start(cfg, store=app.store, crm_of=lambda: app.crm, health=health_of(server)), EXIT_OK
    except OSError as exc:
        listen = f"{cfg.web.listen_host}:{cfg.web.listen_port}"
        print(f"{cfg.file}:web.listen: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return None, EXIT_RUNTIME
    except ValueError as exc:  # the session secret's variable is unset or too short
        print(str(exc), file=sys.stderr)
        return None, EXIT_BAD_INPUT
    except StorageError as exc:
        print(f"{cfg.file}:storage.url: {exc}", file=sys.stderr)
        return None, EXIT_RUNTIME


def _first_run(cfg: configmod.Config) -> str:
    """Why serve must not open the SQLite database, or ''; a new one is created only on a first run.

    A first run is a database file that does not exist in a folder that does: serve
    creates it and logs ``storage_created``. A missing folder is refused (a mount not
    there yet, a typo), so an empty directory and journal never appear in its place.
    """
    if not cfg.storage_url.startswith("sqlite:"):
        return ""
    from fsapp.store import sqlite_path

    path = sqlite_path(cfg.storage_url)
    if path.exists():
        return ""
    if not path.parent.is_dir():
        return f"no database at {path}, and no folder {path.parent} to create it in"
    logmod.get("fsapp").warning("storage_created", path=str(path),
                                note="no database file was there: a new, empty one (first run)")
    return ""


def _reloader(app: App, path: str | None, file: str,
              after: Sequence[Callable[[], None]] = ()) -> Callable[[], None]:
    """SIGHUP: load the config again; a bad one is logged and the running one kept."""
    log = logmod.get("fsapp")

    def reload() -> None:
        try:
            new = configmod.load(path)
            app.reconfigure(new)
        except (configmod.ConfigError, ValueError) as exc:
            problems = exc.problems if isinstance(exc, configmod.ConfigError) else [f"{file}:{exc}"]
            log.error("config_reload_rejected", problems=problems)
            app.metrics.config_reload(False)
            return
        app.metrics.config_reload(True)
        log.info("config_reloaded", modules=len(new.modules))
        for then in after:
            then()

    return reload
