"""Journal times: stored in UTC, shown in [journal] timezone with the offset, Jalali on request,
old naive rows migrated as the host's local time; the CRM's call log gets offset times."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsapp import config as configmod
from fsapp import ledger, store
from fsapp.store import open_store
from tests.helpers import HANGUP_MENU, ROOT, write_config

TEHRAN = '[journal]\ntimezone = "Asia/Tehran"\n'


def fsapp_calls(path: Path, *args: str, tz: str = "UTC") -> subprocess.CompletedProcess[str]:
    """`fsapp calls` with the host's zone set to ``tz``."""
    return subprocess.run([sys.executable, "-m", "fsapp", "calls", "-c", str(path), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), "TZ": tz})


def row(uuid: str, started: str, ended: str, caller: str = "09121234567") -> dict[str, object]:
    return {"uuid": uuid, "started_at": started, "answered_at": None, "ended_at": ended, "direction": "inbound",
            "caller": caller, "called": "7000", "status": "missed", "total_seconds": 20, "modules": ["main"]}


# 00:30 in Tehran on 1 December (10 Azar 1405) is still 30 November in UTC.
AFTER_MIDNIGHT = row("a1", "2026-11-30T21:00:00Z", "2026-11-30T21:00:20Z")
EVENING = row("a2", "2026-12-01T16:00:00Z", "2026-12-01T16:00:20Z", caller="+989121234567")
BEFORE = row("a0", "2026-11-30T20:00:00Z", "2026-11-30T20:00:20Z", caller="۰۹۳۵۱۱۱۲۲۳۳")


@pytest.fixture
def tehran(tmp_path: Path) -> Iterator[Path]:
    path = write_config(tmp_path, HANGUP_MENU, extra=TEHRAN + 'calendar = "jalali"\n')
    s = open_store(configmod.load(path, check_files=False).storage_url)
    for r in (BEFORE, AFTER_MIDNIGHT, EVENING):
        s.call_finished(str(r["uuid"]), r)
    s.close()
    yield path


def test_json_and_csv_show_the_zone_with_its_offset_and_the_jalali_date(tehran: Path) -> None:
    """Stored 21:00Z is 00:30+03:30 the next day in Tehran; JSON and CSV say so, with 1405-09-10."""
    proc = fsapp_calls(tehran, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["uuid"]: r for r in json.loads(proc.stdout)}
    assert rows["a1"]["started_at"] == "2026-12-01T00:30:00+03:30"
    assert rows["a1"]["ended_at"] == "2026-12-01T00:30:20+03:30"
    assert rows["a1"]["jalali_date"] == "1405-09-10" and rows["a0"]["jalali_date"] == "1405-09-09"
    table = list(csv.DictReader(io.StringIO(fsapp_calls(tehran, "--format", "csv").stdout)))
    assert {r["uuid"]: r["started_at"] for r in table}["a2"] == "2026-12-01T19:30:00+03:30"
    assert {r["uuid"]: r["jalali_date"] for r in table}["a2"] == "1405-09-10"


def test_ledger_charges_show_the_zone_like_calls(tehran: Path) -> None:
    """A charge stored at 21:00Z: `fsapp ledger` on a UTC host shows 00:30+03:30 on 10 Azar 1405, in every format."""
    s = open_store(configmod.load(tehran, check_files=False).storage_url)
    meter = {"call_uuid": "a1", "module": "paid", "customer_id": "C-1", "interval_minutes": 1,
             "amount_per_interval": 50_000, "product_code": "P", "product_name": "Paid", "invoice_type": "invoice",
             "account": "main", "send_payment_link": 0, "mobile": "", "target": "", "bridge_us": 0, "seen_us": 0,
             "state": "open", "daemon": "host:1", "opened_at": 0.0, "beat_at": 0.0}
    s.meter_open(meter)
    at = dt.datetime(2026, 11, 30, 21, 0, tzinfo=dt.UTC).timestamp()
    ledger.settle(s, meter, 61, now=at)
    assert s.charges()[0]["created_at"] == "2026-11-30T21:00:00Z"  # stored in UTC
    s.close()

    def ledger_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fsapp", "ledger", "-c", str(tehran), *args],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "TZ": "UTC"})

    [shown] = json.loads(ledger_cli("--format", "json").stdout)
    assert (shown["created_at"], shown["jalali_date"], shown["amount"]) == ("2026-12-01T00:30:00+03:30", "1405-09-10",
                                                                            100_000)
    [line] = list(csv.DictReader(io.StringIO(ledger_cli("--format", "csv").stdout)))
    assert (line["created_at"], line["jalali_date"]) == ("2026-12-01T00:30:00+03:30", "1405-09-10")
    table = ledger_cli().stdout
    assert "1405-09-10 00:30:00" in table and "2026-11-30" not in table and "21:00" not in table


def test_days_are_the_zones_days_for_from_to_and_group_by(tehran: Path) -> None:
    """--from/--to (Gregorian or Jalali) and --group-by date cut days at Tehran's midnight, not UTC's."""
    for day in ("2026-12-01", "1405-09-10"):
        proc = fsapp_calls(tehran, "--from", day, "--to", day, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert [r["uuid"] for r in json.loads(proc.stdout)] == ["a1", "a2"]
    groups = json.loads(fsapp_calls(tehran, "--group-by", "date", "--format", "json").stdout)
    assert [(g["date"], g["calls"]) for g in groups] == [("1405-09-09", 1), ("1405-09-10", 2)]
    table = fsapp_calls(tehran).stdout
    assert "1405-09-10  00:30:00" in table


def test_an_unknown_zone_is_named_by_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, HANGUP_MENU, extra='[journal]\ntimezone = "Asia/Atlantis"\n')
    proc = fsapp_calls(path)
    assert proc.returncode == 2
    assert f"{path}:journal.timezone: unknown time zone 'Asia/Atlantis'" in proc.stderr


def test_old_naive_rows_are_migrated_as_the_hosts_local_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             store_url: str) -> None:
    """A journal written before UTC (naive local strings) is converted once, on the host's zone, and lists right."""
    path = write_config(tmp_path, HANGUP_MENU, extra=TEHRAN)
    path.write_text("\n".join(f'url = "{store_url}"' if line.startswith("url = ") else line
                              for line in path.read_text().splitlines()) + "\n")
    url = configmod.load(path, check_files=False).storage_url
    before = next(i for i, m in enumerate(store.MIGRATIONS) if callable(m))
    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS[:before])  # the schema before times were UTC
    old = open_store(url)
    old.call_finished("n1", row("n1", "2026-12-01T09:08:37", "2026-12-01T09:09:00"))
    old.call_finished("n2", {**row("n2", "2026-12-01T09:10:00", ""), "ended_at": None})
    old.close()
    monkeypatch.undo()
    proc = fsapp_calls(path, "--format", "json", tz="Asia/Tehran")  # the host that wrote them
    assert proc.returncode == 0, proc.stderr
    rows = {r["uuid"]: r for r in json.loads(proc.stdout)}
    assert rows["n1"]["started_at"] == "2026-12-01T09:08:37+03:30"
    assert rows["n1"]["ended_at"] == "2026-12-01T09:09:00+03:30"
    assert rows["n2"]["ended_at"] is None
    migrated = open_store(url)
    assert migrated.get_call("n1")["started_at"] == "2026-12-01T05:38:37Z"  # type: ignore[index]
    assert fsapp_calls(path, "--format", "json", tz="Europe/Berlin").stdout == proc.stdout  # converted once


@pytest.mark.parametrize("number", ["09121234567", "+989121234567", "00989121234567", "۰۹۱۲۱۲۳۴۵۶۷", "0912 123 4567"])
def test_number_finds_the_subscriber_in_every_written_form(tehran: Path, number: str) -> None:
    """--number is the subscriber, not the string: 0912..., +98912... and Persian digits find both rows."""
    proc = fsapp_calls(tehran, "--number", number, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["uuid"] for r in json.loads(proc.stdout)) == ["a1", "a2"]


def test_number_as_a_run_of_digits_ascii_or_persian(tehran: Path) -> None:
    """A run of digits (not a whole number) still finds the rows containing it, typed in either script."""
    assert [r["uuid"] for r in json.loads(fsapp_calls(tehran, "--number", "1234567", "--format", "json").stdout)] \
        == ["a1", "a2"]
    assert [r["uuid"] for r in json.loads(fsapp_calls(tehran, "--number", "۴۵۶۷", "--format", "json").stdout)] \
        == ["a1", "a2"]


def _calls_to(path: Path, out: Path | None, *args: str) -> bytes:
    """`fsapp calls` with stdout a file (``out``) or a pipe (None); the bytes written."""
    cmd = [sys.executable, "-m", "fsapp", "calls", "-c", str(path), "--format", "csv", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if out is None:
        return subprocess.run(cmd, capture_output=True, timeout=60, env=env, check=True).stdout
    with out.open("wb") as f:
        subprocess.run(cmd, stdout=f, timeout=60, env=env, check=True)
    return out.read_bytes()


def test_csv_to_a_file_starts_with_a_bom_for_excel_and_a_pipe_does_not(tehran: Path, tmp_path: Path) -> None:
    """`> calls.csv` gets the UTF-8 BOM Excel needs for Persian; a pipe gets none; --bom/--no-bom decide."""
    bom = "\ufeff".encode()
    to_file = _calls_to(tehran, tmp_path / "calls.csv")
    assert to_file.startswith(bom + b"uuid,started_at,")
    assert "۰۹۳۵۱۱۱۲۲۳۳".encode() in to_file  # the Persian caller ID, UTF-8 behind the mark
    assert _calls_to(tehran, None).startswith(b"uuid,started_at,")
    assert _calls_to(tehran, None, "--bom").startswith(bom + b"uuid,")
    assert _calls_to(tehran, tmp_path / "plain.csv", "--no-bom").startswith(b"uuid,")
    assert _calls_to(tehran, tmp_path / "days.csv", "--group-by", "date").startswith(bom + b"date,calls,")


def test_customers_round_trip_through_a_bom_csv(tmp_path: Path) -> None:
    """`fsapp customers list --format csv --bom` reads back with `fsapp customers import` (the BOM is skipped)."""
    path = write_config(tmp_path, HANGUP_MENU)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def fsapp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fsapp", *args, "-c", str(path)], capture_output=True,
                              text=True, timeout=60, env=env)

    assert fsapp("customers", "add", "--id", "C-1", "--number", "C-1", "--name", "سارا احمدی",
                 "--phone", "09121234567").returncode == 0
    listing = fsapp("customers", "list", "--format", "csv", "--bom")
    assert listing.returncode == 0 and listing.stdout.startswith("\ufeff")
    (tmp_path / "export.csv").write_text(listing.stdout, encoding="utf-8")
    back = fsapp("customers", "import", str(tmp_path / "export.csv"))
    assert back.returncode == 0, back.stderr
    assert "1 customers imported" in back.stdout
