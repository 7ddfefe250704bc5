"""Phone PINs: salted scrypt hashes, compared in constant time; lockout rules.

A 4-6 digit PIN has at most a million values, so no work factor makes a stolen
database safe on its own: the hash keeps PINs from being read in plain text, and the
lockout (counted in the shared database, across calls and daemons) is what stops
guessing by phone. What does protect a stolen database is a secret kept outside it:
when ``FSAPP_PIN_PEPPER`` is set in the daemon's environment, the PIN is keyed with
it (HMAC-SHA256) before hashing, so the hashes cannot be brute-forced without it.
The scrypt cost is kept small (well under a millisecond) since every PIN call pays it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

PIN_RE = re.compile(r"\d{4,12}")
N, R, P = 2**7, 8, 1
PEPPER_ENV = "FSAPP_PIN_PEPPER"


def _secret(pin: str, peppered: bool) -> bytes:
    if not peppered:
        return pin.encode()[:64]
    pepper = os.environ.get(PEPPER_ENV, "")
    if not pepper:
        raise ValueError(f"PIN hashed with a pepper but {PEPPER_ENV} is not set")
    return hmac.new(pepper.encode(), pin.encode()[:64], hashlib.sha256).digest()


def hash_pin(pin: str, *, salt: bytes | None = None, n: int = N, r: int = R, p: int = P) -> str:
    """``scrypt[+pepper]$n$r$p$salt$hash``; the pepper is used when FSAPP_PIN_PEPPER is set."""
    if not PIN_RE.fullmatch(pin):
        raise ValueError("a PIN is 4 to 12 digits")
    peppered = bool(os.environ.get(PEPPER_ENV))
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(_secret(pin, peppered), salt=salt, n=n, r=r, p=p, dklen=32)
    algo = "scrypt+pepper" if peppered else "scrypt"
    return f"{algo}${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, stored: str) -> bool:
    """True if ``pin`` matches ``stored``; malformed or empty stored hashes never match."""
    try:
        algo, n, r, p, salt_hex, digest_hex = stored.split("$")
        if algo not in ("scrypt", "scrypt+pepper"):
            return False
        expected = bytes.fromhex(digest_hex)
        got = hashlib.scrypt(_secret(pin, algo == "scrypt+pepper"), salt=bytes.fromhex(salt_hex), n=int(n),
                             r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
