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
import functools
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from fsapp import log as logmod
from fsapp.cdr import legs
from fsapp.cdr.http import Request, Response
from fsapp.config import CDRConfig, peer_ip

Keep = Callable[[dict[str, Any], bytes], Response]  # a parsed leg and its body -> the post's answer


class CDREndpoint:
    """``POST /cdr``; ``settings()`` gives the current ``[cdr]`` section (a reload applies), ``keep``
    stores a leg (``Keeper`` in the daemon, the front process's channel to it in that process)."""

    def __init__(self, settings: Callable[[], CDRConfig], keep: Keep, log: Any = None) -> None:
        self.settings = settings
        self.keep = keep
        self.log = log if log is not None else logmod.get("fsapp").bind(component="cdr")

    def check(self, request: Request, length: int) -> Response | None:
        """Everything that can refuse a post before its body is read: path, method, peer, credentials, size."""
        refusal = self._check(request, length)
        if refusal is not None:
            self._refused(request, refusal, length)
        return refusal

    def _check(self, request: Request, length: int) -> Response | None:
        if request.path != "/cdr":
            return Response(404, f"no such path {request.path!r} (mod_json_cdr posts to /cdr)\n")
        if request.method != "POST":
            return Response(405, "only POST\n", [("Allow", "POST")])
        cfg = self.settings()
        if not cfg.credentials:
            if not _loopback(request.peer):
                return Response(403, "not a loopback peer, and no [cdr] credentials_env is set\n")
        else:
            given = _basic(request.headers.get("authorization", ""))
            if given is None or not hmac.compare_digest(given, cfg.credentials.encode()):
                return Response(401, "wrong or missing credentials (mod_json_cdr's cred)\n",
                                [("WWW-Authenticate", 'Basic realm="fsapp cdr"')])
        if length > cfg.max_body_bytes:
            return Response(413, f"body of {length} bytes is over [cdr] max_body_bytes ({cfg.max_body_bytes})\n")
        if not length:
            return Response(400, "empty body\n")
        return None

    def handle(self, request: Request) -> Response:
        """Store the leg; 200 only once it is committed."""
        try:
            leg = legs.parse(request.body, request.headers.get("content-type", ""))
        except legs.LegError as exc:
            return self._refused(request, Response(400, f"{exc}\n"))
        query = _query_uuid(request.query)
        if query and query != leg["uuid"]:
            return self._refused(request, Response(400, f"?uuid={query} is not the CDR's own uuid {leg['uuid']}\n"))
        response = self.keep(leg, request.body)
        return response if response.status == 200 else self._refused(request, response)

    def _refused(self, request: Request, response: Response, length: int | None = None) -> Response:
        self.log.warning("cdr_refused", status=str(response.status), reason=response.text.strip(), peer=request.peer,
                         uuid=_query_uuid(request.query), bytes=len(request.body) if length is None else length)
        return response


def _query_uuid(query: str) -> str:
    if query.startswith("uuid=") and "&" not in query and "%" not in query and "+" not in query:
        return query[5:]  # mod_json_cdr's own ?uuid=<uuid>, without the general parser
    return parse_qs(query).get("uuid", [""])[0] if query else ""


def _basic(header: str) -> bytes | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


@functools.lru_cache(maxsize=256)
def _loopback(host: str) -> bool:
    ip = peer_ip(host)
    return ip is not None and ip.is_loopback
