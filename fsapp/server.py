"""``fsapp serve``: gevent's StreamServer, one greenlet per call.

- peers outside ``[server] allow`` are closed before a byte is read, and logged;
- a peer that has not finished the connect exchange within ``connect_timeout_seconds``
  is closed (``fsapp_connections_rejected{reason="idle"}``); until it has, it is no call
  and does not count toward ``max_calls``;
- above ``max_calls`` a call is still taken, and sent to ``[entry] overflow``;
- SIGTERM/SIGINT stop accepting, let live calls finish up to ``drain_seconds``,
  then cut the rest (each settles its talk at the cut and is journaled) and exit 0
  within ``CUT_SECONDS`` more, whatever FreeSWITCH does.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket as pysocket
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool
from gevent.server import StreamServer

from fsapp import esl, sdnotify
from fsapp.app import App
from fsapp.call import CallHandler
from fsapp.config import peer_ip

CUT_SECONDS = 3.0  # how long cut calls get to settle and journal before they are dropped


class Server:
    def __init__(self, app: App, *, listener: Any = None) -> None:
        self.app = app
        cfg = app.config.server
        self.log = app.log.bind(component="server")
        self.allow = [ipaddress.ip_network(a, strict=False) for a in cfg.allow]
        self._allowed: dict[str, bool] = {}  # peer address -> verdict (FreeSWITCH is a handful of hosts)
        self.calls: set[gevent.Greenlet] = set()
        self.handlers: dict[gevent.Greenlet, CallHandler] = {}
        self.draining = False
        self.stopped = gevent.event.Event()
        # The pool is the hard ceiling (live calls + overflow calls being turned away).
        self.pool = gevent.pool.Pool(cfg.max_calls + max(64, cfg.max_calls // 10))
        if listener is None:
            listener = self._listen(cfg.listen_host, cfg.listen_port, cfg.backlog)
        extra = {"backlog": cfg.backlog} if isinstance(listener, tuple) else {}
        self.stream = StreamServer(listener, self._handle, spawn=self.pool, **extra)
        self.on_reload: Callable[[], None] | None = None

    @staticmethod
    def _listen(host: str, port: int, backlog: int) -> pysocket.socket:
        family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
        sock = pysocket.socket(family, pysocket.SOCK_STREAM)
        sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        return sock

    @property
    def address(self) -> tuple[str, int]:
        return self.stream.address[:2]

    def allowed(self, host: str) -> bool:
        verdict = self._allowed.get(host)
        if verdict is None:
            verdict = self._check(host)
            if len(self._allowed) >= 1024:  # a scan from many hosts cannot grow it without bound
                self._allowed.clear()
            self._allowed[host] = verdict
        return verdict

    def _check(self, host: str) -> bool:
        ip = peer_ip(host)
        return ip is not None and any(ip in net for net in self.allow)

    def _handle(self, sock: Any, address: tuple[Any, ...]) -> None:
        peer = address[0] if address else ""
        if not self.allowed(peer):
            self.log.warning("connection_refused", peer=peer, reason="not in server.allow")
            self.app.metrics.rejected("allow")
            sock.close()
            return
        if self.draining:
            self.log.warning("connection_refused", peer=peer, reason="draining")
            self.app.metrics.rejected("draining")
            sock.close()
            return
        sock.setsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY, 1)
        handler = CallHandler(self.app, sock)
        failed = handler.connect(self.app.config.server.connect_timeout_seconds)
        if failed is not None:  # logged; not a call, never counted toward max_calls
            if isinstance(failed, esl.Timeout):
                self.app.metrics.rejected("idle")
            _close(sock)
            return
        handler.overflow = len(self.calls) >= self.app.config.server.max_calls
        if handler.overflow:
            self.app.metrics.rejected("overflow")
        me = gevent.getcurrent()
        self.calls.add(me)
        self.app.metrics.live(len(self.calls))
        try:
            self.handlers[me] = handler
            handler.run()
        finally:
            self.handlers.pop(me, None)
            self.calls.discard(me)
            self.app.metrics.live(len(self.calls))
            _close(sock)

    def start(self) -> None:
        self.app.start()
        self.stream.start()
        host, port = self.address
        self.log.info("server_started", listen=f"{host}:{port}", max_calls=self.app.config.server.max_calls)

    def drain(self, timeout: float | None = None) -> None:
        """Stop accepting; wait for live calls up to ``timeout``; kill what is left."""
        if self.draining:
            return
        self.draining = True
        self.app.metrics.draining(True)
        timeout = self.app.config.server.drain_seconds if timeout is None else timeout
        sdnotify.notify("STOPPING=1", f"STATUS=draining {len(self.calls)} live calls")
        self.log.info("server_draining", live_calls=len(self.calls), drain_seconds=timeout)
        try:
            self.stream.close()
            gevent.joinall(list(self.calls), timeout=timeout)
            still = [g for g in self.calls if not g.dead]
            if still:
                self.log.warning("server_drain_timeout", cut_calls=len(still))
                self._cut(still)
        finally:
            self.app.stop()
            self.log.info("server_stopped")
            self.stopped.set()

    def _cut(self, calls: list[gevent.Greenlet]) -> None:
        """Cut ``calls``; those still not done after CUT_SECONDS are dropped, and logged."""
        for g in calls:
            handler = self.handlers.get(g)
            if handler is not None:
                handler.cut(g)
            else:
                g.kill(block=False)
        gevent.joinall(calls, timeout=CUT_SECONDS)
        left = [g for g in calls if not g.dead]
        if left:
            self.log.error("server_calls_dropped", calls=len(left))
            gevent.killall(left, block=False)

    def serve_forever(self, starting: StartingSignals | None = None) -> None:
        """Run until SIGTERM/SIGINT (drain, return) — SIGHUP calls ``on_reload``. A signal
        ``starting`` kept while the daemon started is acted on once it has."""
        from fsapp import log as logmod

        def flush_logs() -> None:
            while True:
                gevent.sleep(0.1)
                logmod.flush()

        flusher = gevent.spawn(flush_logs)
        actions: dict[int, Callable[[], Any]] = {signal.SIGTERM: self.drain, signal.SIGINT: self.drain}
        if self.on_reload is not None:
            actions[signal.SIGHUP] = self.on_reload
        for signum, act in actions.items():
            gevent.signal_handler(signum, gevent.spawn, act)
        asked = starting.take() if starting is not None else []
        self.start()
        host, port = self.address
        # Type=notify: systemd reports the unit started only now, with the port bound.
        sdnotify.notify("READY=1", f"STATUS=accepting calls on {host}:{port}", f"MAINPID={os.getpid()}")
        for signum in dict.fromkeys(asked):
            if signum in actions:
                gevent.spawn(actions[signum])
        self.stopped.wait()
        flusher.kill()
        logmod.flush()


class StartingSignals:
    """SIGTERM, SIGINT and SIGHUP that come while the daemon starts, kept for ``serve_forever``.

    The ports are bound and the CDR front started before the loop serves; a signal then must not
    take its default action, which ends the daemon without a drain (or kills it on a reload)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.asked: list[int] = []
        self._watchers = [gevent.signal_handler(s, self.asked.append, s) for s in self.SIGNALS]

    def take(self) -> list[int]:
        """Stop keeping signals; those kept, in the order they came."""
        for watcher in self._watchers:
            watcher.cancel()
        return self.asked


def _close(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass
