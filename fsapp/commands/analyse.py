"""``fsapp analyse``: run the analysis of recorded calls by hand, or as the queue's service.

    fsapp analyse --file REC.wav [--customer left|right] [--svg OUT.svg]   any two-channel WAV, JSON out
    fsapp analyse UUID [--svg OUT.svg]    one journaled call, again; its stored figures as JSON
    fsapp analyse --pending [--follow]    the queue: empty it once, or keep serving it
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fsapp.commands.base import EXIT_OK, EXIT_RUNTIME, UsageError, config_arg, load_config, open_store

NAME = "analyse"
HELP = "analyse recorded calls: talk, silence, overtalk, line quality, flags"


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)
    p.add_argument("uuid", nargs="?", default="", help="a journaled call to analyse (again)")
    p.add_argument("--file", default="", help="analyse this two-channel WAV (no journal row) and print JSON")
    p.add_argument("--customer", default="left", choices=("left", "right"), help="the customer's channel (--file)")
    p.add_argument("--pending", action="store_true", help="analyse every queued call")
    p.add_argument("--follow", action="store_true", help="with --pending: keep serving the queue (a service)")
    p.add_argument("--parent", type=int, default=0, help=argparse.SUPPRESS)  # end when this process is gone
    p.add_argument("--svg", default="", metavar="OUT", help="also write the call's timeline as SVG")


def run(args: argparse.Namespace) -> int:
    chosen = [name for name, on in (("UUID", args.uuid), ("--file", args.file), ("--pending", args.pending)) if on]
    if len(chosen) != 1:
        raise UsageError("give exactly one of UUID, --file REC.wav or --pending"
                         + (f" (not {' and '.join(chosen)})" if chosen else ""))
    if args.follow and not args.pending:
        raise UsageError("--follow goes with --pending")
    if args.svg and args.pending:
        raise UsageError("--svg goes with UUID or --file")
    handler = _file if args.file else _call if args.uuid else _pending
    return handler(args)


def _file(args: argparse.Namespace) -> int:
    from fsapp.analysis import vad, worker

    cfg = load_config(args, check_files=False)
    try:
        figures = worker.analyse_recording(args.file, args.customer, cfg.analysis)
    except vad.RecordingError as exc:
        raise UsageError(f"--file: {exc}") from None
    _print({"file": args.file, "customer_channel": args.customer, **figures})
    _svg(args, figures)
    return EXIT_OK


def _call(args: argparse.Namespace) -> int:
    import time

    from fsapp.analysis.worker import Worker
    from fsapp.log import get

    cfg, store = open_store(args)
    try:
        call = store.get_call(args.uuid)
        if call is None:
            raise UsageError(f"no call with uuid {args.uuid!r}")
        store.analysis_requeue(args.uuid, call["recording"], call.get("recording_customer", ""), time.time())
        Worker(cfg, store, get("fsapp")).run_once(args.uuid)
        row = store.analysis_get(args.uuid)
    finally:
        store.close()
    assert row is not None
    _print(_shown(row))
    _svg(args, row)
    return EXIT_OK if row["state"] in ("done", "skipped") else EXIT_RUNTIME


def _pending(args: argparse.Namespace) -> int:
    from fsapp.analysis.worker import Worker, lower_priority
    from fsapp.log import get
    from fsapp.store import StorageError
    from fsapp.store import open_store as open_db

    cfg = load_config(args, check_files=False)
    try:
        store = open_db(cfg.storage_url, pool_size=1)
    except StorageError as exc:
        print(f"{cfg.file}:storage.url: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    lower_priority(cfg.analysis.nice)
    worker = Worker(cfg, store, get("fsapp"))
    try:
        if args.follow:
            worker.follow(parent=args.parent)
            return EXIT_OK
        done = worker.drain()
        left = store.analysis_pending()
    finally:
        store.close()
    print(f"{done} calls analysed, {left} still queued")
    return EXIT_OK


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("locked_by", "locked_until", "transcript_segments")}
    if row.get("transcript_segments"):
        out["transcript_segments"] = json.loads(row["transcript_segments"])
    return out


def _print(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def _svg(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    if not args.svg:
        return
    from fsapp.analysis.svg import timeline

    try:
        Path(args.svg).write_text(timeline(figures), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--svg: cannot write {args.svg}: {exc.strerror or exc}") from None
