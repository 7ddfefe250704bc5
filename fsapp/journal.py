"""``fsapp calls``: the call journal, filtered, sorted, grouped and exported (seed 004)."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Callable
from typing import Any

STATUSES = ("answered", "missed", "abandoned", "transferred", "completed", "failed", "active")

EXPORT_FIELDS = (
    "uuid started_at answered_at ended_at direction caller called extension status total_seconds "
    "talk_seconds too_long customer_id customer_name customer_type modules auth_method auth_result "
    "charge recording hangup_cause "
    # from FreeSWITCH's CDRs ([cdr] listen, fsapp cdr import)
    "missed_cause ring_seconds wait_seconds hold_seconds hangup_by caller_mos caller_quality caller_flaws "
    "caller_jitter callee_mos callee_quality callee_flaws callee_jitter"
).split()
DIRECTIONS = ("inbound", "outbound", "local")
MISSED_CAUSES = ("no_answer", "busy", "cancelled", "unregistered", "failed")

GROUP_FIELDS = ("date", "calls", "answered", "missed", "abandoned", "talk_seconds", "charge")

TABLE_COLUMNS = [
    ("date", 10), ("time", 8), ("status", 11), ("dir", 3), ("caller", 14), ("called", 10), ("ext", 6),
    ("total", 6), ("talk", 6), ("long", 4), ("customer", 18), ("type", 9), ("charge", 10), ("cause", 12),
    ("mos", 4),
]
_DIR_CELL = {"inbound": "in", "outbound": "out", "local": "loc"}

# ANSI colours by status (seed 004: rows coloured by status)
COLOURS = {
    "answered": "\x1b[32m", "missed": "\x1b[31m", "abandoned": "\x1b[33m", "transferred": "\x1b[36m",
    "completed": "\x1b[34m", "failed": "\x1b[35m", "active": "\x1b[37m",
}
RESET = "\x1b[0m"


def _date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _mos(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f"not a MOS between 1 and 5: {text!r}")
    return value


def add_cli(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("calls", help="the call journal: filter, sort, group, export")
    config_arg(p)
    p.add_argument("--from", dest="date_from", type=_date, default=None, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", type=_date, default=None, help="last day, YYYY-MM-DD (inclusive)")
    p.add_argument("--customer", default="", help="one customer's history")
    p.add_argument("--status", default="", choices=("",) + STATUSES)
    p.add_argument("--direction", default="", choices=("",) + DIRECTIONS,
                   help="inbound (from outside), outbound (an agent calling out), local (extension to extension)")
    p.add_argument("--extension", default="", help="the agent's extension: calls it answered or made")
    p.add_argument("--missed-cause", default="", choices=("",) + MISSED_CAUSES, help="missed calls of this cause")
    p.add_argument("--min-mos", type=_mos, default=None, help="calls whose every measured leg has MOS >= this")
    p.add_argument("--max-mos", type=_mos, default=None, help="calls with a measured leg of MOS <= this (poor audio)")
    p.add_argument("--too-long", action="store_true", help="only calls marked too long")
    p.add_argument("--number", default="", help="caller or called number contains, or extension equals")
    p.add_argument("--sort", default="started_at", help="column to sort by (default started_at)")
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument("--limit", type=int, default=0, help="at most this many rows (days, with --group-by date)")
    p.add_argument("--group-by", default="", choices=("", "date"))
    p.add_argument("--format", default="table", choices=("table", "csv", "json"))
    p.add_argument("--mark-downloaded", metavar="UUID", default="", help="set the recording's downloaded mark")
    p.set_defaults(handler=cmd_calls)


def cmd_calls(args: argparse.Namespace) -> int:
    from fsapp.cli import UsageError, load_config
    from fsapp.store import CALL_FIELDS, open_store

    cfg = load_config(args, check_files=False)
    store = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size)
    if args.mark_downloaded:
        if not store.mark_downloaded(args.mark_downloaded):
            raise UsageError(f"--mark-downloaded: no call with uuid {args.mark_downloaded!r}")
        print(f"{args.mark_downloaded}: marked downloaded")
        return 0
    if args.sort not in CALL_FIELDS:
        raise UsageError(f"--sort: unknown column {args.sort!r} (one of {', '.join(EXPORT_FIELDS)})")
    filters = {"date_from": args.date_from or "", "date_to": args.date_to or "", "customer": args.customer,
               "status": args.status, "direction": args.direction, "too_long": args.too_long,
               "number": args.number, "extension": args.extension, "missed_cause": args.missed_cause,
               "min_mos": args.min_mos, "max_mos": args.max_mos}
    out = sys.stdout
    if args.group_by == "date":
        groups = store.calls_by_day(limit=args.limit, **filters)
        if args.format == "json":
            json.dump(groups, out, ensure_ascii=False, indent=1)
            out.write("\n")
        elif args.format == "csv":
            w = csv.DictWriter(out, fieldnames=GROUP_FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(groups)
        else:
            out.write(f"{'date':10}  {'calls':>5}  {'answered':>8}  {'missed':>6}  {'talk':>9}  {'charge':>12}\n")
            for g in groups:
                out.write(f"{g['date']:10}  {g['calls']:>5}  {g['answered']:>8}  {g['missed']:>6}  "
                          f"{_hms(g['talk_seconds']):>9}  {g['charge']:>12,}\n")
        return 0
    rows = store.list_calls(order=args.sort, descending=args.desc, limit=args.limit, **filters)
    if args.format == "json":
        out.write(to_json(rows) + "\n")
    elif args.format == "csv":
        out.write(to_csv(rows))
    else:
        out.write(to_table(rows, colour=out.isatty()))
    return 0


def export_row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in EXPORT_FIELDS}


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps([export_row(r) for r in rows], ensure_ascii=False, indent=1)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        row = export_row(r)
        row["modules"] = ";".join(row["modules"] or [])
        row["too_long"] = "true" if row["too_long"] else "false"
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def to_table(rows: list[dict[str, Any]], *, colour: bool) -> str:
    head = "  ".join(f"{name:{width}}" for name, width in TABLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        started = r["started_at"] or ""
        cells = [
            started[:10], started[11:19], r["status"], _DIR_CELL.get(r["direction"], r["direction"]),
            r["caller"], r["called"], r["extension"], _hms(r["total_seconds"]), _hms(r["talk_seconds"]),
            "yes" if r["too_long"] else "", (r["customer_name"] or r["customer_id"])[:18], r["customer_type"],
            f"{r['charge']:,}", r.get("missed_cause") or "", _lowest_mos(r),
        ]
        line = "  ".join(f"{str(c)[:w]:{w}}" for c, (_, w) in zip(cells, TABLE_COLUMNS, strict=True))
        lines.append(f"{COLOURS.get(r['status'], '')}{line}{RESET}" if colour else line)
    lines.append(f"{len(rows)} calls")
    return "\n".join(lines) + "\n"


def _lowest_mos(r: dict[str, Any]) -> str:
    measured = [m for m in (r.get("caller_mos"), r.get("callee_mos")) if m is not None]
    return f"{min(measured):.2f}" if measured else ""


def _hms(seconds: int | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"
