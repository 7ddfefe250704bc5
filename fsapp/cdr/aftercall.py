"""The after-call work of a call only its CDR knows, as a socket call gets it from its session.

An agent's outbound call, an internal call, an inbound call routed around fsapp's
socket: once the A leg's CDR is in (``Store.cdr_add`` reports each such call once,
whatever replays or daemons post its legs, and never a call the socket journaled),

- in the CDR's own transaction, so committed with the leg or not at all: the CRM's
  call log (the outbox, under the call's one idempotency key; not for an internal
  call, which has no customer to log it against) and the analysis queue (a recording
  of an answered call, or at least the customer's line figures);
- once committed: the too-long notice (``[journal] notify_command``) and the metrics
  (``fsapp_calls{entry="cdr"}``; an answered call's talk in ``fsapp_talk_duration_seconds``).
"""

from __future__ import annotations

import math
import time
from typing import Any

from fsapp.app import App, call_log_key

ENTRY = "cdr"  # the ``entry`` label of a CDR-only call in fsapp_calls


class AfterCall:
    def __init__(self, app: App) -> None:
        self.app = app

    def queue(self, rows: list[dict[str, Any]]) -> None:
        """Inside the CDRs' transaction: the call logs and the analysis queue, one statement each
        for the batch (a database error fails its posts)."""
        app, logs, jobs = self.app, [], []
        for row in map(journal_row, rows):
            record = app.call_log_record(row) if row["direction"] != "local" else None
            if record is not None:
                logs.append((call_log_key(row["uuid"]), record))
            job = app.analysis_job(row)
            if job is not None:
                jobs.append((row["uuid"], *job))
        now = time.time()
        app.store.outbox_add_many("call_log", logs, now)
        app.store.analysis_enqueue_many(jobs, now)

    def done(self, row: dict[str, Any]) -> None:
        """Once committed: metrics, the too-long notice, and the outbox woken for the call log."""
        app = self.app
        app.metrics.call_ended(ENTRY, row["status"])
        if row["status"] == "answered":
            app.metrics.bridge("answered", row["talk_seconds"])
        app.log.info("cdr_call_completed", uuid=row["uuid"], direction=row["direction"], status=row["status"],
                     talk_seconds=row["talk_seconds"])
        if row["too_long"]:
            app.log.warning("call_too_long", uuid=row["uuid"], talk_seconds=row["talk_seconds"],
                            limit=app.config.journal.too_long_seconds)
            app.notify_too_long(journal_row(row))
        app.outbox.poke()


def journal_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CDR's call row as the socket's after-call work reads one: no customer or charge, the recording's
    customer channel (an agent's outbound call has the agent on the left), the customer's line figures."""
    outbound = row["direction"] == "outbound"
    side = "callee" if outbound else "caller"
    jitter = row.get(f"{side}_jitter")
    quality = {
        "mos": row.get(f"{side}_mos"),
        "quality_percentage": row.get(f"{side}_quality"),
        "flaws": row.get(f"{side}_flaws"),
        "jitter_ms": round(math.sqrt(jitter), 2) if jitter is not None else None,
        "hold_seconds": row.get("hold_seconds") or None,
    }
    return {
        "customer_id": "", "customer_name": "", "customer_type": "", "modules": [], "auth_method": "",
        "auth_result": "", "charge": 0, **row,
        "recording": row["recording"] if row["status"] == "answered" else "",  # nobody talked: no file
        "recording_customer": "right" if outbound else "left",
        "quality": {k: v for k, v in quality.items() if v is not None},
    }
