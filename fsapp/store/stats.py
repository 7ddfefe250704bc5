"""SQL of the console's statistics: the journal's calls counted per quarter hour of UTC and per extension.

Every zone's offset from UTC is a whole number of quarter hours (Tehran +03:30,
Kathmandu +05:45), so a quarter of the stored UTC time never straddles a local hour
or day. The database counts per quarter, ranged on ``started_at``: a month is at most
2,976 rows whatever the number of calls, and ``fsapp.callstats`` folds them into the
site's hours and days.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The sums of each group. The wait is what FreeSWITCH's CDR measured (socket-only rows have
# none): from the call's start until a person answered, over the answered calls that have one.
_MEASURED = "calls.status = 'answered' AND calls.cdr_legs > 0"
SUMS = {
    "calls": "COUNT(*)",
    "answered": "SUM(CASE WHEN calls.status = 'answered' THEN 1 ELSE 0 END)",
    "missed": "SUM(CASE WHEN calls.status = 'missed' THEN 1 ELSE 0 END)",
    "abandoned": "SUM(CASE WHEN calls.status = 'abandoned' THEN 1 ELSE 0 END)",
    "too_long": "SUM(CASE WHEN calls.too_long = 1 THEN 1 ELSE 0 END)",
    "talk_seconds": "SUM(COALESCE(calls.talk_seconds, 0))",
    "answered_talk": "SUM(CASE WHEN calls.status = 'answered' THEN COALESCE(calls.talk_seconds, 0) ELSE 0 END)",
    "waited": f"SUM(CASE WHEN {_MEASURED} THEN 1 ELSE 0 END)",
    "wait_seconds": f"SUM(CASE WHEN {_MEASURED} THEN calls.wait_seconds ELSE 0 END)",
}
STAT_FIELDS = tuple(SUMS)

_HOUR = "substr(calls.started_at, 1, 13)"  # 2026-12-01T05
_QUARTER = ("CASE WHEN substr(calls.started_at, 15, 2) < '15' THEN 0 WHEN substr(calls.started_at, 15, 2) < '30'"
            " THEN 1 WHEN substr(calls.started_at, 15, 2) < '45' THEN 2 ELSE 3 END")
_SELECT = ", ".join(f"{sql} AS {name}" for name, sql in SUMS.items())
# The analysis beside each call, joined only when a filter reads it (flag, transcript text).
_ANALYSIS = " LEFT JOIN call_analysis ON call_analysis.call_uuid = calls.uuid"


class StatsStore:
    """The statistics half of ``Store`` (mixed in); ``filters`` are the journal's (``Store._call_filter``)."""

    db: Any
    _call_filter: Callable[..., tuple[str, list[Any]]]

    def call_stats_quarters(self, **filters: Any) -> list[dict[str, Any]]:
        """The sums per quarter hour of UTC: ``hour`` (``2026-12-01T05``), ``quarter`` (0-3) and STAT_FIELDS."""
        return self._stats(f"{_HOUR} AS hour, {_QUARTER} AS quarter", f"{_HOUR}, {_QUARTER}", filters)

    def call_stats_extensions(self, **filters: Any) -> list[dict[str, Any]]:
        """The sums per ``extension`` ("" for calls no agent had), in extension order."""
        return self._stats("calls.extension AS extension", "calls.extension", filters)

    def _stats(self, keys: str, group: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        where, params = self._call_filter(**filters)
        source = "calls" + (_ANALYSIS if filters.get("flag") or filters.get("text") else "")
        rows = self.db.query(f"SELECT {keys}, {_SELECT} FROM {source}{where} GROUP BY {group}", params)
        # no ORDER BY: PostgreSQL may then hash the groups; their order is set here, a few thousand at most
        out = [{k: int(v or 0) if k in SUMS else v for k, v in r.items()} for r in rows]
        return sorted(out, key=lambda r: [r[k] for k in r if k not in SUMS])
