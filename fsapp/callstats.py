"""The journal's statistics over a period: the store's quarter-hour sums folded into local days and hours.

``Store.call_stats_quarters`` counts per quarter hour of UTC (no quarter straddles a
local hour in any zone); ``fold`` adds each quarter to the day and the hour of the
day it falls in in the site's zone, so a call at 22:00 UTC is on the next day in
Tehran. The work is bounded by the quarters (2,976 in a month), not by the calls.

The rates and averages (``figures``):

- answer rate: answered / (answered + missed + abandoned); the other statuses (a call
  the IVR completed, transferred, failed, rejected, still active) are in neither part;
- average talk: the talk of the answered calls over their number;
- average wait: from a call's start until a person answered, over the answered calls
  that have FreeSWITCH's CDR (the socket alone does not measure it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fsapp.store.stats import STAT_FIELDS

STACKED = ("answered", "missed", "abandoned", "other")  # a bar's parts, bottom up
MAX_DAYS = 3660  # a period longer than ten years is refused: its days would not fit a chart


def empty() -> dict[str, int]:
    return dict.fromkeys(STAT_FIELDS, 0)


def add(into: dict[str, int], sums: dict[str, Any]) -> None:
    for f in STAT_FIELDS:
        into[f] += sums[f]


def quarter_start(bucket: dict[str, Any]) -> dt.datetime:
    """The UTC instant a quarter-hour bucket of the store starts at. ValueError for a malformed time."""
    hour = dt.datetime.fromisoformat(bucket["hour"] + ":00:00+00:00")
    return hour + dt.timedelta(minutes=15 * int(bucket["quarter"]))


@dataclass
class Folded:
    """Sums per local day of the period (every day, oldest first), per hour of the day (0-23), and in all."""

    days: dict[dt.date, dict[str, int]]
    hours: list[dict[str, int]] = field(default_factory=lambda: [empty() for _ in range(24)])
    total: dict[str, int] = field(default_factory=empty)


def fold(quarters: Iterable[dict[str, Any]], tz: dt.tzinfo | None, first: dt.date, last: dt.date) -> Folded:
    """The quarters in the days ``first``..``last`` of ``tz`` (None: the host's zone)."""
    out = Folded({first + dt.timedelta(days=i): empty() for i in range((last - first).days + 1)})
    for q in quarters:
        add(out.total, q)
        try:
            when = quarter_start(q).astimezone(tz)
        except ValueError:  # a time the journal did not write: counted in the total only
            continue
        add(out.hours[when.hour], q)
        if when.date() in out.days:
            add(out.days[when.date()], q)
    return out


def figures(sums: dict[str, int]) -> dict[str, Any]:
    """``sums`` with ``other``, ``answer_rate`` (0..1, None without a call to answer), ``avg_talk`` and
    ``avg_wait`` (whole seconds, None when nothing to average)."""
    offered = sums["answered"] + sums["missed"] + sums["abandoned"]
    return {
        **sums,
        "other": sums["calls"] - offered,
        "answer_rate": sums["answered"] / offered if offered else None,
        "avg_talk": round(sums["answered_talk"] / sums["answered"]) if sums["answered"] else None,
        "avg_wait": round(sums["wait_seconds"] / sums["waited"]) if sums["waited"] else None,
    }


EXTENSION_SORTS = ("extension", "calls", "answered", "missed", "answer_rate", "talk_seconds", "avg_talk",
                   "avg_wait", "too_long")


def extensions(rows: Iterable[dict[str, Any]], sort: str = "calls", descending: bool = True) -> list[dict[str, Any]]:
    """The per-extension sums with their figures, sorted by ``sort`` (one of EXTENSION_SORTS; None last)."""
    if sort not in EXTENSION_SORTS:
        raise ValueError(f"cannot sort extensions by {sort!r}")
    out = [{"extension": r["extension"], **figures({f: r[f] for f in STAT_FIELDS})} for r in rows]
    known = [r for r in out if r[sort] is not None]
    known.sort(key=lambda r: (r[sort], r["extension"]), reverse=descending)
    return known + [r for r in out if r[sort] is None]
