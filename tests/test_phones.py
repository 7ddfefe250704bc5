"""Phone number normalisation, mobile validation and display."""

from __future__ import annotations

import pytest

from fsapp.phones import is_mobile, normalize, to_national

SAME_MOBILE = [
    "09121234567",
    "+989121234567",
    "00989121234567",
    "989121234567",
    "9121234567",
    "0912 123 4567",
    "0912-123-4567",
    "(0912) 123.4567",
    "+98 912 123 4567",
    "  09121234567  ",
    "۰۹۱۲۱۲۳۴۵۶۷",
    "٠٩١٢١٢٣٤٥٦٧",
]


@pytest.mark.parametrize("written", SAME_MOBILE)
def test_every_written_form_of_a_mobile_gives_the_same_e164(written: str) -> None:
    """National, international, 00-prefixed, bare and Persian-digit forms all match."""
    assert normalize(written) == "+989121234567"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("02188776655", "+982188776655"),
        ("+98 21 8877 6655", "+982188776655"),
        ("+16502530000", "+16502530000"),
        ("0016502530000", "+16502530000"),
        ("+44 7700 900123", "+447700900123"),
    ],
)
def test_landlines_and_foreign_numbers_normalise_to_e164(written: str, expected: str) -> None:
    """Fixed lines and numbers of other countries keep their own country code."""
    assert normalize(written) == expected


@pytest.mark.parametrize("written", ["09061234567", "9061234567", "+989061234567"])
def test_full_length_number_outside_known_ranges_still_matches_across_forms(
    written: str,
) -> None:
    """A full-length national number the metadata does not know yet still gets one form."""
    assert normalize(written) == "+989061234567"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("1001", "1001"),
        ("5551234", "5551234"),
        ("0912", "0912"),
        ("88776655", "88776655"),
        ("0", "0"),
        ("110", "110"),
        ("1-001", "1001"),
    ],
)
def test_extensions_and_short_numbers_stay_bare_digits(written: str, expected: str) -> None:
    """Internal extensions and short numbers normalise to their digits, not to E.164."""
    assert normalize(written) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "+",
        "abc",
        "1800FLOWERS",
        "0912x1234567",
        "'; DROP TABLE customers; --",
        "1001\x00",
        "0912\n1234567",
        "0912\t1234567",
        "*72",
        "#",
        "+1001",
        "1234567890123456",
        "+98912123456789012",
        "0" * 100,
    ],
)
def test_garbage_is_none(garbage: str) -> None:
    """Letters, control characters, symbols, too many digits, impossible numbers: None."""
    assert normalize(garbage) is None


def test_non_string_is_none() -> None:
    """A caller id that is not a string at all is rejected rather than raising."""
    assert normalize(None) is None  # type: ignore[arg-type]
    assert normalize(9121234567) is None  # type: ignore[arg-type]


def test_region_decides_how_a_national_number_is_read() -> None:
    """The same national digits belong to the country of the region given."""
    assert normalize("(650) 253-0000", region="US") == "+16502530000"
    assert normalize("6502530000", region="US") == "+16502530000"


@pytest.mark.parametrize("mobile", ["09121234567", "+989121234567", "00989121234567", "9351234567", "09901234567"])
def test_iranian_mobiles_are_mobile(mobile: str) -> None:
    """Valid Iranian mobile numbers in any written form are mobiles of IR."""
    assert is_mobile(mobile)


@pytest.mark.parametrize(
    "not_mobile",
    [
        "02188776655",
        "+982188776655",
        "1001",
        "0912123456",
        "09061234567",
        "+16502530000",
        "garbage",
        "",
    ],
)
def test_landlines_extensions_foreign_and_invalid_numbers_are_not_mobile(
    not_mobile: str,
) -> None:
    """Fixed lines, extensions, short, unallocated and foreign numbers are not IR mobiles."""
    assert not is_mobile(not_mobile)


def test_is_mobile_follows_the_region() -> None:
    """A US number is a mobile of the US (fixed-or-mobile there), not of IR."""
    assert is_mobile("+16502530000", region="US")
    assert not is_mobile("+16502530000", region="IR")


def test_to_national_formats_home_numbers_nationally_and_others_internationally() -> None:
    """Display form: national for the home region, international for the rest."""
    assert to_national("+989121234567") == "0912 123 4567"
    assert to_national("+982188776655") == "021 8877 6655"
    assert to_national("+16502530000") == "+1 650-253-0000"
    assert to_national("+16502530000", region="US") == "(650) 253-0000"


@pytest.mark.parametrize("value", ["1001", "", "garbage", "+"])
def test_to_national_leaves_non_e164_alone(value: str) -> None:
    """Extensions and anything that is not E.164 are shown as they are."""
    assert to_national(value) == value


@pytest.mark.parametrize("written", [*SAME_MOBILE, "1001", "02188776655", "+16502530000"])
def test_normalize_is_idempotent(written: str) -> None:
    """Normalising a normalised number gives it back unchanged."""
    once = normalize(written)
    assert once is not None
    assert normalize(once) == once
