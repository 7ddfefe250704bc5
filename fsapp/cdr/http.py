"""A small HTTP/1.1 server for one kind of request: mod_json_cdr's POST of a leg.

gevent's pywsgi costs about 300 µs of CPU per request (the WSGI environ, its input
wrapper, header formatting), more than storing the leg; this reads the request line,
the headers and a ``Content-Length`` body straight off the socket (about 100 µs) and
hands them to a handler. What mod_json_cdr (curl) sends is covered: ``Content-Length``
bodies, ``Expect: 100-continue`` (answered only once the headers pass: a body over the
limit is refused before it is sent), keep-alive or not. A chunked body is refused
with 411; a request whose head is over 16 KiB with 431; an idle or stalled
connection is closed after ``idle_seconds``.

mod_json_cdr makes a new curl handle, so a new connection, for every leg: waiting
for the client to close each one (another wake-up, a timer, a read of nothing)
cost as much CPU as the rest of the HTTP. So a connection stays open only while its
client has already sent the next request (pipelined): otherwise the answer says
``Connection: close`` and the server closes at once, as HTTP/1.1 lets it.
"""

from __future__ import annotations

import select
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent.pool
from gevent.monkey import get_original
from gevent.server import StreamServer

_poll = get_original("select", "poll")

MAX_HEAD = 16 * 1024
LINGER_SECONDS, LINGER_BYTES = 2.0, 16 << 20
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    peer: str
    body: bytes = b""


@dataclass
class Response:
    status: int
    text: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, keep_alive: bool) -> bytes:
        body = self.text.encode()
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, '')}", "Content-Type: text/plain; charset=utf-8",
                 f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in self.headers)]
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Handler(Protocol):
    """What the server asks of the application: ``check`` the head (before the body is read), then ``handle``."""

    def check(self, request: Request, length: int) -> Response | None: ...

    def handle(self, request: Request) -> Response: ...


class _Refuse(Exception):
    """Answer ``response`` without handling; ``close`` when the connection cannot go on."""

    def __init__(self, response: Response, close: bool = True) -> None:
        super().__init__(response.text)
        self.response = response
        self.close = close


def listener(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening socket on ``host:port``; raises OSError if it cannot bind.

    Posts beyond what is being served wait in its queue (capped by net.core.somaxconn), not refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def serve(host: str, port: int, handler: Handler, **kw: Any) -> StreamServer:
    """Start serving ``handler`` on ``host:port`` in this gevent loop (``.server_port``, ``.stop()``)."""
    return serve_on(listener(host, port), handler, **kw)


def serve_on(sock: socket.socket, handler: Handler, *, max_connections: int = 1000,
             idle_seconds: float = 30.0) -> StreamServer:
    """Start serving ``handler`` on the listening socket ``sock`` in this gevent loop."""

    def connection(sock: Any, address: tuple[Any, ...]) -> None:
        sock.settimeout(idle_seconds)
        try:
            _Connection(sock, str(address[0]) if address else "", handler).run()
        except OSError:  # the peer went away, or stalled past idle_seconds
            pass
        finally:
            sock.close()

    server = StreamServer(sock, connection, spawn=gevent.pool.Pool(max_connections))  # beyond it: the queue
    server.start()
    return server


class _Connection:
    def __init__(self, sock: Any, peer: str, handler: Handler) -> None:
        self.sock = sock
        self.peer = peer
        self.handler = handler
        self.buffer = b""

    def run(self) -> None:
        while True:
            try:
                request, keep_alive = self._one()
            except _Refuse as exc:
                self.sock.sendall(exc.response.encode(keep_alive=not exc.close))
                if exc.close:
                    self._linger()
                    return
                continue
            if request is None:
                return
            response = self.handler.handle(request)
            keep_alive = keep_alive and self._more()
            self.sock.sendall(response.encode(keep_alive))
            if not keep_alive:
                return

    def _more(self) -> bool:
        """The client has already sent (some of) another request."""
        if self.buffer:
            return True
        try:
            poller = _poll()  # the OS's own, never waits: a gevent wait would cost what closing saves
            poller.register(self.sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return False

    def _one(self) -> tuple[Request | None, bool]:
        head = self._head()
        if head is None:
            return None, False
        request, version = _parse_head(head, self.peer)
        h = request.headers
        connection = h.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        if "chunked" in h.get("transfer-encoding", "").lower():
            raise _Refuse(Response(411, "send the body with a Content-Length, not chunked\n"))
        length_text = h.get("content-length", "0").strip()
        if not length_text.isdigit():
            raise _Refuse(Response(400, f"bad Content-Length {length_text!r}\n"))
        length = int(length_text)
        refusal = self.handler.check(request, length)
        if refusal is not None:
            whole = keep_alive and length <= len(self.buffer)  # the body is in: skip it, the connection goes on
            self.buffer = self.buffer[length:] if whole else b""
            raise _Refuse(refusal, close=not whole)
        if h.get("expect", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.body = self._read(length)
        return request, keep_alive

    def _linger(self) -> None:
        """Closed with a body unread: let the peer finish sending it and read the answer (no reset)."""
        self.sock.shutdown(socket.SHUT_WR)
        self.sock.settimeout(LINGER_SECONDS)
        drained = 0
        while drained < LINGER_BYTES:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            drained += len(chunk)

    def _head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise _Refuse(Response(431, f"request head over {MAX_HEAD} bytes\n"))
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def _read(self, length: int) -> bytes:
        parts = [self.buffer[:length]]
        have = len(parts[0])
        self.buffer = self.buffer[length:]
        while have < length:
            chunk = self.sock.recv(min(65536, length - have))
            if not chunk:
                raise OSError("the peer closed the connection mid-body")
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)


def _parse_head(head: bytes, peer: str) -> tuple[Request, str]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refuse(Response(400, f"not an HTTP/1.x request line: {lines[0][:100]!r}\n"))
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _Refuse(Response(400, f"not a header line: {line[:100]!r}\n"))
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, peer), version

