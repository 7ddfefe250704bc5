"""Delivers queued CRM writes (invoices, payment links, call-log records).

Rows are written to the store in the same transaction as what caused them, then
delivered by this worker with retries and exponential back-off. Each carries an
idempotency key the CRM sees on every attempt, so a retry after a lost answer is
not a second invoice. Several daemons may run workers on one database: a row is
leased to one worker at a time.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.event

from fsapp.crm import RECORDED, CRMError
from fsapp.store import StorageError


def state(row: dict[str, Any]) -> str:
    """``pending``; ``delivered`` (the CRM took it); ``recorded`` (kept, never sent anywhere)."""
    if not row["delivered_at"]:
        return "pending"
    return "recorded" if str(row["result"]).startswith(RECORDED) else "delivered"


class OutboxWorker:
    def __init__(self, app: Any, *, batch: int = 20, mark_within: float = 0.5) -> None:
        self.app = app
        self.batch = batch
        # Deliveries are marked in the store together, one transaction for a batch, but none
        # waits longer than this: a crash before the mark means a retry the CRM's
        # idempotency key absorbs, and the mark is what keeps the window short.
        self.mark_within = mark_within
        self.wake = gevent.event.Event()
        self.greenlet: gevent.Greenlet | None = None
        self.running = False
        self.log = app.log.bind(component="outbox")
        self._stats_at = 0.0

    def start(self) -> None:
        self.running = True
        self.greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        self.running = False
        self.wake.set()
        if self.greenlet is not None:
            self.greenlet.join(timeout=5)
            self.greenlet.kill()

    def poke(self) -> None:
        """Something was queued: deliver now rather than at the next poll."""
        self.wake.set()

    def _loop(self) -> None:
        while self.running:
            gevent.sleep(0.05)  # let writes from calls ending together go out in one batch
            try:
                done = self.run_once()
            except StorageError as exc:
                self.log.error("outbox_storage_failed", reason=str(exc))
                done = 0
            except Exception:  # noqa: BLE001 - the worker must outlive any one bad row
                self.log.exception("outbox_crashed")
                done = 0
            if not done:
                self.wake.wait(timeout=self.app.config.billing.outbox_retry_seconds)
                self.wake.clear()

    def run_once(self, now: float | None = None) -> int:
        """Deliver what is due; return how many rows were tried."""
        store = self.app.store
        now = time.time() if now is None else now
        rows = store.outbox_claim(self.app.daemon_id, now, self.batch)
        delivered: list[tuple[dict[str, Any], str, float]] = []
        for row in rows:
            if delivered and time.time() - delivered[0][2] >= self.mark_within:
                self._mark(delivered)
                delivered = []
            result = self.deliver(row)
            if result is not None:
                delivered.append((row, result, time.time()))
        if delivered:
            self._mark(delivered)
        if now - self._stats_at >= 5 or not rows:
            self._stats_at = now
            try:
                depth, age = store.outbox_stats(time.time())
                self.app.metrics.outbox(depth, age)
            except StorageError:
                pass
        return len(rows)

    def _mark(self, delivered: list[tuple[dict[str, Any], str, float]]) -> None:
        """Record deliveries, one transaction for several rows.

        If the store fails here (StorageError, to the loop), the rows stay leased and are
        delivered again when the lease ends, under the same idempotency keys.
        """
        marks = [(row["id"], result, at) for row, result, at in delivered]
        self.app.store.outbox_delivered_many(self.app.daemon_id, marks)
        for row, result, _at in delivered:
            if result.startswith(RECORDED):
                self.log.info("outbox_recorded", kind=row["kind"], key=row["idempotency_key"],
                              reason=result[len(RECORDED):])
                continue
            self.log.info("outbox_delivered", kind=row["kind"], key=row["idempotency_key"],
                          attempts=row["attempts"] + 1)

    def deliver(self, row: dict[str, Any]) -> str | None:
        """Hand one row to the CRM; its result, or None if that failed (then retried later)."""
        store = self.app.store
        crm = self.app.crm
        key, kind, payload = row["idempotency_key"], row["kind"], row["payload"]
        try:
            if kind == "invoice":
                result = crm.create_invoice(payload, key)
            elif kind == "payment_link":
                result = crm.send_payment_link(payload, key) or "sent"
            elif kind == "call_log":
                push = getattr(crm, "push_call", None)
                result = push(payload, key) if push is not None else f"{RECORDED}the CRM takes no call log"
            else:
                raise CRMError(f"unknown outbox kind {kind!r}")
        except CRMError as exc:
            billing = self.app.config.billing
            delay = min(billing.outbox_max_retry_seconds, billing.outbox_retry_seconds * 2 ** min(row["attempts"], 16))
            if exc.retry_after:
                delay = max(delay, float(exc.retry_after))
            store.outbox_failed(row["id"], self.app.daemon_id, str(exc), time.time() + delay)
            self.log.warning("outbox_retry", kind=kind, key=key, attempts=row["attempts"] + 1, retry_in=round(delay, 1),
                             reason=str(exc))
            return None
        return str(result or "")
