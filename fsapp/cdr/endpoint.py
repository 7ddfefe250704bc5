"""The HTTP listener mod_json_cdr posts to: ``POST /cdr?uuid=<leg uuid>`` on ``[cdr] listen``.

- with ``[cdr] credentials_env`` set, HTTP basic auth must match mod_json_cdr's
  ``cred`` (else 401); without it only loopback peers are served (else 403);
- the body is raw JSON (``encode=false``) or ``cdr=`` + URL-encoded or base64 JSON
  (``encode=true`` / ``base64``), at most ``[cdr] max_body_bytes`` (else 413);
- 200 only once the leg is committed; a body that is not a CDR gets 400, a database
  that cannot take it 503, so mod_json_cdr retries and at last writes the leg to its
  ``err-log-dir`` (for ``fsapp cdr import``). Every refusal is logged with its reason.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import gevent.pool
from gevent.pywsgi import WSGIServer

from fsapp import log as logmod
from fsapp.cdr import legs
from fsapp.cdr.writer import CDRWriter
from fsapp.config import CDRConfig, parse_listen
from fsapp.store import StorageError

StartResponse = Callable[..., Any]
_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


class Refused(Exception):
    """A post answered with ``status`` and ``reason`` (and logged)."""

    def __init__(self, status: str, reason: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


class CDREndpoint:
    """The WSGI application; ``settings()`` gives the current ``[cdr]`` section (a reload applies)."""

    def __init__(self, writer: CDRWriter, settings: Callable[[], CDRConfig]) -> None:
        self.writer = writer
        self.settings = settings
        self.log = logmod.get("fsapp").bind(component="cdr")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        try:
            status, text = self._post(environ)
        except Refused as exc:
            self.log.warning("cdr_refused", status=exc.status[:3], reason=exc.reason, peer=environ.get("REMOTE_ADDR"),
                             uuid=_query_uuid(environ), bytes=environ.get("CONTENT_LENGTH") or "")
            start_response(exc.status, _TEXT + exc.headers)
            return [exc.reason.encode() + b"\n"]
        start_response(status, _TEXT)
        return [text]

    def _post(self, environ: dict[str, Any]) -> tuple[str, bytes]:
        if environ.get("PATH_INFO") != "/cdr":
            raise Refused("404 Not Found", f"no such path {environ.get('PATH_INFO')!r} (mod_json_cdr posts to /cdr)")
        if environ.get("REQUEST_METHOD") != "POST":
            raise Refused("405 Method Not Allowed", "only POST", [("Allow", "POST")])
        cfg = self.settings()
        self._authorise(environ, cfg)
        body = self._body(environ, cfg.max_body_bytes)
        try:
            leg = legs.parse(body, environ.get("CONTENT_TYPE", ""))
        except legs.LegError as exc:
            raise Refused("400 Bad Request", str(exc)) from None
        query = _query_uuid(environ)
        if query and query != leg["uuid"]:
            raise Refused("400 Bad Request", f"?uuid={query} is not the CDR's own uuid {leg['uuid']}")
        try:
            new = self.writer.add(leg, body)
        except StorageError as exc:
            raise Refused("503 Service Unavailable", f"not stored, the database failed: {exc}") from None
        except Exception as exc:  # a fault of ours: logged with the reason, and not answered 2xx
            self.log.exception("cdr_failed", uuid=leg["uuid"])
            raise Refused("500 Internal Server Error", f"not stored: {exc!r}") from None
        self.log.debug("cdr_stored", uuid=leg["uuid"], call_uuid=leg["call_uuid"], replay=not new)
        return "200 OK", b"OK\n" if new else b"OK (already stored)\n"

    @staticmethod
    def _authorise(environ: dict[str, Any], cfg: CDRConfig) -> None:
        if not cfg.credentials:
            if not _loopback(environ.get("REMOTE_ADDR", "")):
                raise Refused("403 Forbidden", "not a loopback peer, and no [cdr] credentials_env is set")
            return
        given = _basic(environ.get("HTTP_AUTHORIZATION", ""))
        if given is None or not hmac.compare_digest(given, cfg.credentials.encode()):
            raise Refused("401 Unauthorized", "wrong or missing credentials (mod_json_cdr's cred)",
                          [("WWW-Authenticate", 'Basic realm="fsapp cdr"')])

    @staticmethod
    def _body(environ: dict[str, Any], limit: int) -> bytes:
        length = environ.get("CONTENT_LENGTH") or ""
        if length and (not length.isdigit() or int(length) > limit):
            raise Refused("413 Content Too Large", f"body of {length} bytes is over [cdr] max_body_bytes ({limit})",
                          [("Connection", "close")])
        body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise Refused("413 Content Too Large", f"body is over [cdr] max_body_bytes ({limit})",
                          [("Connection", "close")])
        if not body:
            raise Refused("400 Bad Request", "empty body")
        return body


def _query_uuid(environ: dict[str, Any]) -> str:
    query = environ.get("QUERY_STRING") or ""
    return parse_qs(query).get("uuid", [""])[0] if query else ""


def _basic(header: str) -> bytes | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def start(listen: str, endpoint: CDREndpoint, *, max_connections: int = 1000) -> WSGIServer:
    """Serve ``endpoint`` on ``listen`` (HOST:PORT) in this gevent loop; raises OSError if it cannot bind."""
    from fsapp.metrics import _ErrorLog

    host, port = parse_listen(listen)
    server = WSGIServer((host, port), endpoint, log=None, error_log=_ErrorLog("cdr"),
                        spawn=gevent.pool.Pool(max_connections))
    server.start()
    endpoint.log.info("cdr_listening", listen=f"{host}:{server.server_port}")
    return server


class Listener:
    """The daemon's CDR listener and its writer, started and stopped together."""

    def __init__(self, app: Any) -> None:
        self.writer = CDRWriter(app.store, lambda: app.config.journal.too_long_seconds)
        self.endpoint = CDREndpoint(self.writer, lambda: app.config.cdr)
        self.writer.start()
        try:
            self.http = start(app.config.cdr.listen, self.endpoint)
        except BaseException:
            self.writer.stop()
            raise

    @property
    def port(self) -> int:
        return int(self.http.server_port)

    def stop(self) -> None:
        self.http.stop(timeout=2)  # posts in flight get their answer
        self.writer.stop()
