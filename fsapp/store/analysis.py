"""The analysis queue and each call's figures (table ``call_analysis``, migration 3).

A finished call with a recording is queued in the same database as its journal row;
workers (other processes) claim one row at a time under a lease, as the outbox does,
so a restart resumes the queue, a worker that died mid-file gives its row back when
the lease ends, and a row that is done is never analysed again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

# What the journal shows of a call's analysis (``Store.list_calls``, ``fsapp calls``).
FIGURES = (
    "duration_seconds customer_talk_seconds customer_share agent_talk_seconds agent_share silence_seconds "
    "silence_ratio longest_silence_seconds long_silences overtalk_seconds overtalk_count customer_interruptions "
    "agent_interruptions agent_customer_ratio"
).split()
QUALITY = "mos quality_percentage flaws jitter_ms jitter_loss_rate hold_seconds".split()
ANALYSIS_COLUMNS = ("state", "error", "flags", *FIGURES, *QUALITY, "transcript_state")
# States: pending -> running -> done | missing (no file) | corrupt (unreadable) | failed (gave up);
# skipped: no recording to analyse (the line-quality figures and their flags still count).
FINAL_STATES = ("done", "missing", "corrupt", "failed", "skipped")


def flag_rows(analysed: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """(call_uuid, flag) for each flag of each (call_uuid, comma-separated flags): the rows of
    ``call_flags``, which the flag filter reads (migration 15)."""
    for uuid, flags in analysed:
        for flag in dict.fromkeys(f for f in (flags or "").split(",") if f):
            yield uuid, flag


# A finished call queued for analysis, once; its line figures where known (NULL otherwise).
_ENQUEUE = ("INSERT INTO call_analysis (call_uuid, state, recording, customer_channel, queued_at"
            + "".join(f", {c}" for c in QUALITY) + ") VALUES (?, 'pending', ?, ?, ?" + ", ?" * len(QUALITY) + ")"
            " ON CONFLICT (call_uuid) DO NOTHING")


def _job_row(uuid: str, recording: str, channel: str, quality: dict[str, Any], now: float) -> list[Any]:
    return [uuid, recording, channel or "left", now, *(quality.get(c) for c in QUALITY)]


def like_pattern(text: str) -> str:
    """``%text%`` for LIKE ... ESCAPE '\\', with the text's own wildcards taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class AnalysisStore:
    db: Any

    def analysis_enqueue(self, uuid: str, recording: str, customer_channel: str, quality: dict[str, Any],
                         now: float) -> bool:
        """Queue a finished call once; False if it was already queued."""
        return self.db.execute(_ENQUEUE, _job_row(uuid, recording, customer_channel, quality, now)) > 0

    def analysis_enqueue_many(self, jobs: Sequence[tuple[str, str, str, dict[str, Any]]], now: float) -> None:
        """``analysis_enqueue`` of each (uuid, recording, customer channel, line figures), in one statement."""
        if jobs:
            self.db.execute_many(_ENQUEUE, [_job_row(*job, now) for job in jobs])

    def analysis_requeue(self, uuid: str, recording: str, customer_channel: str, now: float) -> None:
        """Analyse a call again (by hand): its row back to pending, its figures kept until replaced."""
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE call_analysis SET state = 'pending', recording = ?, customer_channel = ?, attempts = 0,"
                " locked_by = '', locked_until = 0, error = '' WHERE call_uuid = ?",
                (recording, customer_channel or "left", uuid),
            )
            if not changed:
                self.analysis_enqueue(uuid, recording, customer_channel, {}, now)

    def analysis_claim(self, worker: str, now: float, lease: float, max_attempts: int,
                       uuid: str = "") -> dict[str, Any] | None:
        """Take the oldest due row (or call ``uuid``'s) for ``worker``: pending, or running under a lapsed lease."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE call_analysis SET state = 'failed', locked_by = '', error = CASE WHEN error = ''"
                " THEN 'gave up: the worker stopped mid-analysis on every attempt' ELSE error END"
                " WHERE state = 'running' AND locked_until < ? AND attempts >= ?",
                (now, max_attempts),
            )
            row = self.db.one(
                "SELECT call_uuid FROM call_analysis WHERE (state = 'pending' OR (state = 'running'"
                " AND locked_until < ?))" + (" AND call_uuid = ?" if uuid else "")
                + " ORDER BY queued_at, call_uuid LIMIT 1" + self.db.skip_locked,
                (now, uuid) if uuid else (now,),
            )
            if row is None:
                return None
            self.db.execute(
                "UPDATE call_analysis SET state = 'running', locked_by = ?, locked_until = ?, attempts = attempts + 1"
                " WHERE call_uuid = ?",
                (worker, now + lease, row["call_uuid"]),
            )
            return self.analysis_get(row["call_uuid"])

    def analysis_finish(self, uuid: str, worker: str, state: str, figures: dict[str, Any], now: float) -> bool:
        """Store a claimed row's outcome; False if the row is no longer ``worker``'s (its lease ran out)."""
        cols = [c for c in (*FIGURES, "flags", "segments", "error", *_TRANSCRIPT) if c in figures]
        values = [json.dumps(figures[c]) if c == "segments" else figures[c] for c in cols]
        with self.db.transaction():
            done = self.db.execute(
                "UPDATE call_analysis SET state = ?, analysed_at = ?, locked_by = '', locked_until = 0"
                + "".join(f", {c} = ?" for c in cols) + " WHERE call_uuid = ? AND locked_by = ? AND state = 'running'",
                [state, now, *values, uuid, worker],
            ) > 0
            if done and "flags" in figures:
                self.db.execute("DELETE FROM call_flags WHERE call_uuid = ?", (uuid,))
                flags = [(flag, uuid) for _, flag in flag_rows([(uuid, figures["flags"])])]
                if flags:
                    self.db.execute_many("INSERT INTO call_flags (flag, call_uuid) VALUES (?, ?)", flags)
        return done

    def analysis_get(self, uuid: str) -> dict[str, Any] | None:
        row = self.db.one("SELECT * FROM call_analysis WHERE call_uuid = ?", (uuid,))
        if row is not None:
            row["segments"] = json.loads(row["segments"] or "[]")
            row["flags"] = [f for f in row["flags"].split(",") if f]
        return row

    def analysis_pending(self) -> int:
        row = self.db.one("SELECT COUNT(*) AS n FROM call_analysis WHERE state IN ('pending', 'running')")
        return int(row["n"]) if row else 0


_TRANSCRIPT = ("transcript_state", "transcript", "transcript_segments", "transcript_error")
