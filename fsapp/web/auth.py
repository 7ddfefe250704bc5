"""Who may use the console: scrypt password hashes, roles, the session secret, CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from fsapp.config import Config

ROLES = ("viewer", "reviewer", "admin")  # each sees what the one before it sees, and more

# scrypt: n=2**14, r=8 is 16 MiB of memory per hash (memory-hard), p=1
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


DUMMY_HASH = f"scrypt${_N}${_R}${_P}${'A' * 24}${'A' * 44}"  # checked for unknown names; matches nothing


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return kind == "scrypt" and hmac.compare_digest(got, want)


MIN_PASSWORD = 8


def name_problem(name: str) -> str:
    """Why ``name`` cannot be a console user's name ('' if it can)."""
    if not name or len(name) > 64 or any(c.isspace() or not c.isprintable() for c in name):
        return f"NAME must be 1-64 printable characters without spaces, not {name!r}"
    return ""


def password_problem(password: str) -> str:
    """Why ``password`` is refused ('' if it is not)."""
    return f"the password must be at least {MIN_PASSWORD} characters" if len(password) < MIN_PASSWORD else ""


def may(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def secret_file(cfg: Config) -> Path:
    """Where a generated session secret is kept: by the SQLite database, else by the config file."""
    if cfg.storage_url.startswith("sqlite:"):
        from fsapp.store import sqlite_path

        return sqlite_path(cfg.storage_url).parent / "web-secret"
    return Path(cfg.file).resolve().parent / "web-secret"


def session_secret(cfg: Config) -> bytes:
    """The key that signs session cookies: ``[web] secret_env``'s variable, else a file made once (0600)."""
    if cfg.web.secret_env:
        value = os.environ.get(cfg.web.secret_env, "")
        if len(value) < 16:
            raise ValueError(f"{cfg.file}:web.secret_env: environment variable {cfg.web.secret_env} "
                             "must hold at least 16 characters")
        return value.encode()
    path = secret_file(cfg)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def password_mark(password_hash: str) -> str:
    """What a session keeps of its user's password hash: a new password (set by the user's
    ``fsapp web users add`` again, or by an admin) ends every session logged in with the old one."""
    return hashlib.sha256(b"fsapp session\0" + password_hash.encode()).hexdigest()[:32]


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given and expected) and hmac.compare_digest(str(given), str(expected))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")
