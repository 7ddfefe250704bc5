"""PIN hashes: salted, peppered when asked, constant-time checked; older scrypt hashes still verify."""

from __future__ import annotations

import hashlib

import pytest

from fsapp import pins


def test_hash_verifies_only_its_own_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pins.PEPPER_ENV, raising=False)
    stored = pins.hash_pin("1234")
    scheme, salt, digest = stored.split("$")
    assert scheme == "sha256" and "1234" not in (salt, digest)  # hex may hold 1234 by chance, a field never is it
    assert pins.verify_pin("1234", stored)
    assert not pins.verify_pin("1235", stored)
    assert not pins.verify_pin("12345", stored)


def test_salt_makes_equal_pins_hash_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pins.PEPPER_ENV, raising=False)
    a, b = pins.hash_pin("1234"), pins.hash_pin("1234")
    assert a != b and pins.verify_pin("1234", a) and pins.verify_pin("1234", b)


def test_pepper_is_needed_to_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pins.PEPPER_ENV, "s3cret")
    stored = pins.hash_pin("4321")
    assert stored.startswith("sha256+pepper$")
    assert pins.verify_pin("4321", stored)
    monkeypatch.setenv(pins.PEPPER_ENV, "other")
    assert not pins.verify_pin("4321", stored)
    monkeypatch.delenv(pins.PEPPER_ENV)
    with pytest.raises(ValueError, match=pins.PEPPER_ENV):
        pins.verify_pin("4321", stored)


def test_scrypt_hashes_of_earlier_versions_still_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pins.PEPPER_ENV, raising=False)
    salt = bytes(range(16))
    digest = hashlib.scrypt(b"2580", salt=salt, n=128, r=8, p=1, dklen=32)
    stored = f"scrypt$128$8$1${salt.hex()}${digest.hex()}"
    assert pins.verify_pin("2580", stored)
    assert not pins.verify_pin("2581", stored)


@pytest.mark.parametrize("stored", ["", "sha256$", "sha256$zz$00", "sha256$00", "md5$00$00", "scrypt$x$8$1$00$00",
                                    "sha256$0011$" + "00" * 31])
def test_malformed_hashes_never_match(stored: str) -> None:
    assert pins.verify_pin("1234", stored) is False


def test_bad_pins_are_refused() -> None:
    for bad in ("", "123", "12a4", "1" * 13):
        with pytest.raises(ValueError):
            pins.hash_pin(bad)
