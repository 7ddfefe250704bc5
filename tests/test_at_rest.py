"""What fsapp leaves on disk: files other users cannot read, PIN hashes that need a secret kept elsewhere.

- the SQLite database, its WAL and shared-memory files are 0600 in a 0750 folder
  whatever the umask, and an existing database readable by others loses that;
- ``fsapp check`` warns when the daemon would check PINs itself without
  ``FSAPP_PIN_PEPPER`` (or with a short one), and not otherwise;
- a hash made with the pepper is not found by trying every PIN without it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fsapp import config as configmod
from fsapp import pins
from tests.helpers import ROOT, Daemon, write_config

PIN_FLOW = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "pin"
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""
CSV = "id,number,name,type,phones,mobile,pin,sales,support,other,debt\ncus-1,1001,Sara,vip,,,4827,,,,0\n"


def fsapp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], capture_output=True, text=True, timeout=60,
                          env={**(env if env is not None else os.environ), "PYTHONPATH": str(ROOT)})


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_config(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose database is in a folder that does not exist yet; (config, database)."""
    path = write_config(tmp_path, PIN_FLOW)
    db = tmp_path / "state" / "fsapp.db"
    path.write_text(path.read_text().replace(str(tmp_path / "fsapp.db"), str(db)))
    return path, db


def test_database_and_its_wal_are_private_whatever_the_umask(tmp_path: Path, umask_022: None,
                                                             daemon: Callable[[configmod.Config], Daemon]) -> None:
    """Under umask 022 the import creates the database 0600 in a 0750 folder; a call's WAL and shm are 0600."""
    path, db = sqlite_config(tmp_path)
    (tmp_path / "c.csv").write_text(CSV)
    proc = fsapp("customers", "import", "-c", str(path), str(tmp_path / "c.csv"))
    assert proc.returncode == 0, proc.stderr
    d = daemon(configmod.load(path, check_files=False))
    _fake, row = d.call(dtmf=["1001", "4827"])
    assert row is not None and row["auth_result"] == "ok"
    files = {p.name: mode(p) for p in db.parent.iterdir()}
    assert files == {"fsapp.db": 0o600, "fsapp.db-wal": 0o600, "fsapp.db-shm": 0o600}
    assert mode(db.parent) == 0o750


def test_an_existing_database_readable_by_others_is_closed_to_them(tmp_path: Path, umask_022: None) -> None:
    """A database an earlier version left 0644 (and its WAL) is 0640 once fsapp opens it: the group keeps reading."""
    path, db = sqlite_config(tmp_path)
    proc = fsapp("calls", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    for p in db.parent.iterdir():
        p.chmod(0o644)
    proc = fsapp("calls", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    assert {p.name: mode(p) for p in db.parent.iterdir() if p.name == "fsapp.db"} == {"fsapp.db": 0o640}
    assert all(mode(p) & 0o007 == 0 for p in db.parent.iterdir())


def _env(pepper: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != pins.PEPPER_ENV}
    if pepper is not None:
        env[pins.PEPPER_ENV] = pepper
    return env


@pytest.mark.parametrize(("pepper", "warned"), [(None, "is not set"), ("short-pepper", "is shorter than 32"),
                                                ("0f" * 32, "")], ids=["unset", "short", "good"])
def test_check_warns_of_a_missing_or_short_pepper(tmp_path: Path, pepper: str | None, warned: str) -> None:
    """`fsapp check` with the local directory and a PIN module: a warning (exit 0) naming FSAPP_PIN_PEPPER."""
    path = write_config(tmp_path, PIN_FLOW)
    proc = fsapp("check", "-c", str(path), env=_env(pepper))
    assert proc.returncode == 0, proc.stderr
    assert "ok (1 modules)" in proc.stdout
    if warned:
        assert f"{path}: warning: FSAPP_PIN_PEPPER {warned}" in proc.stderr
    else:
        assert pins.PEPPER_ENV not in proc.stderr  # (an empty directory is warned of on its own line)
    if pepper:
        assert pepper not in proc.stdout + proc.stderr


def test_check_does_not_warn_when_fsapp_checks_no_pin(tmp_path: Path) -> None:
    """Identification by phone only, or PINs checked by an HTTP CRM: the pepper is not fsapp's to keep."""
    phone = write_config(tmp_path, PIN_FLOW.replace('auth = "pin"', 'auth = "phone"'))
    proc = fsapp("check", "-c", str(phone), env=_env(None))
    assert proc.returncode == 0 and pins.PEPPER_ENV not in proc.stderr, proc.stderr
    http = write_config(tmp_path, PIN_FLOW, extra='[crm]\nkind = "http"\nurl = "http://127.0.0.1:9/api"\n'
                                                   'token_env = "FSAPP_TEST_AT_REST_TOKEN"\n')
    proc = fsapp("check", "-c", str(http), env={**_env(None), "FSAPP_TEST_AT_REST_TOKEN": "t"})
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


def test_a_peppered_hash_is_not_found_by_trying_every_pin_without_the_pepper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every 4-digit PIN against a peppered hash, as a thief with only the database would: none matches.

    The same search finds the PIN of an unpeppered hash: the pepper is what protects it.
    """
    monkeypatch.delenv(pins.PEPPER_ENV, raising=False)
    plain = pins.hash_pin("4827")
    monkeypatch.setenv(pins.PEPPER_ENV, "0f" * 32)
    peppered = pins.hash_pin("4827")
    assert pins.verify_pin("4827", peppered)

    def search(stored: str) -> list[str]:
        _algo, salt, digest = stored.split("$")
        return [pin for pin in (f"{i:04d}" for i in range(10_000))
                if hashlib.sha256(bytes.fromhex(salt) + pin.encode()).hexdigest() == digest]

    assert search(plain) == ["4827"]
    assert search(peppered) == []


def test_a_hash_made_before_the_pepper_is_peppered_by_the_callers_right_pin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon: Callable[[configmod.Config], Daemon]) -> None:
    """A directory imported without FSAPP_PIN_PEPPER, then a daemon with it: a wrong PIN changes
    nothing, the right one opens and leaves a peppered hash, which opens the next call too."""
    path = write_config(tmp_path, PIN_FLOW)
    (tmp_path / "c.csv").write_text(CSV)
    assert fsapp("customers", "import", "-c", str(path), str(tmp_path / "c.csv"), env=_env(None)).returncode == 0
    monkeypatch.setenv(pins.PEPPER_ENV, "p" * 40)
    d = daemon(configmod.load(path, check_files=False))
    before = d.store.pin_hash("cus-1")
    assert before.startswith(pins.ALGO + "$")
    _fake, row = d.call(dtmf=["1001", "1111", "1001", "2222", "1001", "3333"])
    assert row is not None and row["auth_result"] != "ok"
    assert d.store.pin_hash("cus-1") == before
    _fake, row = d.call(dtmf=["1001", "4827"])
    assert row is not None and row["auth_result"] == "ok"
    after = d.store.pin_hash("cus-1")
    assert after.startswith(pins.ALGO_PEPPER + "$") and pins.verify_pin("4827", after)
    monkeypatch.delenv(pins.PEPPER_ENV)
    with pytest.raises(ValueError, match=pins.PEPPER_ENV):
        pins.verify_pin("4827", after)  # the pepper is in it now: without it the hash opens nothing
    monkeypatch.setenv(pins.PEPPER_ENV, "p" * 40)
    _fake, row = d.call(dtmf=["1001", "4827"])
    assert row is not None and row["auth_result"] == "ok"
    assert d.store.pin_hash("cus-1") == after


def test_a_pin_set_meanwhile_is_not_overwritten_by_a_rehash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsapp.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    store.upsert_customer({"id": "c1", "number": "1", "name": "", "type": "", "pin_hash": pins.hash_pin("1234")}, [])
    old = store.pin_hash("c1")
    store.set_pin_hash("c1", pins.hash_pin("9999"))  # an operator's set-pin between the check and the rehash
    monkeypatch.setenv(pins.PEPPER_ENV, "p" * 40)
    assert not store.replace_pin_hash("c1", old, pins.rehashed("1234", old) or "")
    assert pins.verify_pin("9999", store.pin_hash("c1"))
