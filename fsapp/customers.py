"""The embedded customer directory (the default CRM): CSV import, validation, listing."""

from __future__ import annotations

import csv
import io
from typing import Any

from fsapp import digits, flow, phones, pins
from fsapp.render import Column, table_lines, to_csv, to_json, unquote_cell

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
        raw = {k: unquote_cell(v.strip()) for k, v in zip(header, values, strict=True)}
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
    with store.transaction():
        for row in rows:
            record = dict(row)
            pin = record.pop("pin", "")
            record["pin_hash"] = pins.hash_pin(pin) if pin else ""
            store.upsert_customer(record, record.pop("phones"))


LIST_COLUMNS = [
    Column("id", 10, cut=False), Column("number", 10, cut=False), Column("name", 20), Column("type", 9),
    Column("phones", 28), Column("pin", 3, cut=False), Column("sales", 6, cut=False),
    Column("support", 7, cut=False), Column("debt", 12, ">", cut=False),
]


def listing(store: Any) -> list[dict[str, Any]]:
    """The directory as rows of HEADER's fields; a PIN shows only as "set" or ""."""
    return [{k: (";".join(r["phones"]) if k == "phones" else r[k]) for k in HEADER if k != "pin"}
            | {"pin": "set" if r["pin_hash"] else ""} for r in store.customer_rows()]


def listing_out(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(rows, HEADER)
    return "\n".join([*table_lines(rows, LIST_COLUMNS, sep=" "), f"{len(rows)} customers"]) + "\n"
