"""Rows out as a table, CSV or JSON: the one renderer every listing command uses.

The table sizes columns by display width (Persian letters, the zero-width
non-joiner, wide East Asian characters), cuts long values with an ellipsis and
shows control characters escaped, so a caller ID cannot move the cursor or
break a line. CSV cells that a spreadsheet would run as a formula (starting
with ``=``, ``+``, ``-``, ``@``, tab or carriage return) get a leading single
quote (the OWASP CSV-injection rule); JSON stays exact.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wcwidth import wcswidth, wcwidth

FORMATS = ("table", "csv", "json")
BOM = "\ufeff"
ELLIPSIS = "…"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# C0/C1 controls, DEL, and the bidirectional overrides and isolates; ZWNJ/ZWJ stay (Persian needs them)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Column:
    """One table column: ``width`` 0 sizes it to its widest cell; ``cut`` False lets a value overflow."""

    key: str
    width: int = 0
    align: str = "<"
    cut: bool = True
    title: str = ""

    @property
    def head(self) -> str:
        return self.title or self.key


def text(value: Any) -> str:
    """A value as a table shows it: integers with thousands separators, None empty, controls escaped."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    s = "" if value is None else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)


def width(s: str) -> int:
    w = wcswidth(s)
    return w if w >= 0 else len(s)


def fit(s: str, size: int) -> str:
    """``s`` cut to at most ``size`` display columns, ending in an ellipsis when cut."""
    if width(s) <= size:
        return s
    out, used = [], 0
    for ch in s:
        w = max(wcwidth(ch), 0)
        if used + w > size - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + ELLIPSIS


def pad(s: str, size: int, align: str = "<") -> str:
    gap = " " * max(0, size - width(s))
    return gap + s if align == ">" else s + gap


def table_lines(rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, sep: str = "  ") -> list[str]:
    """The header line, then one line per row."""
    cells = [[text(r.get(c.key)) for c in columns] for r in rows]
    sizes = [c.width or max([width(c.head)] + [width(line[i]) for line in cells])
             for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return sep.join(pad(fit(v, n) if c.cut else v, n, c.align)
                        for v, n, c in zip(values, sizes, columns, strict=True))

    return [line([c.head for c in columns])] + [line(values) for values in cells]


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will show, not run: formula starts get a leading quote."""
    if value is None:
        return ""
    s = str(value)
    return "'" + s if s.startswith(FORMULA_START) else value


def unquote_cell(s: str) -> str:
    """A cell ``safe_cell`` neutralised, read back: ``'+98912...`` is ``+98912...`` again."""
    return s[1:] if s.startswith("'") and s[1:].startswith(FORMULA_START) else s


def csv_chunks(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> Iterator[str]:
    """The CSV text piece by piece (the header, then one line per row), for a streamed export."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: safe_cell(r.get(k)) for k in fields})
        yield _take(buf)
    yield _take(buf)


def _take(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text


def to_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    return "".join(csv_chunks(rows, fields))


def to_json(rows: Any) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"


def render(rows: list[dict[str, Any]], columns: Sequence[Column], fmt: str, *, sep: str = "  ") -> str:
    """``rows`` in ``fmt`` (table, csv or json); csv and json carry every column's key."""
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(rows, [c.key for c in columns])
    return "\n".join(table_lines(rows, columns, sep=sep)) + "\n"


def write(out: Any, text: str, fmt: str, *, bom: bool | None = None) -> None:
    """``text`` to ``out``. CSV starts with a UTF-8 byte-order mark when ``bom`` is True, or,
    when it is None, when ``out`` is a regular file (``> calls.csv``): without one Excel
    reads UTF-8 as the local code page and shows Persian as mojibake. A pipe gets none."""
    if fmt == "csv" and (bom if bom is not None else _regular_file(out)):
        text = BOM + text
    out.write(text)


def _regular_file(out: Any) -> bool:
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
