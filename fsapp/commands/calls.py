"""``fsapp calls``: the call journal, filtered, sorted, grouped and exported (seed 004)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from fsapp import instants, journal, phones, render
from fsapp.analysis.flags import NAMES as FLAG_NAMES
from fsapp.commands.base import EXIT_OK, UsageError, config_arg, format_arg, open_store

NAME = "calls"
HELP = "the call journal: filter, sort, group, export"


MAX_LIMIT = 1_000_000_000


def _date(text: str) -> dt.date:
    try:
        return instants.day_of(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD, Jalali for a year before 1700): {text!r}") from None


def _mos(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 1.0 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f"not a MOS between 1 and 5: {text!r}")
    return value


def _last_day(text: str) -> dt.date | None:
    """``--to``: a date; the last day there is means no end at all (it has no next day)."""
    day = _date(text)
    return None if day == dt.date.max else day


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) to {MAX_LIMIT}, not {text}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)
    p.add_argument("--from", dest="date_from", type=_date, default=None,
                   help="first day, YYYY-MM-DD in [journal] timezone (a year before 1700 is Jalali)")
    p.add_argument("--to", dest="date_to", type=_last_day, default=None, help="last day, YYYY-MM-DD (inclusive)")
    p.add_argument("--customer", default="", help="one customer's history")
    p.add_argument("--status", default="", choices=("",) + journal.STATUSES)
    p.add_argument("--direction", default="", choices=("",) + journal.DIRECTIONS,
                   help="inbound (from outside), outbound (an agent calling out), local (extension to extension)")
    p.add_argument("--extension", default="", help="the agent's extension: calls it answered or made")
    p.add_argument("--missed-cause", default="", choices=("",) + journal.MISSED_CAUSES,
                   help="missed calls of this cause")
    p.add_argument("--min-mos", type=_mos, default=None, help="calls whose every measured side has MOS >= this")
    p.add_argument("--max-mos", type=_mos, default=None, help="calls with a measured side of MOS <= this (poor audio)")
    p.add_argument("--queue", default="", help="calls that went to this mod_callcenter queue (without @domain)")
    p.add_argument("--has-recording", dest="has_recording", action="store_const", const=True, default=None,
                   help="only calls with a recording")
    p.add_argument("--no-recording", dest="has_recording", action="store_const", const=False,
                   help="only calls without a recording")
    p.add_argument("--too-long", action="store_true", help="only calls marked too long")
    p.add_argument("--number", default="",
                   help="caller or called is this number in any written form (09.., +98.., 0098.., Persian digits),"
                        " or contains these digits, or extension equals")
    p.add_argument("--flag", default="", choices=("",) + FLAG_NAMES, help="only calls the analysis flagged so")
    p.add_argument("--text", default="", metavar="WORDS", help="only calls whose transcript has every word")
    p.add_argument("--sort", default="started_at", help="column to sort by (default started_at)")
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.add_argument("--limit", type=_limit, default=0, help="at most this many rows (days, with --group-by date)")
    p.add_argument("--group-by", default="", choices=("", "date"))
    format_arg(p)
    p.add_argument("--mark-downloaded", metavar="UUID", default="", help="set the recording's downloaded mark")


def run(args: argparse.Namespace) -> int:
    from fsapp.store import CALL_FIELDS

    cfg, store = open_store(args)
    if args.mark_downloaded:
        if not store.mark_downloaded(args.mark_downloaded):
            raise UsageError(f"--mark-downloaded: no call with uuid {args.mark_downloaded!r}")
        print(f"{args.mark_downloaded}: marked downloaded")
        return EXIT_OK
    if args.sort not in CALL_FIELDS:
        raise UsageError(f"--sort: unknown column {args.sort!r} (one of {', '.join(journal.EXPORT_FIELDS)})")
    clock = journal.Clock.of(cfg.journal)
    filters = {**_days(args.date_from, args.date_to, clock), "customer": args.customer,
               "status": args.status, "direction": args.direction, "too_long": args.too_long,
               "number": phones.search_key(args.number, cfg.crm.region), "flag": args.flag, "text": args.text,
               "extension": args.extension, "missed_cause": args.missed_cause, "min_mos": args.min_mos,
               "max_mos": args.max_mos, "queue": args.queue, "has_recording": args.has_recording}
    out = sys.stdout
    if args.group_by == "date":
        buckets = store.calls_by_day(width=journal.bucket_width(clock), **filters)
        text = journal.groups_out(journal.by_day(buckets, clock, limit=args.limit), args.format)
        render.write(out, text, args.format, bom=args.bom)
        return EXIT_OK
    rows = store.list_calls(order=args.sort, descending=args.desc, limit=args.limit, **filters)
    render.write(out, journal.rows_out(rows, args.format, colour=out.isatty(), clock=clock), args.format, bom=args.bom)
    return EXIT_OK


def _days(first: dt.date | None, last: dt.date | None, clock: journal.Clock) -> dict[str, str]:
    """--from/--to as the stored UTC instants of the days' bounds in the journal's zone."""
    return {"date_from": instants.day_start(first, clock.tz) if first else "",
            "date_to": instants.day_start(last + dt.timedelta(days=1), clock.tz) if last else ""}
