"""The CRM interface every kind (local, http, payamgostar) implements.

A CRM answers who a caller is, checks PINs, reports balances and accepts invoices and
payment links. Every failure of a CRM surfaces as one exception type, `CRMError`, so a
module has exactly one thing to catch before it sends the call to its `error`
destination.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

ROLES = ("sales", "support", "other")
# An outbox result that starts so was kept, not sent (the local CRM has no SMS gateway).
RECORDED = "recorded: "

_TEXT_FIELDS = ("name", "type", "mobile")


class CRMError(Exception):
    """The CRM failed: refused, timed out, 5xx, malformed body, circuit open.

    `operation` names the CRM call that failed (empty when not known), `reason` is the
    message without the operation, `status` the HTTP status when the CRM answered one,
    and `retry_after` the seconds the CRM asked us to wait (HTTP 429), if it said.
    The message never carries a PIN, a token or a request body.
    """

    def __init__(
        self,
        reason: str,
        *,
        operation: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{operation}: {reason}" if operation else reason)
        self.reason = reason
        self.operation = operation
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Customer:
    """One customer as the CRM knows it; `responsible` maps a role to an extension."""

    id: str
    number: str
    name: str
    type: str
    mobile: str
    phones: tuple[str, ...] = ()
    responsible: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> Customer:
        """Build a customer from the CRM's JSON object, or raise CRMError on a wrong shape.

        `id` must be a non-empty string and `number` a string; `name`, `type` and
        `mobile` are strings or null (read as ""). `phones` is an optional list of
        strings. `responsible` is an optional object whose values are extensions
        (strings or integers; null or "" means nobody); roles other than `ROLES` are
        ignored. Other keys are ignored.
        """
        if not isinstance(data, dict):
            raise CRMError(f"malformed customer: expected an object, got {_kind(data)}")
        cid = data.get("id")
        if not isinstance(cid, str) or not cid.strip():
            raise CRMError("malformed customer: id must be a non-empty string")
        number = data.get("number")
        if not isinstance(number, str):
            raise CRMError(f"malformed customer: number must be a string, got {_kind(number)}")
        text: dict[str, str] = {}
        for key in _TEXT_FIELDS:
            value = data.get(key)
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise CRMError(f"malformed customer: {key} must be a string, got {_kind(value)}")
            text[key] = value
        phones = data.get("phones")
        if phones is None:
            phones = []
        if not isinstance(phones, list) or not all(isinstance(p, str) for p in phones):
            raise CRMError("malformed customer: phones must be a list of strings")
        responsible = data.get("responsible")
        if responsible is None:
            responsible = {}
        if not isinstance(responsible, dict):
            raise CRMError(f"malformed customer: responsible must be an object, got {_kind(responsible)}")
        extensions: dict[str, str] = {}
        for role in ROLES:
            ext = responsible.get(role)
            if ext is None or ext == "":
                continue
            if isinstance(ext, bool) or not isinstance(ext, (str, int)):
                raise CRMError(f"malformed customer: responsible.{role} must be an extension, got {_kind(ext)}")
            extensions[role] = str(ext)
        return cls(
            id=cid,
            number=number,
            name=text["name"],
            type=text["type"],
            mobile=text["mobile"],
            phones=tuple(phones),
            responsible=extensions,
        )


def _kind(value: object) -> str:
    """The JSON name of a value's type, for error messages that must not echo values."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@runtime_checkable
class CRM(Protocol):
    """What the call flow needs from a CRM. Every method raises only CRMError."""

    def find_by_phone(self, phone: str) -> Customer | None:
        """The customer owning this E.164 phone (+989121234567), or None."""
        ...

    def find_by_number(self, number: str) -> Customer | None:
        """The customer with this customer number, or None."""
        ...

    def verify_pin(self, customer_id: str, pin: str) -> bool:
        """Whether the PIN is the customer's phone PIN."""
        ...

    def balance(self, customer_id: str, invoice_type: str) -> int:
        """The customer's debt in rial for this invoice type; < 0 is credit."""
        ...

    def register(self, phone: str) -> Customer:
        """Create a customer for an unknown caller's E.164 phone."""
        ...

    def create_invoice(self, invoice: dict[str, object], idempotency_key: str) -> str:
        """Record an invoice once per key; returns the CRM's invoice id."""
        ...

    def send_payment_link(self, link: dict[str, object], idempotency_key: str) -> str | None:
        """Have the CRM send a payment link once per key; what it answered, if worth keeping."""
        ...

    def ping(self) -> bool:
        """Whether the CRM is reachable and answering (for /healthz)."""
        ...


class CircuitBreaker:
    """Fails calls at once while a CRM is known to be down.

    Closed: calls pass; `threshold` consecutive failures open it. Open: `before_call`
    raises CRMError("circuit open ...") for `cooldown_seconds`. Then half-open: one trial
    call passes (others still fail fast); its success closes the breaker, its failure
    opens it for another cool-down. A trial that never reports back frees its slot after
    one more cool-down. Pure state, no I/O; `clock` is injectable for tests.
    """

    def __init__(
        self,
        threshold: int = 5,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValueError("crm.breaker_threshold: must be an integer >= 1")
        if isinstance(cooldown_seconds, bool) or not isinstance(cooldown_seconds, (int, float)):
            raise ValueError("crm.breaker_cooldown_seconds: must be a number")
        if cooldown_seconds < 0:
            raise ValueError("crm.breaker_cooldown_seconds: must be >= 0")
        self.threshold = threshold
        self.cooldown_seconds = float(cooldown_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started: float | None = None

    @property
    def state(self) -> str:
        """One of `closed`, `open` or `half-open` (cool-down over, a trial may pass)."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.cooldown_seconds:
                return "open"
            return "half-open"

    def before_call(self, operation: str = "") -> None:
        """Let a call through, or raise CRMError at once while the circuit is open."""
        with self._lock:
            if self._opened_at is None:
                return
            now = self._clock()
            waited = now - self._opened_at
            if waited < self.cooldown_seconds:
                raise CRMError(
                    f"circuit open after {self._failures} consecutive failures, "
                    f"next try in {self.cooldown_seconds - waited:.1f}s",
                    operation=operation,
                )
            trial = self._trial_started
            if trial is not None and now - trial < max(self.cooldown_seconds, 0.001):
                raise CRMError("circuit open, a trial call is under way", operation=operation)
            self._trial_started = now

    def record_success(self) -> None:
        """The call worked: close the circuit and forget past failures."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_started = None

    def record_failure(self) -> None:
        """The call failed: count it, and open (or re-open) the circuit at the threshold."""
        with self._lock:
            self._failures += 1
            self._trial_started = None
            if self._opened_at is not None or self._failures >= self.threshold:
                self._opened_at = self._clock()
