"""What a PIN hash costs a call, and what it costs a thief who has the database.

- per call: the time ``hash_pin`` and ``verify_pin`` take, with and without the pepper;
- offline: the time to try every 4-, 5- and 6-digit PIN against one salted SHA-256
  hash made without the pepper (what anyone who can read the database can do), and
  the check that the same search finds nothing against a peppered hash (without the
  pepper, each try is a guess at a 256-bit key as well).

    python bench/pin_hash.py [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

from fsapp import pins


def per_call(pepper: str | None, n: int = 20_000) -> dict[str, float]:
    if pepper is None:
        os.environ.pop(pins.PEPPER_ENV, None)
    else:
        os.environ[pins.PEPPER_ENV] = pepper
    stored = pins.hash_pin("482716")
    t0 = time.perf_counter()
    for _ in range(n):
        pins.hash_pin("482716")
    hashed = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        pins.verify_pin("999999", stored)
    verified = (time.perf_counter() - t0) / n
    return {"hash_us": round(hashed * 1e6, 1), "verify_wrong_us": round(verified * 1e6, 1)}


def search(stored: str, digits: int) -> tuple[float, str]:
    """Seconds to try every PIN of ``digits`` digits against a plain salted hash, and the PIN found."""
    _algo, salt_hex, digest_hex = stored.split("$")
    salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    t0 = time.perf_counter()
    found = ""
    for i in range(10**digits):
        pin = f"{i:0{digits}d}".encode()
        if hashlib.sha256(salt + pin).digest() == digest:
            found = pin.decode()
    return time.perf_counter() - t0, found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default="")
    args = p.parse_args()
    pepper = os.urandom(32).hex()
    out: dict[str, object] = {"per_call_plain": per_call(None), "per_call_peppered": per_call(pepper)}
    os.environ.pop(pins.PEPPER_ENV, None)
    offline = {}
    for digits in (4, 5, 6):
        pin = "9" * digits
        seconds, found = search(pins.hash_pin(pin), digits)
        offline[f"{digits}_digits_plain"] = {"seconds": round(seconds, 3), "found": found == pin}
    os.environ[pins.PEPPER_ENV] = pepper
    seconds, found = search(pins.hash_pin("999999"), 6)
    offline["6_digits_peppered_without_the_pepper"] = {"seconds": round(seconds, 3), "found": bool(found)}
    out["offline_one_hash"] = offline
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
