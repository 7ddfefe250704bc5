"""``fsapp customers import|add|set-pin|list``: manage the embedded customer directory."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from fsapp import customers, pins, render
from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_OK, UsageError, add_actions, format_arg, open_store

NAME = "customers"
HELP = "manage the embedded customer directory"


def _import_arguments(i: argparse.ArgumentParser) -> None:
    i.add_argument("file")


def _add_arguments(a: argparse.ArgumentParser) -> None:
    for name in ("id", "number"):
        a.add_argument(f"--{name}", required=True)
    for name in ("name", "type", "mobile", "sales", "support", "other"):
        a.add_argument(f"--{name}", default="")
    a.add_argument("--phone", action="append", default=[], help="a phone number (repeat for several)")
    a.add_argument("--debt", default="0")


def _set_pin_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("id")


def _list_arguments(ls: argparse.ArgumentParser) -> None:
    format_arg(ls)


def _import(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8-sig")  # a BOM (Excel, --bom) is no part of the header
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{args.file}: cannot read as UTF-8: {exc}") from None
    try:
        items = customers.read_csv(text, source=args.file, region=cfg.crm.region)
        conflicts = customers.directory_conflicts(store, items)
        if conflicts:
            raise customers.ImportError_([f"{args.file}:{line}: {msg}" for line, msg in conflicts])
    except customers.ImportError_ as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"{args.file}: nothing imported ({len(exc.problems)} problems)", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = [row for _line, row in items]
    customers.save_rows(store, rows)
    print(f"{args.file}: {len(rows)} customers imported")
    return EXIT_OK


def _add(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    raw = {k: str(getattr(args, k, "") or "") for k in customers.HEADER if k not in ("phones", "pin")}
    raw["phones"] = ";".join(args.phone)
    raw["pin"] = ""
    row, errs = customers.validate_row(raw, cfg.crm.region)
    errs += [msg for _line, msg in customers.directory_conflicts(store, [(0, row)])]
    if errs:
        raise UsageError("; ".join("--" + e.replace("phones:", "phone:", 1) for e in errs))
    customers.save_rows(store, [row])
    print(f"customer {row['id']} saved")
    return EXIT_OK


def _set_pin(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    if sys.stdin.isatty():
        pin = getpass.getpass("PIN: ")
        if getpass.getpass("PIN again: ") != pin:
            raise UsageError("the two PINs differ")
    else:
        pin = sys.stdin.readline().strip()
    try:
        pin = pins.parse_pin(pin)
    except ValueError as exc:
        raise UsageError(f"PIN: {exc}") from None
    if not store.set_pin_hash(args.id, pins.hash_pin(pin)):
        raise UsageError(f"no customer with id {args.id!r}")
    print(f"PIN set for {args.id}")
    return EXIT_OK


def _list(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    rows = customers.listing(store)
    render.write(sys.stdout, customers.listing_out(rows, args.format), args.format, bom=args.bom)
    for phone, ids in customers.shared_phones(rows).items():
        print(f"warning: phone {phone} is held by {', '.join(ids)}: caller ID identifies only {ids[0]}",
              file=sys.stderr)
    return EXIT_OK


ACTIONS = {
    "import": ("import or update customers from a UTF-8 CSV file", _import_arguments, _import),
    "add": ("add or update one customer", _add_arguments, _add),
    "set-pin": ("set a customer's phone PIN (read from the terminal or stdin)", _set_pin_arguments, _set_pin),
    "list": ("list the directory (PINs are never shown)", _list_arguments, _list),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_actions(p, "customers_command", ACTIONS)


def run(args: argparse.Namespace) -> int:
    cfg, store = open_store(args)
    return ACTIONS[args.customers_command][2](args, cfg, store)
