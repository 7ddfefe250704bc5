"""``fsapp ledger charges|outbox|reconcile``: charges, debts and the CRM outbox; reconcile meters."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from fsapp import instants, journal, ledger, outbox, render
from fsapp.commands.base import EXIT_OK, config_arg, format_arg, open_store

NAME = "ledger"
HELP = "charges, debts and the CRM outbox; reconcile meters"

CHARGE_FIELDS = ["call_uuid", "customer_id", "module", "talk_seconds", "units", "amount", "created_at", "debt"]
OUTBOX_FIELDS = ["id", "kind", "key", "state", "attempts", "amount", "invoice_type", "invoice_search_field",
                 "last_error"]
PAYLOAD_FIELDS = ("amount", "invoice_type", "invoice_search_field")


def _charges(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    clock = journal.Clock.of(cfg.journal)
    rows = [_charge(r, clock, args.format) for r in store.charges(args.customer)]
    fields = CHARGE_FIELDS + ["jalali_date"] if clock.jalali and args.format != "table" else CHARGE_FIELDS
    render.write(sys.stdout, render.render(rows, [render.Column(f) for f in fields], args.format), args.format,
                 bom=args.bom)
    if args.format == "table":
        total = sum(r["amount"] for r in rows)
        pending, _age = store.outbox_stats(time.time())
        print(f"{len(rows)} charges, {total:,} rial; {pending} CRM writes pending")
    return EXIT_OK


def _charge(r: dict[str, Any], clock: journal.Clock, fmt: str) -> dict[str, Any]:
    """A charge as shown: its time in [journal] timezone, as `fsapp calls` shows the journal's.

    JSON and CSV get the instant with its offset (and ``jalali_date`` with the Jalali
    calendar); the table the day in the calendar and the time of day."""
    row = {**{k: r.get(k) for k in CHARGE_FIELDS if k != "debt"}, "debt": r["debt_after"]}
    when = instants.local(r["created_at"], clock.tz)
    if fmt == "table":
        row["created_at"] = f"{clock.day(when)} {when:%H:%M:%S}" if when else ""
        return row
    row["created_at"] = instants.show(r["created_at"], clock.tz)
    if clock.jalali:
        row["jalali_date"] = clock.day(when)
    return row


def _outbox(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    view = [{"id": r["id"], "kind": r["kind"], "key": r["idempotency_key"],
             "state": outbox.state(r), "attempts": r["attempts"],
             "last_error": r["last_error"], **{k: r["payload"].get(k, "") for k in PAYLOAD_FIELDS}}
            for r in store.outbox_rows()]
    render.write(sys.stdout, render.render(view, [render.Column(f) for f in OUTBOX_FIELDS], args.format), args.format,
                 bom=args.bom)
    return EXIT_OK


def _reconcile(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    made = ledger.reconcile(store, heartbeat_seconds=cfg.billing.meter_heartbeat_seconds, me="")
    for c in made:
        print(f"{c['call_uuid']} {c['module']}: {c['talk_seconds']} s, {c['amount']:,} rial")
    print(f"{len(made)} open meters reconciled")
    return EXIT_OK


ACTIONS = {"charges": _charges, "outbox": _outbox, "reconcile": _reconcile}


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)
    p.add_argument("action", nargs="?", default="charges", choices=tuple(ACTIONS))
    p.add_argument("--customer", default="")
    format_arg(p)


def run(args: argparse.Namespace) -> int:
    cfg, store = open_store(args)
    return ACTIONS[args.action](args, cfg, store)
