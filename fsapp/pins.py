"""Phone PINs: salted scrypt hashes, compared in constant time; lockout rules.

A 4-6 digit PIN has at most a million values, so no hash makes a stolen database
safe on its own: the hash keeps PINs from being read in plain text, and the lockout
(counted in the shared database, across calls and daemons) is what stops guessing.
The cost is kept modest (about a millisecond) because every PIN call pays it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

PIN_RE = re.compile(r"\d{4,12}")
N, R, P = 2**10, 8, 1


def hash_pin(pin: str, *, salt: bytes | None = None, n: int = N, r: int = R, p: int = P) -> str:
    if not PIN_RE.fullmatch(pin):
        raise ValueError("a PIN is 4 to 12 digits")
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, stored: str) -> bool:
    """True if ``pin`` matches ``stored``; malformed or empty stored hashes never match."""
    try:
        algo, n, r, p, salt_hex, digest_hex = stored.split("$")
        if algo != "scrypt":
            return False
        expected = bytes.fromhex(digest_hex)
        got = hashlib.scrypt(pin.encode()[:64], salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)
