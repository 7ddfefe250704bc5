"""Digits as people type them: Persian and Arabic-Indic digits are read as ASCII digits.

Everything that takes digits from a person (a CSV import, a command-line argument, a
filter) passes them through ``to_ascii`` first, so ``۱۲۳۴`` and ``1234`` are the same
PIN, customer number or phone number. What is still not an ASCII digit after that (a
superscript, a fullwidth or Devanagari digit, which Python's ``\\d`` and ``isdigit``
also accept) is not a digit for fsapp.
"""

from __future__ import annotations

import re
import unicodedata

_TABLE = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_ASCII_DIGITS = re.compile(r"[0-9]+")


def to_ascii(text: str) -> str:
    """``text`` with Persian (U+06F0..U+06F9) and Arabic-Indic (U+0660..U+0669) digits as 0-9."""
    return text.translate(_TABLE)


def only_ascii_digits(text: str) -> bool:
    """Whether ``text`` is one or more of 0-9 and nothing else."""
    return _ASCII_DIGITS.fullmatch(text) is not None


def foreign(text: str) -> str:
    """The first character of ``text`` that is a digit to Unicode but not 0-9 once read, or ""."""
    for ch in to_ascii(text):
        if not "0" <= ch <= "9" and (ch.isdigit() or unicodedata.category(ch) == "Nd"):
            return ch
    return ""


def parse_int(text: str) -> int:
    """An integer written with ASCII, Persian or Arabic-Indic digits (and an optional minus)."""
    value = to_ascii(text.strip())
    if not re.fullmatch(r"-?[0-9]+", value):
        raise ValueError("must be an integer written with the digits 0-9")
    return int(value)
