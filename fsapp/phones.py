"""Phone numbers in one comparable form, via the `phonenumbers` library.

`normalize` returns one of two canonical forms:

- E.164 (`+989121234567`) for a phone number: valid for its country, written
  internationally (`+` or the region's international prefix such as `00`) with a
  possible length, or a full-length national number. The last two keep numbers from
  ranges newer than the library's metadata comparable in every written form.
- Digits only (`1001`, `5551234`) for anything else made of 1 to 15 digits: internal
  extensions, short codes, local numbers without an area code. These are returned as
  dialled, separators removed, so the same extension always gives the same string.

Anything else (letters, control characters, punctuation other than the usual
separators, too many digits, an international number that cannot exist) is None.
Persian and Arabic-Indic digits are read as ASCII digits.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType
from phonenumbers.phonemetadata import PhoneMetadata

from fsapp import digits

_SEPARATORS = re.compile(r"[ \u00a0\-.()/]+")
_SHAPE = re.compile(r"\+?[0-9]{1,17}")
_MAX_INPUT = 40
_MAX_LOCAL_DIGITS = 15
_INTERNATIONAL_SOURCES = (
    phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_PLUS_SIGN,
    phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD,
)
_MOBILE_TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE)


def normalize(number: str, region: str = "IR") -> str | None:
    """`number` in E.164, or as bare digits for an extension, or None for garbage."""
    if not isinstance(number, str) or len(number) > _MAX_INPUT:
        return None
    text = _SEPARATORS.sub("", digits.to_ascii(number.strip()))
    if not _SHAPE.fullmatch(text):
        return None
    try:
        parsed = phonenumbers.parse(text, region, keep_raw_input=True)
    except NumberParseException:
        parsed = None
    if parsed is not None:
        e164 = phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
        if phonenumbers.is_valid_number(parsed):
            return e164
        if parsed.country_code_source in _INTERNATIONAL_SOURCES:
            return e164 if phonenumbers.is_possible_number(parsed) else None
        if _is_full_national_length(parsed):
            return e164
    if text.startswith("+") or len(text) > _MAX_LOCAL_DIGITS:
        return None
    return text


def search_key(number: str, region: str = "IR") -> str:
    """What a journal search looks for: a phone number's national significant number (in
    ``09121234567``, ``+989121234567`` and ``00989121234567`` alike), else the digits typed
    (Persian digits read as ASCII), else the text as given."""
    key = normalize(number, region)
    if key is None:
        return number.strip()
    parsed = _parse_e164(key)
    return phonenumbers.national_significant_number(parsed) if parsed is not None else key


def is_mobile(number: str, region: str = "IR") -> bool:
    """Whether `number`, in any written form, is a valid mobile number of `region`."""
    parsed = _parse_e164(normalize(number, region))
    if parsed is None:
        return False
    return phonenumbers.is_valid_number_for_region(parsed, region) and (
        phonenumbers.number_type(parsed) in _MOBILE_TYPES
    )


def to_national(e164: str, region: str = "IR") -> str:
    """For display: national format for `region`'s numbers, international for others.

    A string that is not E.164 (an extension, say) is returned unchanged.
    """
    parsed = _parse_e164(e164)
    if parsed is None:
        return e164
    home = phonenumbers.country_code_for_region(region)
    style = PhoneNumberFormat.NATIONAL if parsed.country_code == home else (PhoneNumberFormat.INTERNATIONAL)
    return phonenumbers.format_number(parsed, style)


def _parse_e164(e164: str | None) -> phonenumbers.PhoneNumber | None:
    if not e164 or not e164.startswith("+"):
        return None
    try:
        return phonenumbers.parse(e164, None)
    except NumberParseException:
        return None


def _is_full_national_length(parsed: phonenumbers.PhoneNumber) -> bool:
    """Whether the national number has the longest length its country's numbers have."""
    region = phonenumbers.region_code_for_country_code(parsed.country_code)
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None or not metadata.general_desc.possible_length:
        return False
    longest = max(metadata.general_desc.possible_length)
    return len(phonenumbers.national_significant_number(parsed)) == longest
