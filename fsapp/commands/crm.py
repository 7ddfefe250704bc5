"""``fsapp crm probe``: log in to the configured CRM and run one read-only lookup.

For an operator to try a real CRM (Payamgostar, the HTTP CRM) before it takes
calls: the login and a ``find_by_phone`` (and ``find_by_number`` when asked),
each with its time; nothing is written to the CRM. Exit 0 when every step
worked, 1 when one failed (the line names the step and the CRM's answer).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from fsapp.commands.base import EXIT_OK, EXIT_RUNTIME, UsageError, add_actions, load_config

NAME = "crm"
HELP = "try the configured CRM: log in and run a read-only lookup"
GEVENT = True
QUIET = True


def _probe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phone", default="09120000000", help="the phone number to look up (default 09120000000)")
    p.add_argument("--customer-number", default="", help="also look up this customer number")


def _probe(args: argparse.Namespace) -> int:
    from fsapp.app import make_crm
    from fsapp.hooks import NullMetrics
    from fsapp.store import open_store

    cfg = load_config(args, check_files=False)
    store = open_store(cfg.storage_url, pool_size=1) if cfg.crm.kind == "local" else None
    try:
        crm = make_crm(cfg, store, NullMetrics())  # type: ignore[arg-type]
    except ValueError as exc:
        raise UsageError(f"{cfg.file}:{exc}") from None
    print(f"crm {cfg.crm.kind}{' at ' + cfg.crm.url if cfg.crm.url else ''}")
    steps: list[tuple[str, Callable[[], Any]]] = [("login", crm.ping), ("find_by_phone " + args.phone,
                                                                       lambda: crm.find_by_phone(args.phone))]
    if args.customer_number:
        steps.append(("find_by_number " + args.customer_number, lambda: crm.find_by_number(args.customer_number)))
    ok = all(_step(name, run) for name, run in steps)
    for closer in (getattr(crm, "close", None), getattr(store, "close", None)):
        if closer is not None:
            closer()
    return EXIT_OK if ok else EXIT_RUNTIME


def _step(name: str, run: Callable[[], Any]) -> bool:
    """Run one probe step and print what it came to: ``ok``, or ``FAILED`` and why."""
    from fsapp.crm import CRMError

    t0 = time.monotonic()
    try:
        result = run()
    except CRMError as exc:
        print(f"  {name}: FAILED ({exc.reason}) in {time.monotonic() - t0:.2f} s", file=sys.stderr)
        return False
    took = f"in {time.monotonic() - t0:.2f} s"
    if result is False:
        print(f"  {name}: FAILED (the CRM refused the login or did not answer) {took}", file=sys.stderr)
        return False
    if result is None:
        print(f"  {name}: ok, no such customer {took}")
    elif result is True:
        print(f"  {name}: ok {took}")
    else:
        print(f"  {name}: ok, customer {result.id} ({result.name or 'no name'}) {took}")
    return True


ACTIONS = {"probe": ("log in and run a read-only lookup (nothing is written)", _probe_arguments, _probe)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_actions(p, "crm_command", ACTIONS)


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.crm_command][2](args)
