"""The `http` CRM kind: the JSON contract of spec section 4 over `requests`.

Every request has connect and read timeouts and one overall deadline; the body is read
in pieces against that deadline and a size limit; redirects are refused. Whatever goes
wrong raises CRMError naming the operation. A circuit breaker fails calls at once while
the CRM is down. Logs carry the operation, status and duration, never the token, a PIN
or a body.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import gevent
import requests
import structlog
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from fsapp.crm import CircuitBreaker, CRMError, Customer

log = structlog.get_logger("fsapp.crm")

OnResult = Callable[[str, float, bool], None]

T = TypeVar("T")

_CHUNK_BYTES = 65536
_BACKSTOP_GRACE_SECONDS = 0.25
_TUNING_KEYS = (
    "timeout_seconds",
    "connect_timeout_seconds",
    "breaker_threshold",
    "breaker_cooldown_seconds",
    "max_body_bytes",
    "pool_size",
)


class _Bearer(AuthBase):
    """Sets `Authorization: Bearer <token>`; as explicit auth it also keeps .netrc out."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self._header
        return r

    def __repr__(self) -> str:
        return "<Bearer ***>"


class HttpCRM:
    """A CRM reached through the JSON API of spec section 4."""

    def __init__(
        self,
        url: str,
        token: str,
        timeout_seconds: float = 3.0,
        connect_timeout_seconds: float = 1.0,
        breaker_threshold: int = 5,
        breaker_cooldown_seconds: float = 30.0,
        max_body_bytes: int = 1_000_000,
        *,
        pool_size: int = 50,
        on_result: OnResult | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ValueError("crm.url: missing")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("crm.url: must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("crm.url: must not have a query or fragment")
        if parts.username or parts.password:
            raise ValueError("crm.url: must not carry credentials; use crm.token_env")
        if not isinstance(token, str) or not token.strip():
            raise ValueError("crm.token_env: the token is empty")
        if not (token.isascii() and token.isprintable()):
            raise ValueError("crm.token_env: the token has characters a header cannot carry")
        self.timeout_seconds = _positive("crm.timeout_seconds", timeout_seconds)
        self.connect_timeout_seconds = _positive("crm.connect_timeout_seconds", connect_timeout_seconds)
        self.max_body_bytes = _positive_int("crm.max_body_bytes", max_body_bytes)
        pool_size = _positive_int("crm.pool_size", pool_size)
        self.url = url.strip().rstrip("/")
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_seconds)
        self.on_result = on_result
        self._session = requests.Session()
        self._session.auth = _Bearer(token)
        self._session.headers.update({"Accept": "application/json", "User-Agent": "fsapp"})
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    @classmethod
    def from_config(
        cls,
        section: Mapping[str, object] | object,
        *,
        environ: Mapping[str, str] | None = None,
        on_result: OnResult | None = None,
    ) -> HttpCRM:
        """Build from the `[crm]` table: `url`, `token_env` and optional tuning keys.

        `section` is the table as a mapping, or the config's CRM dataclass (whose `extra`
        mapping may hold `max_body_bytes` and `pool_size`). The token is read from the
        environment variable that `token_env` names. Keys this kind does not use (`kind`,
        `region`, ...) are left to the config reader. Raises ValueError naming the key.
        """
        values = _section_values(section)
        env = os.environ if environ is None else environ
        url = values.get("url")
        if url is None or url == "":
            raise ValueError("crm.url: missing")
        if not isinstance(url, str):
            raise ValueError("crm.url: must be a string")
        token_env = values.get("token_env")
        if token_env is None or token_env == "":
            raise ValueError("crm.token_env: missing (name of the variable holding the token)")
        if not isinstance(token_env, str):
            raise ValueError("crm.token_env: must be a string")
        token = env.get(token_env, "")
        if not token.strip():
            raise ValueError(f"crm.token_env: environment variable {token_env} is not set or empty")
        tuning: dict[str, Any] = {key: values[key] for key in _TUNING_KEYS if values.get(key) is not None}
        return cls(url, token, on_result=on_result, **tuning)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    # -- the contract ---------------------------------------------------------------

    def find_by_phone(self, phone: str) -> Customer | None:
        """GET /customers?phone=E164 -> customer, or None on 404."""
        return self._lookup("find_by_phone", {"phone": phone})

    def find_by_number(self, number: str) -> Customer | None:
        """GET /customers?number=N -> customer, or None on 404."""
        return self._lookup("find_by_number", {"number": number})

    def verify_pin(self, customer_id: str, pin: str) -> bool:
        """POST /customers/{id}/verify-pin {"pin"} -> {"ok": bool}."""
        op = "verify_pin"
        path = f"/customers/{_segment(op, customer_id)}/verify-pin"
        data = _encode(op, {"pin": pin})

        def run(deadline: float) -> bool:
            return _field(op, self._request(op, "POST", path, deadline, data=data), "ok", bool)

        return self._call(op, run)

    def balance(self, customer_id: str, invoice_type: str) -> int:
        """GET /customers/{id}/balance?invoice_type=T -> {"debt": int} in rial."""
        op = "balance"
        path = f"/customers/{_segment(op, customer_id)}/balance"
        params = {"invoice_type": invoice_type}

        def run(deadline: float) -> int:
            return _field(op, self._request(op, "GET", path, deadline, params=params), "debt", int)

        return self._call(op, run)

    def register(self, phone: str) -> Customer:
        """POST /customers {"phone"} -> customer; the Idempotency-Key is `register-<phone>`."""
        op = "register"
        data = _encode(op, {"phone": phone})
        headers = _idempotency(op, f"register-{phone}")

        def run(deadline: float) -> Customer:
            return _customer(op, self._request(op, "POST", "/customers", deadline, data=data, headers=headers))

        return self._call(op, run)

    def create_invoice(self, invoice: dict[str, object], idempotency_key: str) -> str:
        """POST /invoices -> {"id"}; returns the id as a string."""
        op = "create_invoice"
        data = _encode(op, invoice)
        headers = _idempotency(op, idempotency_key)

        def run(deadline: float) -> str:
            body = self._request(op, "POST", "/invoices", deadline, data=data, headers=headers)
            invoice_id = _field(op, body, "id", (str, int))
            if invoice_id == "":
                raise CRMError("malformed response: 'id' is empty", operation=op)
            return str(invoice_id)

        return self._call(op, run)

    def send_payment_link(self, link: dict[str, object], idempotency_key: str) -> None:
        """POST /payment-links -> {"sent": true}; "sent": false is a failure."""
        op = "send_payment_link"
        data = _encode(op, link)
        headers = _idempotency(op, idempotency_key)

        def run(deadline: float) -> None:
            body = self._request(op, "POST", "/payment-links", deadline, data=data, headers=headers)
            if not _field(op, body, "sent", bool):
                raise CRMError("the CRM did not send the payment link", operation=op)

        self._call(op, run)

    def ping(self) -> bool:
        """GET the base URL: True when the CRM answers below 500 and accepts the token."""
        op = "ping"
        try:
            self._call(op, lambda deadline: self._request(op, "GET", "/", deadline, probe=True))
        except CRMError:
            return False
        return True

    # -- machinery ------------------------------------------------------------------

    def _lookup(self, op: str, params: dict[str, str]) -> Customer | None:
        def run(deadline: float) -> Customer | None:
            body = self._request(op, "GET", "/customers", deadline, params=params, missing_ok=True)
            return None if body is None else _customer(op, body)

        return self._call(op, run)

    def _call(self, op: str, run: Callable[[float], T]) -> T:
        """Run one operation through the breaker, with failure logging and metrics."""
        started = time.monotonic()
        ok = False
        try:
            self.breaker.before_call(op)
            try:
                result = run(started + self.timeout_seconds)
            except CRMError as exc:
                if _crm_unwell(exc):
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()
                raise
            except Exception as exc:
                self.breaker.record_failure()
                raise CRMError(f"internal error: {type(exc).__name__}", operation=op) from exc
            self.breaker.record_success()
            ok = True
            return result
        except CRMError as exc:
            log.warning("crm_failed", operation=op, reason=exc.reason, status=exc.status)
            raise
        finally:
            self._report(op, time.monotonic() - started, ok)

    def _report(self, op: str, seconds: float, ok: bool) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(op, seconds, ok)
        except Exception as exc:
            log.warning("crm_on_result_failed", operation=op, error=type(exc).__name__)

    def _request(
        self,
        op: str,
        method: str,
        path: str,
        deadline: float,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        missing_ok: bool = False,
        probe: bool = False,
    ) -> Any:
        """One exchange: the parsed JSON body; None for a 404 when `missing_ok`, or a probe."""
        status, body = self._send_raw(op, method, path, deadline, params=params, data=data, headers=headers)
        if probe:
            if status >= 500 or status in (401, 403, 408):
                raise CRMError(f"HTTP {status}", operation=op, status=status)
            return None
        if 300 <= status < 400:
            raise CRMError(f"unexpected redirect (HTTP {status})", operation=op, status=status)
        if status == 404 and missing_ok:
            return None
        if not 200 <= status < 300:
            raise CRMError(f"HTTP {status}", operation=op, status=status)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise CRMError("malformed JSON in response", operation=op) from None

    def _send_raw(
        self,
        op: str,
        method: str,
        path: str,
        deadline: float,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        label: str = "",
    ) -> tuple[int, bytes]:
        """One exchange under the deadline, logged: (status, raw body). 429 is a CRMError here."""
        started = time.monotonic()
        # Under gevent's monkey-patching this bounds the whole exchange, headers included;
        # without it, the timeouts and the piecewise body read in _exchange still apply.
        backstop = gevent.Timeout(max(deadline - started, 0.0) + _BACKSTOP_GRACE_SECONDS)
        backstop.start()
        try:
            status, retry_after, body = self._exchange(op, method, path, deadline, params, data, headers)
        except gevent.Timeout as exc:
            if exc is not backstop:
                raise
            raise CRMError(f"no complete answer within {self.timeout_seconds:g}s", operation=op) from None
        finally:
            backstop.close()
        extra = {"call": label} if label else {}
        log.info("crm_request", operation=op, status=status, duration_ms=round((time.monotonic() - started) * 1000, 1),
                 **extra)
        if status == 429:
            hint = f", retry after {retry_after:g}s" if retry_after is not None else ""
            prefix = f"{label}: " if label else ""
            raise CRMError(f"{prefix}rate limited (HTTP 429{hint})", operation=op, status=status,
                           retry_after=retry_after)
        return status, body

    def _exchange(
        self,
        op: str,
        method: str,
        path: str,
        deadline: float,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, float | None, bytes]:
        """Send the request; return the status, Retry-After seconds and the 2xx body."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CRMError("deadline passed before the request", operation=op)
        connect_timeout = min(self.connect_timeout_seconds, remaining)
        if data is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            response = self._session.request(
                method,
                self.url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=(connect_timeout, remaining),
                allow_redirects=False,
                stream=True,
            )
        except requests.exceptions.ConnectTimeout:
            raise CRMError(f"connect timed out after {connect_timeout:g}s", operation=op) from None
        except requests.exceptions.ReadTimeout:
            raise CRMError(f"no answer within {self.timeout_seconds:g}s", operation=op) from None
        except requests.exceptions.ConnectionError as exc:
            raise CRMError(f"connection failed: {_root_cause(exc)}", operation=op) from None
        except (requests.exceptions.RequestException, ValueError, OSError) as exc:
            raise CRMError(f"request failed: {type(exc).__name__}", operation=op) from None
        with response:
            status = response.status_code
            retry_after = _retry_after(response.headers.get("Retry-After"))
            body = self._read_body(op, response, deadline) if 200 <= status < 300 else b""
            return status, retry_after, body

    def _read_body(self, op: str, response: requests.Response, deadline: float) -> bytes:
        """The body, read piece by piece so a slow or huge answer cannot hold the call."""
        too_large = f"response larger than {self.max_body_bytes} bytes"
        too_slow = f"response body not complete within {self.timeout_seconds:g}s"
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise CRMError(too_large, operation=op)
        raw = response.raw
        body = bytearray()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CRMError(too_slow, operation=op)
                _shorten_socket_timeout(raw, remaining)
                chunk = raw.read1(_CHUNK_BYTES, decode_content=True)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > self.max_body_bytes:
                    raise CRMError(too_large, operation=op)
        except CRMError:
            raise
        except (TimeoutError, urllib3.exceptions.TimeoutError):
            raise CRMError(too_slow, operation=op) from None
        except Exception as exc:
            raise CRMError(f"reading the response failed: {type(exc).__name__}", operation=op) from None


def _section_values(section: object) -> Mapping[str, object]:
    """The `[crm]` settings as one mapping, from a mapping or a config dataclass."""
    if isinstance(section, Mapping):
        return section
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        values: dict[str, object] = dict(getattr(section, "extra", None) or {})
        values.update((f.name, getattr(section, f.name)) for f in dataclasses.fields(section))
        return values
    raise ValueError(f"crm: settings must be a mapping or a dataclass, not {type(section).__name__}")


def _crm_unwell(exc: CRMError) -> bool:
    """Whether a failure counts toward opening the circuit.

    A prompt 3xx/4xx answer (bad request, wrong token, misrouted URL) shows the CRM is
    up, so it does not; timeouts, transport errors, 5xx, 408, 429 and unreadable or
    malformed bodies do.
    """
    status = exc.status
    return status is None or not 300 <= status < 500 or status in (408, 429)


def _customer(op: str, body: object) -> Customer:
    try:
        return Customer.from_json(body)
    except CRMError as exc:
        raise CRMError(exc.reason, operation=op) from None


def _field(op: str, body: object, key: str, kind: type[T] | tuple[type, ...]) -> T:
    """`body[key]`, checked to be of `kind` (a boolean never passes for an integer)."""
    if not isinstance(body, dict) or key not in body:
        raise CRMError(f"malformed response: expected an object with {key!r}", operation=op)
    value = body[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise CRMError(f"malformed response: {key!r} must be {names}", operation=op)
    return value  # type: ignore[return-value]


def _segment(op: str, value: str) -> str:
    """A customer id as one URL path segment (every reserved character escaped)."""
    if not isinstance(value, str) or not value:
        raise CRMError("empty customer id", operation=op)
    return quote(value, safe="")


def _encode(op: str, body: object) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise CRMError(f"request is not JSON: {type(exc).__name__}", operation=op) from None


def _idempotency(op: str, key: str) -> dict[str, str]:
    if not isinstance(key, str) or not key.strip():
        raise CRMError("empty Idempotency-Key", operation=op)
    if not (key.isascii() and key.isprintable()):
        raise CRMError("Idempotency-Key has characters a header cannot carry", operation=op)
    return {"Idempotency-Key": key}


def _positive(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: must be a positive number")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key}: must be a positive number")
    return float(value)


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: must be a positive integer")
    return value


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _root_cause(exc: BaseException) -> str:
    """A short reason for a transport failure, from the innermost exception."""
    cause: BaseException = exc
    for _ in range(10):
        inner = getattr(cause, "reason", None)
        if not isinstance(inner, BaseException):
            inner = cause.__cause__ or cause.__context__
        if inner is None and cause.args and isinstance(cause.args[0], BaseException):
            inner = cause.args[0]
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return type(cause).__name__


def _shorten_socket_timeout(raw: object, remaining: float) -> None:
    """Make the next receive give up when the overall deadline does."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(remaining, 0.001))
        except OSError:
            pass
