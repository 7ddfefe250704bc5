"""Legs into the store, each post answered only once its leg is committed.

Posts arrive together (FreeSWITCH posts from each channel's own thread as it ends):
a post queues its leg and waits; one writer greenlet commits whatever queued while
the previous batch was committing, as one transaction (``Store.cdr_add``), then
wakes each post with its own outcome. A quiet daemon commits a lone leg at once; a
busy one commits many per transaction, as the store's group commit does for calls.

Gathering (``gather_seconds``, the store's group commit window): a leg committed alone
costs two and a half times a leg in a batch of ten (its call's forty index pages are
written for it alone, and its call's row twice when the B leg and the A leg each commit
on their own). At a middling rate the writer keeps up leg by leg and never batches, so
it did the most work a leg just where it could have done the least. So a leg that
finds the writer idle, when the leg before it came less than the window ago, waits out
the window for the legs behind it (FreeSWITCH posts a call's legs together) and they
commit as one; a leg after a quiet spell still commits at once.

With ``after`` (``fsapp.cdr.aftercall.AfterCall``), a call the batch completes that
only its CDR knows gets the after-call work: its queue entries in the same
transaction, the rest once that has committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gevent
import gevent.event

from fsapp import log as logmod
from fsapp.cdr import classify
from fsapp.store import Store, now_iso

MAX_BATCH = 200
STOP_SECONDS = 10.0  # how long stop() waits for the batch in flight


class After(Protocol):
    def queue(self, rows: list[dict[str, Any]]) -> None: ...

    def done(self, row: dict[str, Any]) -> None: ...


Done = Callable[[bool, BaseException | None], None]  # (new, None) once committed, (False, error) if not


class _Pending:
    __slots__ = ("leg", "body", "done")

    def __init__(self, leg: dict[str, Any], body: bytes, done: Done) -> None:
        self.leg = leg
        self.body = body
        self.done = done


class CDRWriter:
    def __init__(self, store: Store, too_long_seconds: Callable[[], int], after: After | None = None,
                 gather_seconds: Callable[[], float] = lambda: 0.0) -> None:
        self.store = store
        self.too_long_seconds = too_long_seconds
        self.after = after
        self.gather_seconds = gather_seconds
        self._last_leg = float("-inf")  # when the last leg came (time.monotonic)
        self._gather = 0.0  # how long the writer waits for more before this batch (see above)
        self._queue: list[_Pending] = []
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    def add(self, leg: dict[str, Any], body: bytes) -> bool:
        """Keep one leg; True if new, False for a replay. Raises StorageError when not committed."""
        result = gevent.event.AsyncResult()
        self.submit(leg, body, lambda new, exc: result.set(new) if exc is None else result.set_exception(exc))
        return bool(result.get())

    def submit(self, leg: dict[str, Any], body: bytes, done: Done) -> None:
        """Queue one leg; ``done`` is called from the writer (it must not block) once it is committed or
        has failed. Before ``start()``, the leg is committed at once and ``done`` called before this returns."""
        if self._greenlet is None:
            try:
                new = self._commit([(leg, body)])[0]
            except Exception as exc:  # noqa: BLE001 - the caller gets the outcome
                done(False, exc)
                return
            done(new, None)
            return
        now, window = time.monotonic(), self.gather_seconds()
        if not self._queue:  # the first of a batch: gather if legs are coming close together
            self._gather = window if now - self._last_leg < window else 0.0
        self._last_leg = now
        self._queue.append(_Pending(leg, body, done))
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Commit what is queued, then stop. The batch in flight ends first and its posts get their
        answers; killed in its transaction, they got none (up to ``STOP_SECONDS``, then it is)."""
        if self._greenlet is None:
            return
        self._stopping = True
        self._wake.set()  # left set: the writer drains the queue and returns
        self._greenlet.join(timeout=STOP_SECONDS)
        self._greenlet.kill()  # still stuck in the database past that
        self._greenlet = None
        self._drain()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._gather and not self._stopping:
                gevent.sleep(self._gather)  # the legs behind this one join its transaction
            if not self._stopping:
                self._wake.clear()
            self._drain()
            if self._stopping:
                return

    def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            self._write(batch)

    def _compute(self, legs: list[dict[str, Any]]) -> dict[str, Any]:
        return classify.call_row(legs, too_long_seconds=self.too_long_seconds())

    def _commit(self, entries: Sequence[tuple[dict[str, Any], bytes]]) -> list[bool]:
        """One transaction of legs, then the after-call work of the calls it completed."""
        after = self.after
        if after is None:
            return self.store.cdr_add(entries, self._compute, now_iso())
        completed: list[dict[str, Any]] = []

        def queue(rows: list[dict[str, Any]]) -> None:
            after.queue(rows)
            completed.extend(rows)

        added = self.store.cdr_add(entries, self._compute, now_iso(), queue)
        for row in completed:
            try:
                after.done(row)
            except Exception as exc:  # noqa: BLE001 - the legs are committed: their posts are answered 200
                logmod.get("fsapp").bind(component="cdr").error("cdr_after_call_failed", uuid=row["uuid"],
                                                                reason=repr(exc))
        return added

    def _write(self, batch: list[_Pending]) -> None:
        try:
            added = self._commit([(p.leg, p.body) for p in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting post gets the outcome
            if len(batch) == 1:
                batch[0].done(False, exc)
                return
            self._write_each(batch)  # one leg the database refuses must not sink the others
            return
        for pending, new in zip(batch, added, strict=True):
            pending.done(new, None)

    def _write_each(self, batch: list[_Pending]) -> None:
        for i, pending in enumerate(batch):
            try:
                new = self._commit([(pending.leg, pending.body)])[0]
            except Exception as exc:  # noqa: BLE001 - the database is down: the rest fail at once, not one by one
                for rest in batch[i:]:
                    rest.done(False, exc)
                return
            pending.done(new, None)
