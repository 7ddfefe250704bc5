"""The store's behaviour, the same on SQLite and PostgreSQL (one code path above the DB)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import gevent
import pytest

from fsapp import ledger
from fsapp import store as storemod
from fsapp.store import MIGRATIONS, StorageError, open_store


def _meter(uuid: str, customer: str = "C-1", **kw: object) -> dict:
    now = time.time()
    m = {"call_uuid": uuid, "module": "paid", "customer_id": customer, "interval_minutes": 1,
         "amount_per_interval": 50_000, "product_code": "P", "product_name": "Paid", "invoice_type": "invoice",
         "account": "main", "send_payment_link": 1, "mobile": "+989121234567", "target": "", "bridge_us": 0,
         "seen_us": 0, "state": "open", "daemon": "host:1", "opened_at": now, "beat_at": now}
    m.update(kw)
    return m


def test_migrations_are_idempotent(store_url):
    """Opening the same database twice applies each migration once."""
    s1 = open_store(store_url)
    s2 = open_store(store_url)
    rows = s2.db.query("SELECT version FROM schema_version ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    s1.close()
    s2.close()


def test_one_bridge_is_charged_once_whatever_the_meter(store_url):
    """The same FreeSWITCH bridge settled under a second meter of the call (a replayed or resumed
    session's visit) charges nothing; another bridge of the same call and module is charged."""
    s = open_store(store_url)
    first, replay, later = (_meter("u1", module=m, bridge_us=b) for m, b in
                            (("paid", 1_700_000_000_000_000), ("paid#2", 1_700_000_000_000_000),
                             ("paid#3", 1_700_000_100_000_000)))
    for m in (first, replay, later):
        assert s.meter_open(m)
    assert ledger.settle(s, first, 30)["amount"] == 50_000
    assert ledger.settle(s, replay, 30) is None
    assert ledger.settle(s, later, 61)["amount"] == 100_000
    assert [(c["module"], c["code"], c["amount"]) for c in s.charges()] == [("paid", "paid", 50_000),
                                                                            ("paid#3", "paid", 100_000)]
    assert s.open_meters() == []  # the replay's meter is closed, not left for reconcile
    assert len(s.outbox_rows()) == 4  # invoice and payment link for each charged talk only
    s.close()


def test_charges_made_before_the_talk_key_are_keyed_by_the_upgrade(store_url, monkeypatch):
    """A database charged before migration 7: it keys the charges from their meters' bridges,
    so a replay of such a call after the upgrade is not charged again."""
    monkeypatch.setattr(storemod, "MIGRATIONS", MIGRATIONS[:6])  # up to the UTC times
    old = open_store(store_url)
    old.meter_open(_meter("u9", bridge_us=1_700_000_000_000_000, state="charged"))
    old.db.execute("INSERT INTO charges (call_uuid, module, customer_id, talk_seconds, units, amount, created_at)"
                   " VALUES ('u9', 'paid', 'C-1', 30, 1, 50000, '2026-01-01T00:00:00')")
    old.close()
    monkeypatch.setattr(storemod, "MIGRATIONS", MIGRATIONS)
    s = open_store(store_url)
    assert [(c["code"], c["bridge_us"]) for c in s.charges()] == [("paid", 1_700_000_000_000_000)]
    replay = _meter("u9", module="paid#2", bridge_us=1_700_000_000_000_000)
    assert s.meter_open(replay) and ledger.settle(s, replay, 30) is None
    assert len(s.charges()) == 1
    s.close()


def test_journal_row_round_trip_and_filters(store_url):
    """A call row is written at start, completed at the end, and found by the journal filters."""
    s = open_store(store_url)
    s.call_started({"uuid": "u1", "started_at": "2026-11-20T10:00:00", "caller": "09121234567", "status": "active"})
    s.call_finished("u1", {"status": "answered", "talk_seconds": 700, "too_long": True, "modules": ["main", "club"],
                           "customer_id": "C-1", "charge": 100_000, "direction": "inbound"})
    s.call_finished("u2", {"started_at": "2026-11-21T09:00:00", "status": "missed", "caller": "1002",
                           "direction": "outbound"})
    row = s.get_call("u1")
    assert row["status"] == "answered" and row["modules"] == ["main", "club"] and row["too_long"] is True
    assert [r["uuid"] for r in s.list_calls(date_from="2026-11-21")] == ["u2"]
    assert [r["uuid"] for r in s.list_calls(date_to="2026-11-20")] == ["u1"]
    assert [r["uuid"] for r in s.list_calls(too_long=True)] == ["u1"]
    assert [r["uuid"] for r in s.list_calls(direction="outbound")] == ["u2"]
    assert [r["uuid"] for r in s.list_calls(number="0912")] == ["u1"]
    assert [r["uuid"] for r in s.list_calls(order="talk_seconds", descending=True)] == ["u1", "u2"]
    s.close()


def test_calls_by_day_are_counted_by_the_database(store_url):
    """Per day: calls, answered/missed/abandoned, talk and charge summed; filters apply; limit counts days."""
    s = open_store(store_url)
    rows = [("a", "2026-11-20T10:00:00", "answered", 700, 100_000, "C-1"),
            ("b", "2026-11-20T23:59:59", "missed", 0, 0, "C-1"),
            ("c", "2026-11-21T00:00:00", "abandoned", 0, 0, "C-2"),
            ("d", "2026-11-21T08:00:00", "answered", 61, 50_000, "C-1"),
            ("e", "2026-11-22T08:00:00", "failed", 0, 0, "C-2")]
    for uuid, started, status, talk, charge, customer in rows:
        s.call_finished(uuid, {"started_at": started, "status": status, "talk_seconds": talk, "charge": charge,
                               "customer_id": customer, "direction": "inbound"})
    days = s.calls_by_day()
    assert days == [
        {"date": "2026-11-20", "calls": 2, "answered": 1, "missed": 1, "abandoned": 0, "talk_seconds": 700,
         "charge": 100_000},
        {"date": "2026-11-21", "calls": 2, "answered": 1, "missed": 0, "abandoned": 1, "talk_seconds": 61,
         "charge": 50_000},
        {"date": "2026-11-22", "calls": 1, "answered": 0, "missed": 0, "abandoned": 0, "talk_seconds": 0,
         "charge": 0},
    ]
    assert all(type(v) is int for d in days for k, v in d.items() if k != "date")
    assert [(d["date"], d["calls"]) for d in s.calls_by_day(customer="C-1")] == [("2026-11-20", 2), ("2026-11-21", 1)]
    assert [d["date"] for d in s.calls_by_day(date_from="2026-11-21", date_to="2026-11-21")] == ["2026-11-21"]
    assert [d["date"] for d in s.calls_by_day(limit=2)] == ["2026-11-20", "2026-11-21"]
    assert s.calls_by_day(status="busy") == []
    s.close()


def test_customer_directory_upsert_keeps_pin_hash(store_url):
    """Re-importing a customer without a PIN keeps the PIN hash; phones are replaced."""
    s = open_store(store_url)
    s.upsert_customer({"id": "C-1", "number": "C-1", "pin_hash": "scrypt$x", "debt": 5}, ["+989121234567"])
    s.upsert_customer({"id": "C-1", "number": "C-1", "name": "New", "debt": 7}, ["+989351112233"])
    (row,) = s.customer_rows()
    assert row["pin_hash"] == "scrypt$x" and row["name"] == "New" and row["debt"] == 7
    assert row["phones"] == ["+989351112233"]
    s.close()


def test_pin_lockout_counts_failures_in_window(store_url):
    """N wrong PINs inside the window lock the customer; older failures do not count."""
    s = open_store(store_url)
    now = 1_000_000.0
    assert not s.record_pin_failure("C-1", now - 1000, 900, 3, 60)  # outside the window later
    assert not s.record_pin_failure("C-1", now - 10, 900, 3, 60)
    assert not s.record_pin_failure("C-1", now - 5, 900, 3, 60)
    assert s.record_pin_failure("C-1", now, 900, 3, 60)
    assert s.locked_until("C-1", now) == now + 60
    assert s.locked_until("C-1", now + 61) == 0
    s.close()


def test_settle_charges_exactly_once(store_url):
    """A meter settled twice (a daemon and a reconcile) makes one charge and one invoice."""
    s = open_store(store_url)
    s.upsert_customer({"id": "C-1", "number": "C-1", "debt": 1000}, [])
    m = _meter("call-1")
    s.meter_open(m)
    first = ledger.settle(s, m, 61)
    second = ledger.settle(s, m, 61)
    assert first["amount"] == 100_000 and first["debt"] == 101_000
    assert second is None
    assert [c["amount"] for c in s.charges()] == [100_000]
    kinds = sorted(r["kind"] for r in s.outbox_rows())
    assert kinds == ["invoice", "payment_link"]
    s.close()


def test_concurrent_settles_keep_exact_debt(store_url):
    """Many charges for one customer at once: the debt is the exact sum."""
    s = open_store(store_url)
    s.upsert_customer({"id": "C-1", "number": "C-1", "debt": 0}, [])
    meters = [_meter(f"call-{i}") for i in range(60)]
    for m in meters:
        s.meter_open(m)
    jobs = [gevent.spawn(ledger.settle, s, m, 1 + i * 17) for i, m in enumerate(meters)]
    gevent.joinall(jobs, raise_error=True)
    expected = sum(-(-(1 + i * 17) // 60) * 50_000 for i in range(60))
    assert sum(c["amount"] for c in s.charges()) == expected
    assert s.customer_rows()[0]["debt"] == expected
    s.close()


def test_outbox_lease_delivers_once(store_url):
    """Two workers claiming at once never get the same row; a delivered row is never due again."""
    s = open_store(store_url)
    now = time.time()
    for i in range(10):
        assert s.outbox_add("invoice", f"k{i}", {"amount": i}, now)
    assert not s.outbox_add("invoice", "k0", {"amount": 0}, now)  # same key: queued once
    a = s.outbox_claim("w1", now + 1, limit=6)
    b = s.outbox_claim("w2", now + 1, limit=6)
    assert len(a) == 6 and len(b) == 4
    assert not {r["id"] for r in a} & {r["id"] for r in b}
    for r in a:
        assert s.outbox_delivered(r["id"], "w1", "ok", now + 2)
    assert not s.outbox_delivered(a[0]["id"], "w2", "ok", now + 2)  # not w2's lease
    s.outbox_failed(b[0]["id"], "w2", "CRM down", now + 100)
    assert s.outbox_claim("w3", now + 30) == []  # w2's lease still holds
    again = s.outbox_claim("w3", now + 62)  # lease over: the three w2 did not finish; the failed one waits
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in b[1:])
    pending = s.outbox_rows(pending_only=True)
    assert len(pending) == 4
    s.close()


def test_reconcile_settles_dead_daemon_meter_once(store_url):
    """An open meter whose daemon stopped beating is charged from its last stamp, once."""
    s = open_store(store_url)
    s.upsert_customer({"id": "C-1", "number": "C-1", "debt": 0}, [])
    bridge_us = 1_795_398_151_267_660
    old = time.time() - 600
    s.meter_open(_meter("dead-1", daemon="otherhost:4242", opened_at=old, beat_at=old))
    s.meter_bridged("dead-1", "paid", bridge_us, old)
    s.meter_beat("dead-1", "paid", bridge_us + 125_000_000, old)
    made = ledger.reconcile(s, heartbeat_seconds=15, me="thishost:1")
    assert [(c["talk_seconds"], c["amount"]) for c in made] == [(125, 150_000)]
    assert ledger.reconcile(s, heartbeat_seconds=15, me="thishost:1") == []
    assert s.open_meters() == []
    s.close()


def test_bad_url_names_the_key():
    """An unsupported or unreachable storage URL is one clear StorageError."""
    with pytest.raises(StorageError, match="storage.url"):
        open_store("mysql://nowhere/db")


_OPEN_AT_ONCE = """
import pathlib, sys, time
from fsapp.store import open_store
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
open_store("sqlite:///" + sys.argv[1]).close()
print("opened")
"""


def test_processes_opening_a_brand_new_database_at_once_all_open_it(tmp_path: Path) -> None:
    """Turning a new file to WAL needs it alone: the others wait for it, as for any write,
    rather than fail with "database is locked" (daemons and commands started together)."""
    for round_ in range(5):
        db, go = tmp_path / f"new{round_}.db", tmp_path / f"go{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(db), str(go)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(1.0)  # all of them imported and waiting
        go.touch()
        outcomes = [p.communicate(timeout=60) for p in procs]
        assert [out for out, _err in outcomes] == ["opened\n"] * 4, [err for _out, err in outcomes]
        assert open_store(f"sqlite:///{db}").db.one("SELECT MAX(version) AS v FROM schema_version")["v"] == len(
            MIGRATIONS)


def test_a_new_database_waits_out_another_process_write_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    """Processes started together on a new file: one holds the write lock past the busy timeout (3 s;
    CI saw it on a loaded machine, four processes opening a new file at once). Another waits for it,
    as for the WAL switch, rather than fail with "database is locked". On a database already made,
    the busy timeout stands (a command fails at once, naming the database)."""
    path = tmp_path / "j.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA journal_mode = WAL")
    blocker.execute("BEGIN IMMEDIATE")  # the file exists, empty: a first process making it
    release = threading.Timer(4.0, lambda: blocker.execute("ROLLBACK"))
    release.start()
    started = time.monotonic()
    try:
        store = open_store(f"sqlite:///{path}")
    finally:
        release.join()
    assert time.monotonic() - started >= 4.0  # it did wait for the lock
    assert store.db.one("SELECT MAX(version) AS v FROM schema_version")["v"] == len(MIGRATIONS)
    store.close()
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match="database is locked"):
            open_store(f"sqlite:///{path}")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
