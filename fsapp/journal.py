"""The call journal's views: filtered rows and days as a table, CSV or JSON (seed 004).

Times are stored in UTC; a ``Clock`` shows them in ``[journal] timezone`` with the
offset (JSON, CSV, the CRM's call log) and, with ``calendar = "jalali"``, adds the
Solar Hijri date (``jalali_date``; the table's date column is then Jalali).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fsapp import instants, render

STATUSES = ("answered", "missed", "abandoned", "transferred", "completed", "rejected", "failed", "active")

EXPORT_FIELDS = (
    "uuid started_at answered_at ended_at direction caller called extension status total_seconds "
    "talk_seconds too_long customer_id customer_name customer_type modules auth_method auth_result "
    "charge recording hangup_cause "
    # from FreeSWITCH's CDRs ([cdr] listen, fsapp cdr import)
    "missed_cause ring_seconds wait_seconds hold_seconds hangup_by caller_mos caller_quality caller_flaws "
    "caller_jitter callee_mos callee_quality callee_flaws callee_jitter queue"
).split()
DIRECTIONS = ("inbound", "outbound", "local")
MISSED_CAUSES = ("no_answer", "busy", "cancelled", "unregistered", "failed")
# Each call's analysis, beside its row (empty until a worker has analysed the call).
ANALYSIS_FIELDS = (
    "recording_customer analysis_state analysis_flags customer_talk_seconds customer_share agent_talk_seconds "
    "agent_share silence_seconds silence_ratio longest_silence_seconds long_silences overtalk_seconds "
    "overtalk_count customer_interruptions agent_interruptions agent_customer_ratio analysis_mos "
    "analysis_quality_percentage analysis_flaws analysis_jitter_ms analysis_hold_seconds transcript_state"
).split()

GROUP_FIELDS = ("date", "calls", "answered", "missed", "abandoned", "talk_seconds", "charge")

TABLE_COLUMNS = [render.Column(name, width) for name, width in (
    ("date", 10), ("time", 8), ("status", 11), ("dir", 3), ("caller", 14), ("called", 10), ("ext", 6),
    ("total", 6), ("talk", 6), ("long", 4), ("customer", 18), ("type", 9), ("charge", 10), ("cause", 12),
    ("cust%", 5), ("silence", 7), ("over", 5), ("mos", 4), ("flags", 24),
)]
_DIR_CELL = {"inbound": "in", "outbound": "out", "local": "loc"}

# ANSI colours by status (seed 004: rows coloured by status)
COLOURS = {
    "answered": "\x1b[32m", "missed": "\x1b[31m", "abandoned": "\x1b[33m", "transferred": "\x1b[36m",
    "completed": "\x1b[34m", "rejected": "\x1b[31;1m", "failed": "\x1b[35m", "active": "\x1b[37m",
}
RESET = "\x1b[0m"


TIME_FIELDS = ("started_at", "answered_at", "ended_at")


@dataclass(frozen=True)
class Clock:
    """Where the journal's times are shown: a zone (None: the host's) and a calendar."""

    tz: dt.tzinfo | None = None
    calendar: str = "gregorian"

    @classmethod
    def of(cls, journal: Any) -> Clock:
        """The clock of a ``[journal]`` section."""
        return cls(journal.zone, journal.calendar)

    @property
    def jalali(self) -> bool:
        return self.calendar == "jalali"

    def day(self, local: dt.datetime | None) -> str:
        if local is None:
            return ""
        return instants.jalali(local.date()) if self.jalali else local.date().isoformat()


def export_fields(clock: Clock) -> list[str]:
    return EXPORT_FIELDS + ["jalali_date"] if clock.jalali else list(EXPORT_FIELDS)


def export_row(r: dict[str, Any], clock: Clock = Clock()) -> dict[str, Any]:
    """A row as JSON, CSV and the CRM get it: times in the clock's zone with their offset."""
    row = {k: r.get(k) for k in EXPORT_FIELDS}
    for key in TIME_FIELDS:
        row[key] = instants.show(row[key], clock.tz)
    if clock.jalali:
        row["jalali_date"] = clock.day(instants.local(r.get("started_at"), clock.tz))
    return row


def export_full(r: dict[str, Any], clock: Clock = Clock()) -> dict[str, Any]:
    """The spec's fields (times by the clock), then the call's analysis."""
    return {**export_row(r, clock), **{k: r.get(k) for k in ANALYSIS_FIELDS}}


def _csv_row(r: dict[str, Any], clock: Clock) -> dict[str, Any]:
    row = export_full(r, clock)
    row["modules"] = ";".join(row["modules"] or [])
    row["analysis_flags"] = ";".join(row["analysis_flags"] or [])
    row["too_long"] = "true" if row["too_long"] else "false"
    return row


def to_table(rows: list[dict[str, Any]], *, colour: bool, clock: Clock = Clock()) -> str:
    head, *lines = render.table_lines([_table_row(r, clock) for r in rows], TABLE_COLUMNS)
    if colour:
        lines = [f"{COLOURS.get(r['status'], '')}{line}{RESET}" for r, line in zip(rows, lines, strict=True)]
    return "\n".join([head, "-" * len(head), *lines, f"{len(rows)} calls"]) + "\n"


def _table_row(r: dict[str, Any], clock: Clock) -> dict[str, Any]:
    started = instants.local(r["started_at"], clock.tz)
    return {
        "date": clock.day(started), "time": started.strftime("%H:%M:%S") if started else "", "status": r["status"],
        "dir": _DIR_CELL.get(r["direction"], r["direction"]), "caller": r["caller"], "called": r["called"],
        "ext": r["extension"], "total": _hms(r["total_seconds"]), "talk": _hms(r["talk_seconds"]),
        "long": "yes" if r["too_long"] else "", "customer": r["customer_name"] or r["customer_id"],
        "type": r["customer_type"], "charge": r["charge"], "cause": r.get("missed_cause") or "",
        "cust%": _pct(r.get("customer_share")), "silence": _seconds(r.get("silence_seconds")),
        "over": _seconds(r.get("overtalk_seconds")), "mos": _num(call_mos(r)),
        "flags": ",".join(r.get("analysis_flags") or []) or _pending(r.get("analysis_state")),
    }


def call_mos(r: dict[str, Any]) -> float | None:
    """The recording analysis's MOS, else the lowest FreeSWITCH measured on the call's legs (its CDR)."""
    if r.get("analysis_mos") is not None:
        return float(r["analysis_mos"])
    measured = [m for m in (r.get("caller_mos"), r.get("callee_mos")) if m is not None]
    return min(measured) if measured else None


def _pct(share: float | None) -> str:
    return "" if share is None else f"{round(share * 100)}%"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}s"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _pending(state: str | None) -> str:
    return "" if state in (None, "done", "skipped") else f"({state})"


GROUP_COLUMNS = [
    render.Column("date", 10), render.Column("calls", 5, ">"), render.Column("answered", 8, ">"),
    render.Column("missed", 6, ">"), render.Column("talk", 9, ">"), render.Column("charge", 12, ">"),
]


def groups_table(groups: list[dict[str, Any]]) -> str:
    view = [{**g, "calls": str(g["calls"]), "answered": str(g["answered"]), "missed": str(g["missed"]),
             "talk": _hms(g["talk_seconds"])} for g in groups]
    return "\n".join(render.table_lines(view, GROUP_COLUMNS)) + "\n"


def by_day(buckets: Iterable[dict[str, Any]], clock: Clock, *, limit: int = 0) -> list[dict[str, Any]]:
    """Counts per UTC bucket (``date`` a prefix of the stored time) summed per day of the clock."""
    days: dict[str, dict[str, Any]] = {}
    for b in buckets:
        key = b["date"]
        day = clock.day(instants.local(key + _INSTANT[len(key):], clock.tz)) if key else ""
        total = days.setdefault(day, {"date": day, **{f: 0 for f in GROUP_FIELDS[1:]}})
        for f in GROUP_FIELDS[1:]:
            total[f] += b[f]
    out = sorted(days.values(), key=lambda g: g["date"])
    return out[:limit] if limit else out


_INSTANT = "0000-01-01T00:00:00Z"


def bucket_width(clock: Clock) -> int:
    """How much of a stored UTC time to group by so no bucket straddles a local midnight.

    The hour (13 characters) for zones a whole number of hours off UTC, ten minutes (15)
    for Tehran's or India's half hours, the minute (16) for Nepal's 5:45.
    """
    now = dt.datetime.now(dt.UTC)
    minutes = set()
    for days in (0, 91, 182, 273):
        offset = (now + dt.timedelta(days=days)).astimezone(clock.tz).utcoffset() or dt.timedelta()
        minutes.add(int(offset.total_seconds()) // 60 % 60)
    if minutes == {0}:
        return 13
    return 15 if all(m % 10 == 0 for m in minutes) else 16


def groups_out(groups: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return render.to_json(groups)
    if fmt == "csv":
        return render.to_csv(groups, GROUP_FIELDS)
    return groups_table(groups)


def rows_out(rows: list[dict[str, Any]], fmt: str, *, colour: bool = False, clock: Clock = Clock()) -> str:
    if fmt == "json":
        return render.to_json([export_full(r, clock) for r in rows])
    if fmt == "csv":
        return "".join(csv_stream(rows, clock))
    return to_table(rows, colour=colour, clock=clock)


def csv_stream(rows: Iterable[dict[str, Any]], clock: Clock = Clock()) -> Iterator[str]:
    """The CSV export of ``rows`` (any iterable: a streamed listing), the same as ``rows_out(..., "csv")``."""
    return render.csv_chunks((_csv_row(r, clock) for r in rows), export_fields(clock) + ANALYSIS_FIELDS)


def _hms(seconds: int | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"
