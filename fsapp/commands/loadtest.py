"""``fsapp loadtest``: many simulated calls against a daemon in another process."""

from __future__ import annotations

import argparse
import json

from fsapp.commands.base import EXIT_OK, EXIT_RUNTIME

NAME = "loadtest"
HELP = "many simulated calls against a daemon in another process"
GEVENT = True
QUIET = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fsapp.loadtest import SCENARIOS

    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rate", type=float, default=0.0, help="new calls per second (default: as fast as possible)")
    p.add_argument("--scenario", default="full", choices=sorted(SCENARIOS))
    p.add_argument("--connect", default="", help="HOST:PORT of a running daemon instead of starting one")
    p.add_argument("--hold", type=int, default=0, help="instead: hold this many calls open in a bridge, report RSS")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    import resource

    from fsapp import loadtest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * max(args.concurrency, args.hold) + 1024))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if args.hold:
        out = loadtest.held_memory(args.hold)
    else:
        out = loadtest.run(args.calls, args.concurrency, args.rate, args.scenario, connect=args.connect)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:24} {value}")
    return EXIT_OK if not out.get("errors") else EXIT_RUNTIME
