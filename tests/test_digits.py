"""Persian and Arabic-Indic digits are read as 0-9 wherever digits come in; other digits are refused.

Through the front door: ``fsapp customers import``, ``add`` and ``set-pin`` and ``fsapp
calls --number`` as commands, then calls to the daemon typing the PIN in 0-9, as a
phone does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fsapp import config as configmod
from fsapp.store import open_store
from tests.helpers import ROOT, Daemon, write_config

HEADER = "id,number,name,type,phones,mobile,pin,sales,support,other,debt\n"
FLOW = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "pin"
max_attempts = 1
timeout_ms = 3000
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""


def fsapp(path: Path, command: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``fsapp COMMAND -c PATH ARGS...``; ``command`` may hold its action ("customers import")."""
    return subprocess.run([sys.executable, "-m", "fsapp", *command.split(), "-c", str(path), *args],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return write_config(tmp_path, FLOW)


def pin_call(daemon: Callable[[configmod.Config], Daemon], path: Path, number: str, pin: str) -> str:
    d = daemon(configmod.load(path, check_files=False))
    _fake, row = d.call(caller="09121234567", dtmf=[number, pin])
    assert row is not None
    return str(row["auth_result"])


@pytest.mark.parametrize("written", ["۴۸۲۷", "٤٨٢٧", "4۸2٧"], ids=["persian", "arabic_indic", "mixed"])
def test_imported_pin_in_persian_digits_opens_with_the_same_pin_typed(
        cfg_path: Path, tmp_path: Path, daemon: Callable[[configmod.Config], Daemon], written: str) -> None:
    """A CSV PIN (and customer number, debt) in Persian or Arabic-Indic digits: typing 4827 on the phone opens it."""
    csv = tmp_path / "c.csv"
    csv.write_text(HEADER + f"cus-1,۱۰۰۱,Sara,vip,۰۹۱۲۱۲۳۴۵۶۷,,{written},,,,۱۲۰۰\n", encoding="utf-8")
    proc = fsapp(cfg_path, "customers import", str(csv))
    assert proc.returncode == 0, proc.stderr
    store = open_store(f"sqlite:///{tmp_path / 'fsapp.db'}")
    (row,) = store.customer_rows()
    store.close()
    assert (row["number"], row["debt"], row["phones"]) == ("1001", 1200, ["+989121234567"])
    assert pin_call(daemon, cfg_path, "1001", "4827") == "ok"


@pytest.mark.parametrize("pin", ["१२३४", "１２３４", "12३4", "١٢٣٤٥٦٧٨٩٠١٢٣"],
                         ids=["devanagari", "fullwidth", "one_devanagari", "thirteen"])
def test_import_refuses_a_pin_of_other_digits_naming_the_line(cfg_path: Path, tmp_path: Path, pin: str) -> None:
    """Digits no phone can type (Devanagari, fullwidth) are refused, naming file, line and column; nothing imported."""
    csv = tmp_path / "c.csv"
    csv.write_text(HEADER + "cus-1,1001,Sara,vip,,,4827,,,,0\n" + f"cus-2,1002,Reza,vip,,,{pin},,,,0\n",
                   encoding="utf-8")
    proc = fsapp(cfg_path, "customers import", str(csv))
    assert proc.returncode == 2
    assert f"{csv}:3: pin: must be 4 to 12 digits 0-9" in proc.stderr
    assert pin not in proc.stderr  # a PIN is never echoed
    assert "nothing imported" in proc.stderr


def test_import_refuses_other_digits_in_number_and_debt(cfg_path: Path, tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(HEADER + "cus-1,१००१,Sara,vip,,,,,,,0\ncus-2,1002,Reza,vip,,,,,,,१२\n", encoding="utf-8")
    proc = fsapp(cfg_path, "customers import", str(csv))
    assert proc.returncode == 2
    assert f"{csv}:2: number: '१' is not a digit 0-9" in proc.stderr
    assert f"{csv}:3: debt: must be an integer amount in rial" in proc.stderr


def test_add_and_set_pin_read_persian_digits(cfg_path: Path, daemon: Callable[[configmod.Config], Daemon]) -> None:
    """`customers add --number ۱۰۰۱ --phone ۰۹۱۲...` and `set-pin` from stdin in Persian digits: 4827 opens it."""
    proc = fsapp(cfg_path, "customers add", "--id", "cus-1", "--number", "۱۰۰۱", "--phone", "۰۹۱۲۱۲۳۴۵۶۷",
                 "--debt", "-۵۰")
    assert proc.returncode == 0, proc.stderr
    proc = fsapp(cfg_path, "customers set-pin", "cus-1", stdin="۴۸۲۷\n")
    assert proc.returncode == 0, proc.stderr
    refused = fsapp(cfg_path, "customers set-pin", "cus-1", stdin="४८२७\n")
    assert refused.returncode == 2 and "PIN: must be 4 to 12 digits 0-9" in refused.stderr
    assert pin_call(daemon, cfg_path, "1001", "4827") == "ok"


def test_calls_number_filter_reads_persian_digits(cfg_path: Path, daemon: Callable[[configmod.Config], Daemon]) -> None:
    """`fsapp calls --number ۰۹۱۲۱۲۳` finds the calls of 09121234567."""
    d = daemon(configmod.load(cfg_path, check_files=False))
    fake, _row = d.call(caller="09121234567", dtmf=["", ""])
    other, _row = d.call(caller="09351112233", dtmf=["", ""])
    proc = fsapp(cfg_path, "calls", "--number", "۰۹۱۲۱۲۳", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert fake.uuid in proc.stdout and other.uuid not in proc.stdout


def test_a_pin_hash_made_from_persian_digits_by_an_earlier_version_still_opens(
        cfg_path: Path, tmp_path: Path, daemon: Callable[[configmod.Config], Daemon]) -> None:
    """A directory imported before (its hash of the Persian-digit text): 4827 typed on the phone opens it."""
    import hashlib

    store = open_store(f"sqlite:///{tmp_path / 'fsapp.db'}")
    salt = os.urandom(16)
    legacy = f"sha256${salt.hex()}${hashlib.sha256(salt + '۴۸۲۷'.encode()).hexdigest()}"
    store.upsert_customer({"id": "cus-1", "number": "1001", "pin_hash": legacy}, [])
    store.close()
    assert pin_call(daemon, cfg_path, "1001", "4827") == "ok"
