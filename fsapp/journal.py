"""The call journal's views: filtered rows and days as a table, CSV or JSON (seed 004)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fsapp import render

STATUSES = ("answered", "missed", "abandoned", "transferred", "completed", "failed", "active")

EXPORT_FIELDS = (
    "uuid started_at answered_at ended_at direction caller called extension status total_seconds "
    "talk_seconds too_long customer_id customer_name customer_type modules auth_method auth_result "
    "charge recording hangup_cause"
).split()

GROUP_FIELDS = ("date", "calls", "answered", "missed", "abandoned", "talk_seconds", "charge")

TABLE_COLUMNS = [render.Column(name, width) for name, width in (
    ("date", 10), ("time", 8), ("status", 11), ("dir", 3), ("caller", 14), ("called", 10), ("ext", 6),
    ("total", 6), ("talk", 6), ("long", 4), ("customer", 18), ("type", 9), ("charge", 10),
)]

# ANSI colours by status (seed 004: rows coloured by status)
COLOURS = {
    "answered": "\x1b[32m", "missed": "\x1b[31m", "abandoned": "\x1b[33m", "transferred": "\x1b[36m",
    "completed": "\x1b[34m", "failed": "\x1b[35m", "active": "\x1b[37m",
}
RESET = "\x1b[0m"


def export_row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in EXPORT_FIELDS}


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    row = export_row(r)
    row["modules"] = ";".join(row["modules"] or [])
    row["too_long"] = "true" if row["too_long"] else "false"
    return row


def to_table(rows: list[dict[str, Any]], *, colour: bool) -> str:
    head, *lines = render.table_lines([_table_row(r) for r in rows], TABLE_COLUMNS)
    if colour:
        lines = [f"{COLOURS.get(r['status'], '')}{line}{RESET}" for r, line in zip(rows, lines, strict=True)]
    return "\n".join([head, "-" * len(head), *lines, f"{len(rows)} calls"]) + "\n"


def _table_row(r: dict[str, Any]) -> dict[str, Any]:
    started = r["started_at"] or ""
    return {
        "date": started[:10], "time": started[11:19], "status": r["status"],
        "dir": "in" if r["direction"] == "inbound" else "out", "caller": r["caller"], "called": r["called"],
        "ext": r["extension"], "total": _hms(r["total_seconds"]), "talk": _hms(r["talk_seconds"]),
        "long": "yes" if r["too_long"] else "", "customer": r["customer_name"] or r["customer_id"],
        "type": r["customer_type"], "charge": r["charge"],
    }


GROUP_COLUMNS = [
    render.Column("date", 10), render.Column("calls", 5, ">"), render.Column("answered", 8, ">"),
    render.Column("missed", 6, ">"), render.Column("talk", 9, ">"), render.Column("charge", 12, ">"),
]


def groups_table(groups: list[dict[str, Any]]) -> str:
    view = [{**g, "calls": str(g["calls"]), "answered": str(g["answered"]), "missed": str(g["missed"]),
             "talk": _hms(g["talk_seconds"])} for g in groups]
    return "\n".join(render.table_lines(view, GROUP_COLUMNS)) + "\n"


def groups_out(groups: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return render.to_json(groups)
    if fmt == "csv":
        return render.to_csv(groups, GROUP_FIELDS)
    return groups_table(groups)


def rows_out(rows: list[dict[str, Any]], fmt: str, *, colour: bool = False) -> str:
    if fmt == "json":
        return render.to_json([export_row(r) for r in rows])
    if fmt == "csv":
        return "".join(csv_stream(rows))
    return to_table(rows, colour=colour)


def csv_stream(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The CSV export of ``rows`` (any iterable: a streamed listing), the same as ``rows_out(..., "csv")``."""
    return render.csv_chunks((_csv_row(r) for r in rows), EXPORT_FIELDS)


def _hms(seconds: int | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"
