"""The embedded customer directory (the default CRM): CSV import, validation, listing."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fsapp import billing, digits, flow, phones, pins
from fsapp.render import Column, table_lines, to_csv, to_json, unquote_cell

HEADER = ["id", "number", "name", "type", "phones", "mobile", "pin", "sales", "support", "other", "debt"]
MAX_FIELD = 1000  # characters in one cell


class ImportError_(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_csv(text: str, *, source: str = "customers.csv", region: str = "IR") -> list[dict[str, Any]]:
    """Validate a whole file; raise with every bad row (by line number) or return all rows."""
    return [row for _line, row in read_csv(text, source=source, region=region)]


@contextmanager
def _field_limit(n: int) -> Iterator[None]:
    """The csv module's cell limit raised to ``n`` while one file is read: cells are measured
    here (MAX_FIELD), so a long one is refused with its line and column."""
    before = csv.field_size_limit()
    csv.field_size_limit(max(n, before))
    try:
        yield
    finally:
        csv.field_size_limit(before)


def read_csv(text: str, *, source: str = "customers.csv", region: str = "IR") -> list[tuple[int, dict[str, Any]]]:
    """``parse_csv`` with each row's line number: (line, row)."""
    with _field_limit(len(text) + 1):
        return _read_csv(text, source, region)


def _rows(reader: Any, source: str, problems: list[str]) -> Iterator[list[str]]:
    """The reader's rows; a file csv cannot read (a NUL byte, ...) is one problem naming its line."""
    try:
        yield from reader
    except csv.Error as exc:
        problems.append(f"{source}:{reader.line_num}: not CSV: {exc}")


def _read_csv(text: str, source: str, region: str) -> list[tuple[int, dict[str, Any]]]:
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    rows_in = _rows(reader, source, problems)
    header = next(rows_in, None)
    if header is None:
        problems = problems or [f"{source}:1: empty file, expected header {','.join(HEADER)}"]
        raise ImportError_(problems)
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
    rows: list[tuple[int, dict[str, Any]]] = []
    seen_ids: dict[str, int] = {}
    seen_numbers: dict[str, int] = {}
    seen_phones: dict[str, tuple[str, int]] = {}
    for values in rows_in:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"{source}:{line}: {len(values)} fields, expected {len(header)}")
            continue
        long = [f"{k}: {len(v)} characters, at most {MAX_FIELD}" for k, v in zip(header, values, strict=True)
                if len(v) > MAX_FIELD]
        if long:
            problems.extend(f"{source}:{line}: {e}" for e in long)
            continue
        raw = {k: unquote_cell(v.strip()) for k, v in zip(header, values, strict=True)}
        row, errs = validate_row(raw, region)
        errs += _shared_phones(row, line, seen_phones)
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
        rows.append((line, row))
    if problems:
        raise ImportError_(problems)
    return rows


SHARED_PHONE = "a phone names one customer: caller ID could not tell them apart"


def _shared_phones(row: dict[str, Any], line: int, seen: dict[str, tuple[str, int]]) -> list[str]:
    """A phone an earlier row of another customer already has: refused (both would be one caller)."""
    errs = []
    for p in row["phones"]:
        owner, at = seen.setdefault(p, (row["id"], line))
        if owner != row["id"]:
            errs.append(f"phones: {p} is also customer {owner}'s (line {at}); {SHARED_PHONE}")
    return errs


def shared_phones(listed: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Phones more than one customer of a listing holds (a directory imported before the rule) -> their ids."""
    owners: dict[str, list[str]] = {}
    for row in listed:
        for p in filter(None, row["phones"].split(";")):
            owners.setdefault(p, []).append(row["id"])
    return {p: ids for p, ids in owners.items() if len(ids) > 1}


def directory_conflicts(store: Any, items: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, str]]:
    """(line, "column: message") for each number or phone the directory gives another customer.

    Customers the rows themselves update are left out: their old numbers and phones go.
    """
    ids = {row["id"] for _line, row in items}
    numbers: dict[str, str] = {}
    held: dict[str, str] = {}
    for c in store.customer_rows():
        if c["id"] not in ids:
            numbers[c["number"]] = c["id"]
            held.update(dict.fromkeys(c["phones"], c["id"]))
    out = []
    for line, row in items:
        if row["number"] in numbers:
            out.append((line, f"number: {row['number']!r} is already customer {numbers[row['number']]}'s"))
        out.extend((line, f"phones: {p} is already customer {held[p]}'s; {SHARED_PHONE}")
                   for p in row["phones"] if p in held)
    return out


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
    else:
        if abs(row["debt"]) > billing.MAX_RIAL:
            errs.append(f"debt: must be from -{billing.MAX_RIAL} to {billing.MAX_RIAL} rial, not {raw.get('debt')}")
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
