"""Phone PINs: salted SHA-256 hashes, compared in constant time; lockout rules.

A 4-6 digit PIN has at most a million values, so no work factor makes a stolen
database safe on its own: even a deliberately slow hash (scrypt, bcrypt) only turns
an exhaustive search of one customer's PIN from milliseconds into seconds, while every
PIN call would pay that cost. So the hash keeps PINs from being read in plain text,
the salt keeps equal PINs from looking equal, and the lockout (counted in the shared
database, across calls and daemons) is what stops guessing by phone. What does protect
a stolen database is a secret kept outside it: when ``FSAPP_PIN_PEPPER`` is set in the
daemon's environment, the PIN is keyed with it (HMAC-SHA256) before hashing, so the
hashes cannot be searched without it.

Hashes written by earlier versions (``scrypt$n$r$p$salt$hash``) still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsapp import digits, phones

if TYPE_CHECKING:
    from fsapp.config import Config, SecurityConfig

PIN_RE = re.compile(r"[0-9]{4,12}")  # ASCII only: \d would also take digits no phone can type
PEPPER_ENV = "FSAPP_PIN_PEPPER"
ALGO, ALGO_PEPPER = "sha256", "sha256+pepper"


MIN_PEPPER = 32


def pepper_warning(cfg: Config) -> str:
    """Why this config's PIN hashes would be easy to search offline ("" if they would not).

    Only when fsapp itself checks PINs: the local directory and a ``pin`` club module.
    """
    if cfg.crm.kind != "local" or not any(
        m.kind == "customer_club" and m["auth"] == "pin" for m in cfg.modules.values()
    ):
        return ""
    pepper = os.environ.get(PEPPER_ENV, "")
    if not pepper:
        return (f"{PEPPER_ENV} is not set: whoever reads the database can try every PIN against its hashes"
                " (set it as docs/operations.md says)")
    if len(pepper) < MIN_PEPPER:
        return f"{PEPPER_ENV} is shorter than {MIN_PEPPER} characters: use a random one (openssl rand -hex 32)"
    return ""


def parse_pin(text: str) -> str:
    """A PIN as written (Persian and Arabic-Indic digits read as 0-9); ValueError unless 4 to 12 digits.

    The message never echoes the PIN.
    """
    pin = digits.to_ascii(text.strip())
    if not PIN_RE.fullmatch(pin):
        raise ValueError("must be 4 to 12 digits 0-9 (Persian and Arabic-Indic digits are read as 0-9)")
    return pin


def _secret(pin: str, peppered: bool) -> bytes:
    if not peppered:
        return pin.encode()[:64]
    pepper = os.environ.get(PEPPER_ENV, "")
    if not pepper:
        raise ValueError(f"PIN hashed with a pepper but {PEPPER_ENV} is not set")
    return hmac.new(pepper.encode(), pin.encode()[:64], hashlib.sha256).digest()


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """``sha256[+pepper]$salt$hash``; the pepper is used when FSAPP_PIN_PEPPER is set."""
    if not PIN_RE.fullmatch(pin):
        raise ValueError("a PIN is 4 to 12 digits")
    peppered = bool(os.environ.get(PEPPER_ENV))
    salt = salt or os.urandom(16)
    digest = hashlib.sha256(salt + _secret(pin, peppered)).digest()
    return f"{ALGO_PEPPER if peppered else ALGO}${salt.hex()}${digest.hex()}"


def rehashed(pin: str, stored: str) -> str | None:
    """A new hash for a PIN just verified against ``stored``, when ``stored`` was made without
    the pepper that is set now (or by scrypt, or of Persian digits): None when it is current.
    Only call it after ``verify_pin`` said True: it hashes ``pin`` as given."""
    if not os.environ.get(PEPPER_ENV) or stored.startswith(ALGO_PEPPER + "$") or not PIN_RE.fullmatch(pin):
        return None
    return hash_pin(pin)


def verify_pin(pin: str, stored: str) -> bool:
    """True if ``pin`` matches ``stored``; malformed or empty stored hashes never match.

    Raises ValueError (naming the variable) for a peppered hash when FSAPP_PIN_PEPPER
    is not set: every PIN would fail, which must not pass for wrong PINs. A hash that an
    earlier version made of a PIN imported in Persian or Arabic-Indic digits matches the
    same PIN typed in 0-9 (one guess still: the caller typed one PIN).
    """
    forms = [pin]
    if PIN_RE.fullmatch(pin):
        forms += [pin.translate(table) for table in _LEGACY_DIGITS]
    return any([_verify_one(form, stored) for form in forms])  # a list: every form costs the same time


_LEGACY_DIGITS = (str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"), str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


def _verify_one(pin: str, stored: str) -> bool:
    algo, _, rest = stored.partition("$")
    if algo in (ALGO_PEPPER, "scrypt+pepper"):
        secret = _secret(pin, True)
    elif algo in (ALGO, "scrypt"):
        secret = _secret(pin, False)
    else:
        return False
    try:
        if algo.startswith(ALGO):
            salt_hex, digest_hex = rest.split("$")
            expected = bytes.fromhex(digest_hex)
            got = hashlib.sha256(bytes.fromhex(salt_hex) + secret).digest()
        else:
            n, r, p, salt_hex, digest_hex = rest.split("$")
            expected = bytes.fromhex(digest_hex)
            got = hashlib.scrypt(secret, salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
                                 dklen=len(expected))
    except (ValueError, TypeError, OverflowError, MemoryError):
        return False
    return hmac.compare_digest(got, expected)


# ------------------------------------------------------------------ guessing limits

ANONYMOUS = "anonymous"  # the one caller ID of every withheld, empty or unusable number


@dataclass(frozen=True)
class Limit:
    """At most ``max`` failures within ``window`` seconds; reaching it locks for ``lockout`` seconds."""

    max: int
    window: float
    lockout: float


@dataclass(frozen=True)
class PinLimits:
    """The limits one PIN attempt counts against: its customer's, its caller ID's, the alarm's."""

    caller: str
    customer: Limit
    per_caller: Limit
    alarm_failures: int
    alarm_window: float

    @classmethod
    def of(cls, sec: SecurityConfig, caller: str) -> PinLimits:
        """``caller`` is a ``caller_key``; withheld numbers share the anonymous limit."""
        most = sec.anonymous_max_failures if caller == ANONYMOUS else sec.caller_max_failures
        return cls(
            caller=caller,
            customer=Limit(sec.pin_max_failures, sec.pin_window_seconds, sec.pin_lockout_seconds),
            per_caller=Limit(most, sec.caller_window_seconds, sec.caller_lockout_seconds),
            alarm_failures=sec.alarm_failures,
            alarm_window=sec.alarm_window_seconds,
        )

    @property
    def longest_window(self) -> float:
        return max(self.customer.window, self.per_caller.window, self.alarm_window)


def caller_key(caller: str, region: str = "IR") -> str:
    """The caller ID PIN failures count against: the normalised number, or ``ANONYMOUS``.

    A withheld number ("anonymous", "", "0000000000", anything not a number) is the same
    caller for every call that has one: a lockout of it stops PIN entry for all withheld
    callers (who can call again with their number shown), never for callers with a number.
    """
    number = phones.normalize(caller, region)
    if not number or set(re.sub(r"[^0-9]", "", digits.to_ascii(caller))) <= {"0"}:
        return ANONYMOUS
    return number
