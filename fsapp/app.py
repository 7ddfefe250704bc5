"""What every call of one daemon shares: config, store, CRM, metrics, logger."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import gevent

from fsapp import ledger
from fsapp import log as logmod
from fsapp.config import Config
from fsapp.hooks import Metrics, NullMetrics
from fsapp.notify import notify_reviewer
from fsapp.outbox import OutboxWorker
from fsapp.store import StorageError, Store, open_store

__all__ = ["App", "NullMetrics", "call_log_key", "make_crm"]

STATISTICS_EVERY_SECONDS = 24 * 3600  # SQLite's planner statistics of the journal (App._sample_statistics)


class App:
    def __init__(self, config: Config, store: Store | None = None, crm: Any = None,
                 metrics: Metrics | None = None) -> None:
        self.config = config
        self.log = logmod.get("fsapp")
        self.store = store or open_store(config.storage_url, pool_size=config.storage_pool_size)
        self.metrics: Metrics = metrics or NullMetrics()
        self.daemon_id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}"
        self.crm = crm if crm is not None else make_crm(config, self.store, self.metrics)
        self._backlog: list[dict[str, Any]] = []
        self._settles: list[tuple[dict[str, Any], int]] = []  # charges the database refused
        self.outbox = OutboxWorker(self)
        self._maintenance: gevent.Greenlet | None = None
        self._storage_problem = ""
        self._next_statistics = 0.0  # monotonic time of the next planner statistics (SQLite)
        self._live: set[str] = set()  # the uuids of this daemon's live sessions

    def claim_call(self, uuid: str) -> bool:
        """Take ``uuid`` for a session; False if a live session of this daemon has it already."""
        if uuid in self._live:
            return False
        self._live.add(uuid)
        return True

    def release_call(self, uuid: str) -> None:
        self._live.discard(uuid)

    def start(self) -> None:
        """Background work: settle meters dead daemons left, deliver the outbox."""
        self._reconcile()
        self._group_commit()
        try:
            self.store.checkpoint_in_background()
        except StorageError as exc:  # SQLite checkpoints at its commits, as without it
            self.log.error("checkpoints_not_started", reason=str(exc))
        self.outbox.start()
        self._maintenance = gevent.spawn(self._maintain)

    def stop(self) -> None:
        self.outbox.stop()
        if self._maintenance is not None:
            self._maintenance.kill()
        self.store.flush()  # a group of writes still in its window commits now

    def _reconcile(self) -> None:
        try:
            busy = frozenset(self._live | {meter["call_uuid"] for meter, _talk in self._settles})
            made = ledger.reconcile(self.store, heartbeat_seconds=self.config.billing.meter_heartbeat_seconds,
                                    me=self.daemon_id, busy=busy, log=self.log)
            closed = ledger.close_dead_calls(self.store, me=self.daemon_id,
                                             max_age_seconds=self.config.server.call_timeout_seconds + 3600)
            if closed:
                self.log.warning("calls_closed_after_crash", calls=closed)
        except StorageError as exc:
            self.log.error("reconcile_failed", reason=str(exc))
            return
        if made:
            self.outbox.poke()

    def _maintain(self) -> None:
        while True:
            gevent.sleep(self.config.billing.meter_heartbeat_seconds)
            self._check_storage()
            self._reconcile()
            self._fold_call_stats()
            self._sample_statistics()
            if self._settles:
                self.flush_settles()
            if self._backlog:
                self.flush_backlog()

    def _fold_call_stats(self) -> None:
        """PostgreSQL: the statistics' deltas into their sums now and then, so that they stay few
        even when no one opens the statistics page (which folds them too)."""
        try:
            self.store.fold_call_stats()
        except StorageError as exc:
            self.log.error("call_stats_fold_failed", reason=str(exc))

    def _sample_statistics(self) -> None:
        """SQLite: the journal's planner statistics, at the first round and then once a day."""
        now = time.monotonic()
        if now < self._next_statistics:
            return
        self._next_statistics = now + STATISTICS_EVERY_SECONDS
        try:
            self.store.sample_statistics()
        except StorageError as exc:
            self.log.error("planner_statistics_failed", reason=str(exc))

    def _check_storage(self) -> None:
        """Log (once per new problem) a database that is gone, replaced or failing its writes."""
        _ok, why = self.store.health()
        if why and why != self._storage_problem:
            self.log.error("storage_unhealthy", reason=why)
        self._storage_problem = why

    def reconfigure(self, config: Config) -> None:
        """New calls use ``config``; live calls keep the one they started with."""
        crm = make_crm(config, self.store, self.metrics)  # may raise: then nothing changes
        self.config = config
        self.crm = crm
        if self._maintenance is not None:  # started: a daemon, not a one-off command
            self._group_commit()

    def _group_commit(self) -> None:
        self.store.set_group_commit(self.config.storage_group_commit_ms / 1000)

    def notify_too_long(self, row: dict[str, Any]) -> None:
        notify_reviewer(self.config.journal.notify_command, row, self.log, reason="too_long")

    def journaled(self, row: dict[str, Any]) -> None:
        """A finished call's row is in the journal: queue it for the CRM's call log and for analysis."""
        self.push_call_log(row)
        self.queue_analysis(row)

    def queue_analysis(self, row: dict[str, Any]) -> None:
        """Queue a finished call for the analysis workers (a recording, or at least line figures)."""
        job = self.analysis_job(row)
        if job is None:
            return
        try:
            self.store.analysis_enqueue(row["uuid"], *job, time.time())
        except StorageError as exc:
            self.log.error("analysis_queue_failed", uuid=row["uuid"], reason=str(exc))

    def analysis_job(self, row: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
        """(recording, the customer's channel, line figures) to queue a finished call with; None: nothing to do."""
        cfg = self.config
        quality = row.get("quality") or {}
        recording = row.get("recording", "")
        if cfg.journal.record_bridged_only and row.get("status") != "answered":
            recording = ""  # FreeSWITCH wrote no file: nobody was bridged
        if not cfg.analysis.enabled or row.get("status") == "active" or not (recording or quality):
            return None
        return recording, row.get("recording_customer", ""), quality

    def push_call_log(self, row: dict[str, Any]) -> None:
        """Queue the call for the CRM's call log, when the CRM keeps one (Payamgostar)."""
        record = self.call_log_record(row)
        if record is None:
            return
        try:
            self.store.outbox_add("call_log", call_log_key(row["uuid"]), record, time.time())
        except StorageError as exc:
            self.log.error("call_log_queue_failed", uuid=row["uuid"], reason=str(exc))
            return
        self.outbox.poke()

    def call_log_record(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """What the CRM's call log gets of a finished call; None when the CRM keeps no call log."""
        if getattr(self.crm, "push_call", None) is None or row["status"] == "active":
            return None
        from fsapp.journal import Clock, export_row

        return export_row(row, Clock.of(self.config.journal))  # times with the site's offset

    def settle_later(self, meter: dict[str, Any], talk_seconds: int) -> None:
        """Keep a charge the database refused; ``flush_settles`` writes it (once) when it is back."""
        self._settles.append((meter, talk_seconds))

    def flush_settles(self) -> int:
        done = 0
        while self._settles:
            meter, talk = self._settles[0]
            try:
                with self.store.transaction():
                    charge = ledger.settle(self.store, meter, talk)
                    if charge is not None and charge["amount"]:
                        self.store.add_call_charge(meter["call_uuid"], charge["amount"])
            except StorageError:
                break
            self._settles.pop(0)
            done += 1
            if charge is not None and charge["amount"]:
                self.metrics.charge(charge["amount"])
                self.outbox.poke()
                self.log.warning("charge_settled_late", call_uuid=meter["call_uuid"], amount=charge["amount"])
        return done

    def journal_call(self, row: dict[str, Any], log: Any) -> None:
        """Write a call's final row (kept for ``flush_backlog`` if the database refuses it),
        queue it for the CRM's call log and for analysis, and run the too-long notice if it was too long."""
        try:
            self.store.call_finished(row["uuid"], row, charge_from_ledger=True)
        except StorageError as exc:
            log.error("journal_write_failed", reason=str(exc))
            self.journal_backlog(row)
        else:
            self.journaled(row)
        if row["too_long"]:
            self.notify_too_long(row)

    def journal_backlog(self, row: dict[str, Any]) -> None:
        """Keep a journal row the database refused; retried by ``flush_backlog``."""
        self._backlog.append(row)

    def flush_backlog(self) -> int:
        done = 0
        while self._backlog:
            row = self._backlog[0]
            try:
                self.store.call_finished(row["uuid"], row, charge_from_ledger=True)
            except Exception:  # noqa: BLE001 - still failing; keep it for the next try
                break
            self._backlog.pop(0)
            self.journaled(row)
            done += 1
        return done


def call_log_key(uuid: str) -> str:
    """The outbox's idempotency key of a call's CRM call log: one per call, whoever queues it."""
    return f"{uuid}-call"


def make_crm(config: Config, store: Store, metrics: Metrics) -> Any:
    kind = config.crm.kind
    if kind == "local":
        from fsapp.crm.local import LocalCRM

        return LocalCRM(store, region=config.crm.region)
    if kind == "http":
        from fsapp.crm.http import HttpCRM

        return HttpCRM.from_config(config.crm, on_result=metrics.crm)
    if kind == "payamgostar":
        from fsapp.crm.payamgostar import PayamgostarCRM

        return PayamgostarCRM.from_config(config.crm, on_result=metrics.crm)
    raise ValueError(f"crm.kind: {kind!r} is not available in this build")
