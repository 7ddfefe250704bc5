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

from fsapp.analysis.flags import NAMES as FLAG_NAMES

STATUSES = ("answered", "missed", "abandoned", "transferred", "completed", "failed", "active")

EXPORT_FIELDS = (
    "uuid started_at answered_at ended_at direction caller called extension status total_seconds "
    "talk_seconds too_long customer_id customer_name customer_type modules auth_method auth_result "
    "charge recording hangup_cause"
).split()
# Each call's analysis, beside its row (empty until a worker has analysed the call).
ANALYSIS_FIELDS = (
    "recording_customer analysis_state analysis_flags customer_talk_seconds customer_share agent_talk_seconds "
    "agent_share silence_seconds silence_ratio longest_silence_seconds long_silences overtalk_seconds "
    "overtalk_count customer_interruptions agent_interruptions agent_customer_ratio analysis_mos "
    "analysis_quality_percentage analysis_flaws analysis_jitter_ms analysis_hold_seconds transcript_state"
).split()

GROUP_FIELDS = ("date", "calls", "answered", "missed", "abandoned", "talk_seconds", "charge")

TABLE_COLUMNS = [
    ("date", 10), ("time", 8), ("status", 11), ("dir", 3), ("caller", 14), ("called", 10), ("ext", 6),
    ("total", 6), ("talk", 6), ("long", 4), ("customer", 18), ("type", 9), ("charge", 10),
    ("cust%", 5), ("silence", 7), ("over", 5), ("mos", 4), ("flags", 24),
]

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


def add_cli(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("calls", help="the call journal: filter, sort, group, export")
    config_arg(p)
    p.add_argument("--from", dest="date_from", type=_date, default=None, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", type=_date, default=None, help="last day, YYYY-MM-DD (inclusive)")
    p.add_argument("--customer", default="", help="one customer's history")
    p.add_argument("--status", default="", choices=("",) + STATUSES)
    p.add_argument("--direction", default="", choices=("", "inbound", "outbound"))
    p.add_argument("--too-long", action="store_true", help="only calls marked too long")
    p.add_argument("--number", default="", help="caller or called number contains, or extension equals")
    p.add_argument("--flag", default="", choices=("",) + FLAG_NAMES, help="only calls the analysis flagged so")
    p.add_argument("--text", default="", metavar="WORDS", help="only calls whose transcript has every word")
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
               "number": args.number, "flag": args.flag, "text": args.text}
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


def export_full(r: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields, then the call's analysis."""
    return {**export_row(r), **{k: r.get(k) for k in ANALYSIS_FIELDS}}


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps([export_full(r) for r in rows], ensure_ascii=False, indent=1)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS + ANALYSIS_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        row = export_full(r)
        row["modules"] = ";".join(row["modules"] or [])
        row["analysis_flags"] = ";".join(row["analysis_flags"] or [])
        row["too_long"] = "true" if row["too_long"] else "false"
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def to_table(rows: list[dict[str, Any]], *, colour: bool) -> str:
    head = "  ".join(f"{name:{width}}" for name, width in TABLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for r in rows:
        started = r["started_at"] or ""
        cells = [
            started[:10], started[11:19], r["status"], "in" if r["direction"] == "inbound" else "out",
            r["caller"], r["called"], r["extension"], _hms(r["total_seconds"]), _hms(r["talk_seconds"]),
            "yes" if r["too_long"] else "", (r["customer_name"] or r["customer_id"])[:18], r["customer_type"],
            f"{r['charge']:,}", _pct(r.get("customer_share")), _seconds(r.get("silence_seconds")),
            _seconds(r.get("overtalk_seconds")), _num(r.get("analysis_mos")),
            ",".join(r.get("analysis_flags") or []) or _pending(r.get("analysis_state")),
        ]
        line = "  ".join(f"{str(c)[:w]:{w}}" for c, (_, w) in zip(cells, TABLE_COLUMNS, strict=True))
        lines.append(f"{COLOURS.get(r['status'], '')}{line}{RESET}" if colour else line)
    lines.append(f"{len(rows)} calls")
    return "\n".join(lines) + "\n"


def _pct(share: float | None) -> str:
    return "" if share is None else f"{round(share * 100)}%"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}s"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _pending(state: str | None) -> str:
    return "" if state in (None, "done", "skipped") else f"({state})"


def _hms(seconds: int | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"
