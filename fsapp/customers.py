"""``fsapp customers``: the embedded customer directory (the default CRM)."""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsapp import digits, flow, phones, pins

HEADER = ["id", "number", "name", "type", "phones", "mobile", "pin", "sales", "support", "other", "debt"]


class ImportError_(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_csv(text: str, *, source: str = "customers.csv", region: str = "IR") -> list[dict[str, Any]]:
    """Validate a whole file; raise with every bad row (by line number) or return all rows."""
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportError_([f"{source}:1: empty file, expected header {','.join(HEADER)}"]) from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    extra = [h for h in header if h not in HEADER]
    missing = [h for h in HEADER if h not in header]
    if extra or missing:
        msg = []
        if extra:
            msg.append(f"unknown column(s) {', '.join(extra)}")
        if missing:
            msg.append(f"missing column(s) {', '.join(missing)}")
        raise ImportError_([f"{source}:1: {'; '.join(msg)} (header must be {','.join(HEADER)})"])
    rows: list[dict[str, Any]] = []
    seen_ids: dict[str, int] = {}
    seen_numbers: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"{source}:{line}: {len(values)} fields, expected {len(header)}")
            continue
        raw = {k: v.strip() for k, v in zip(header, values, strict=True)}
        row, errs = validate_row(raw, region)
        for e in errs:
            problems.append(f"{source}:{line}: {e}")
        if errs:
            continue
        if row["id"] in seen_ids:
            problems.append(f"{source}:{line}: id {row['id']!r} repeats line {seen_ids[row['id']]}")
            continue
        if row["number"] in seen_numbers:
            problems.append(f"{source}:{line}: number {row['number']!r} repeats line {seen_numbers[row['number']]}")
            continue
        seen_ids[row["id"]] = line
        seen_numbers[row["number"]] = line
        rows.append(row)
    if problems:
        raise ImportError_(problems)
    return rows


def validate_row(raw: dict[str, str], region: str) -> tuple[dict[str, Any], list[str]]:
    errs: list[str] = []
    row: dict[str, Any] = {k: raw.get(k, "") for k in HEADER}
    if not raw.get("id"):
        errs.append("id: missing")
    row["number"] = digits.to_ascii(raw.get("number", ""))
    if not row["number"]:
        errs.append("number: missing")
    elif digits.foreign(row["number"]):
        errs.append(f"number: {digits.foreign(row['number'])!r} is not a digit 0-9 (nor Persian, Arabic-Indic)")
    phone_list = []
    for p in filter(None, (x.strip() for x in raw.get("phones", "").split(";"))):
        n = phones.normalize(p, region)
        if n is None:
            errs.append(f"phones: not a phone number: {p!r}")
        else:
            phone_list.append(n)
    row["phones"] = phone_list
    if raw.get("mobile"):
        m = phones.normalize(raw["mobile"], region)
        if m is None or not phones.is_mobile(m, region):
            errs.append(f"mobile: not a mobile number: {raw['mobile']!r}")
        else:
            row["mobile"] = m
    if raw.get("pin"):
        try:
            row["pin"] = pins.parse_pin(raw["pin"])
        except ValueError as exc:
            errs.append(f"pin: {exc}")  # the value is never echoed
    for role in ("sales", "support", "other"):
        if raw.get(role) and not flow.EXT_RE.fullmatch(raw[role]):
            errs.append(f"{role}: not an extension: {raw[role]!r}")
    try:
        row["debt"] = digits.parse_int(raw.get("debt") or "0")
    except ValueError:
        errs.append(f"debt: must be an integer amount in rial (digits 0-9), not {raw.get('debt')!r}")
    return row, errs


def save_rows(store: Any, rows: list[dict[str, Any]]) -> None:
    with store.db.transaction():
        for row in rows:
            record = dict(row)
            pin = record.pop("pin", "")
            record["pin_hash"] = pins.hash_pin(pin) if pin else ""
            store.upsert_customer(record, record.pop("phones"))


def add_cli(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("customers", help="manage the embedded customer directory")
    csub = p.add_subparsers(dest="customers_command", required=True, metavar="ACTION")
    i = csub.add_parser("import", help="import or update customers from a UTF-8 CSV file")
    config_arg(i)
    i.add_argument("file")
    a = csub.add_parser("add", help="add or update one customer")
    config_arg(a)
    for name in ("id", "number"):
        a.add_argument(f"--{name}", required=True)
    for name in ("name", "type", "mobile", "sales", "support", "other"):
        a.add_argument(f"--{name}", default="")
    a.add_argument("--phone", action="append", default=[], help="a phone number (repeat for several)")
    a.add_argument("--debt", default="0")
    s = csub.add_parser("set-pin", help="set a customer's phone PIN (read from the terminal or stdin)")
    config_arg(s)
    s.add_argument("id")
    ls = csub.add_parser("list", help="list the directory (PINs are never shown)")
    config_arg(ls)
    ls.add_argument("--format", default="table", choices=("table", "csv", "json"))
    p.set_defaults(handler=cmd_customers)


def cmd_customers(args: argparse.Namespace) -> int:
    from fsapp.cli import UsageError, load_config
    from fsapp.store import open_store

    cfg = load_config(args, check_files=False)
    region = cfg.crm.region
    store = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size)
    action = args.customers_command
    if action == "import":
        path = Path(args.file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{args.file}: cannot read as UTF-8: {exc}") from None
        try:
            rows = parse_csv(text, source=args.file, region=region)
        except ImportError_ as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            print(f"{args.file}: nothing imported ({len(exc.problems)} problems)", file=sys.stderr)
            return 2
        save_rows(store, rows)
        print(f"{args.file}: {len(rows)} customers imported")
        return 0
    if action == "add":
        raw = {k: str(getattr(args, k, "") or "") for k in HEADER if k not in ("phones", "pin")}
        raw["phones"] = ";".join(args.phone)
        raw["pin"] = ""
        row, errs = validate_row(raw, region)
        if errs:
            raise UsageError("; ".join("--" + e for e in errs))
        save_rows(store, [row])
        print(f"customer {row['id']} saved")
        return 0
    if action == "set-pin":
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
        return 0
    rows = store.customer_rows()
    out = [{k: (";".join(r["phones"]) if k == "phones" else r[k]) for k in HEADER if k != "pin"}
           | {"pin": "set" if r["pin_hash"] else ""} for r in rows]
    if args.format == "json":
        print(json.dumps(out, ensure_ascii=False, indent=1))
    elif args.format == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=[*HEADER], lineterminator="\n")
        w.writeheader()
        w.writerows(out)
    else:
        print(f"{'id':10} {'number':10} {'name':20} {'type':9} {'phones':28} {'pin':3} {'sales':6} "
              f"{'support':7} {'debt':>12}")
        for r in out:
            print(f"{r['id']:10} {r['number']:10} {r['name'][:20]:20} {r['type'][:9]:9} {r['phones'][:28]:28} "
                  f"{r['pin']:3} {r['sales']:6} {r['support']:7} {r['debt']:>12,}")
        print(f"{len(out)} customers")
    return 0
