"""The daemon's CDR listener: the socket on ``[cdr] listen``, the writer, and who serves the posts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fsapp import log as logmod
from fsapp.cdr import http
from fsapp.cdr.aftercall import AfterCall
from fsapp.cdr.endpoint import CDREndpoint
from fsapp.cdr.front import FrontProcess
from fsapp.cdr.http import Response
from fsapp.cdr.writer import CDRWriter
from fsapp.config import CDRConfig, parse_listen
from fsapp.store import StorageError


class Keeper:
    """The daemon's side of a post: the leg into the writer, and the answer its outcome gives."""

    def __init__(self, writer: CDRWriter) -> None:
        self.writer = writer
        self.log = logmod.get("fsapp").bind(component="cdr")

    def __call__(self, leg: dict[str, Any], body: bytes) -> Response:
        """The answer, once the leg is committed (or has failed)."""
        try:
            new = self.writer.add(leg, body)
        except Exception as exc:  # noqa: BLE001 - every outcome is an answer
            return self.answer(leg, False, exc)
        return self.answer(leg, new, None)

    def submit(self, leg: dict[str, Any], body: bytes, reply: Callable[[Response], None]) -> None:
        """``reply(answer)`` from the writer, once the leg is committed (or has failed)."""
        self.writer.submit(leg, body, lambda new, exc: reply(self.answer(leg, new, exc)))

    def answer(self, leg: dict[str, Any], new: bool, exc: BaseException | None) -> Response:
        if isinstance(exc, StorageError):
            return Response(503, f"not stored, the database failed: {exc}\n")
        if exc is not None:  # a fault of ours: logged with the reason, and never answered 2xx
            self.log.error("cdr_failed", uuid=leg["uuid"], exc_info=exc)
            return Response(500, f"not stored: {exc!r}\n")
        self.log.debug("cdr_stored", uuid=leg["uuid"], call_uuid=leg["call_uuid"], replay=not new)
        return Response(200, "OK\n" if new else "OK (already stored)\n")


class Listener:
    """The daemon's CDR listener and its writer, started and stopped together.

    With ``[cdr] own_process`` (the default) the posts' HTTP is served by a front process
    (``fsapp.cdr.front``) on the socket bound here; otherwise in this event loop."""

    def __init__(self, app: Any) -> None:
        self.writer = CDRWriter(app.store, lambda: app.config.journal.too_long_seconds, AfterCall(app),
                                lambda: app.config.storage_group_commit_ms / 1000)
        cfg = app.config.cdr
        self.socket = http.listener(*parse_listen(cfg.listen))  # raises OSError: the daemon does not start
        self.writer.start()

        def settings() -> CDRConfig:
            return app.config.cdr

        self.front = FrontProcess(self.socket, Keeper(self.writer).submit, settings) if cfg.own_process else None
        try:
            if self.front is not None:
                self.front.start()  # raises OSError when it cannot be started
            else:
                self.http = http.serve_on(self.socket, CDREndpoint(settings, Keeper(self.writer)))
        except BaseException:
            self.writer.stop()
            self.socket.close()
            raise
        host, port = self.socket.getsockname()[:2]
        logmod.get("fsapp").bind(component="cdr").info("cdr_listening", listen=f"{host}:{port}",
                                                       own_process=cfg.own_process)

    def reconfigure(self) -> None:
        """After a reload (the in-loop endpoint reads the new section by itself)."""
        if self.front is not None:
            self.front.reconfigure()

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()  # posts in flight get their answer
        else:
            self.http.stop(timeout=2)
        self.writer.stop()
        self.socket.close()
