"""``fsapp calls``: the call journal, filtered, sorted, grouped and exported (seed 004)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from fsapp import journal, render
from fsapp.analysis.flags import NAMES as FLAG_NAMES
from fsapp.commands.base import EXIT_OK, UsageError, config_arg, open_store

NAME = "calls"
HELP = "the call journal: filter, sort, group, export"


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)
    p.add_argument("--from", dest="date_from", type=_date, default=None, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", type=_date, default=None, help="last day, YYYY-MM-DD (inclusive)")
    p.add_argument("--customer", default="", help="one customer's history")
    p.add_argument("--status", default="", choices=("",) + journal.STATUSES)
    p.add_argument("--direction", default="", choices=("",) + journal.DIRECTIONS,
                   help="inbound (from outside), outbound (an agent calling out), local (extension to extension)")
    p.add_argument("--extension", default="", help="the agent's extension: calls it answered or made")
    p.add_argument("--missed-cause", default="", choices=("",) + journal.MISSED_CAUSES,
                   help="missed calls of this cause")
    p.add_argument("--min-mos", type=_mos, default=None, help="calls whose every measured side has MOS >= this")
    p.add_argument("--max-mos", type=_mos, default=None, help="calls with a measured side of MOS <= this (poor audio)")
    p.add_argument("--too-long", action="store_true", help="only calls marked too long")
    p.add_argument("--number", default="", help="caller or called number contains, or extension equals")
    p.add_argument("--flag", default="", choices=("",) + FLAG_NAMES, help="only calls the analysis flagged so")
    p.add_argument("--text", default="", metavar="WORDS", help="only calls whose transcript has every word")
    p.add_argument("--sort", default="started_at", help="column to sort by (default started_at)")
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument("--limit", type=int, default=0, help="at most this many rows (days, with --group-by date)")
    p.add_argument("--group-by", default="", choices=("", "date"))
    p.add_argument("--format", default="table", choices=render.FORMATS)
    p.add_argument("--mark-downloaded", metavar="UUID", default="", help="set the recording's downloaded mark")


def run(args: argparse.Namespace) -> int:
    from fsapp.store import CALL_FIELDS

    _cfg, store = open_store(args)
    if args.mark_downloaded:
        if not store.mark_downloaded(args.mark_downloaded):
            raise UsageError(f"--mark-downloaded: no call with uuid {args.mark_downloaded!r}")
        print(f"{args.mark_downloaded}: marked downloaded")
        return EXIT_OK
    if args.sort not in CALL_FIELDS:
        raise UsageError(f"--sort: unknown column {args.sort!r} (one of {', '.join(journal.EXPORT_FIELDS)})")
    filters = {"date_from": args.date_from or "", "date_to": args.date_to or "", "customer": args.customer,
               "status": args.status, "direction": args.direction, "too_long": args.too_long,
               "number": args.number, "flag": args.flag, "text": args.text, "extension": args.extension,
               "missed_cause": args.missed_cause, "min_mos": args.min_mos, "max_mos": args.max_mos}
    out = sys.stdout
    if args.group_by == "date":
        out.write(journal.groups_out(store.calls_by_day(limit=args.limit, **filters), args.format))
        return EXIT_OK
    rows = store.list_calls(order=args.sort, descending=args.desc, limit=args.limit, **filters)
    out.write(journal.rows_out(rows, args.format, colour=out.isatty()))
    return EXIT_OK
