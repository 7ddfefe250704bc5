"""Several daemons on one PostgreSQL database: one ledger, one journal, one outbox.

Each test gets a fresh database from the ``pg_url`` fixture and skips when no
server is reachable (set ``FSAPP_TEST_PG_URL``, e.g. from ``.ci/start-postgres``).
The daemons are real ``fsapp serve`` processes; FreeSWITCH is the stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

from fsapp import customers
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.store import Store, open_store
from tests.helpers import PG_ENV, ROOT, write_config

AMOUNT = 50_000  # rial per started minute
CUSTOMERS = 20
CALLS = 500

PAID_LINE = """
[[modules]]
code = "club"
kind = "customer_club"
auth = "phone"
next = "paid"
error = "hangup"

[[modules]]
code = "paid"
kind = "telephone_bill"
product_name = "Expert consultation"
product_code = "EXPERT-MIN"
interval_minutes = 1
amount_per_interval = {amount}
send_payment_link = true
account = "main"
max_debt = 1000000000000
targets = ["ext:2001"]
next = "hangup"
error = "hangup"
"""

FAST_HEARTBEAT = """
[billing]
meter_heartbeat_seconds = 1
"""

Address = tuple[str, int]
Started = tuple["subprocess.Popen[bytes]", Address]


def _phone(i: int) -> str:
    return f"0912000{i:04d}"


def _pg_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    """A config whose entry is the club (caller ID) then the paid line, stored in ``url``."""
    path = write_config(tmp_path, PAID_LINE.format(amount=AMOUNT), entry="club", extra=extra)
    sqlite_url = f'url = "sqlite:///{tmp_path / "fsapp.db"}"'
    text = path.read_text(encoding="utf-8")
    assert sqlite_url in text
    path.write_text(text.replace(sqlite_url, f'url = "{url}"\npool_size = 20'), encoding="utf-8")
    return path


def _import_customers(url: str) -> dict[str, int]:
    """20 customers, one phone each (also their mobile), in the database's directory; id -> starting debt."""
    lines = ["id,number,name,type,phones,mobile,pin,sales,support,other,debt"]
    debts: dict[str, int] = {}
    for i in range(1, CUSTOMERS + 1):
        cid = f"C-{i:03d}"
        debts[cid] = 1_000 * i
        lines.append(f"{cid},{1000 + i},Customer {i},gold,{_phone(i)},{_phone(i)},,,,,{debts[cid]}")
    rows = customers.parse_csv("\n".join(lines) + "\n", source="test.csv", region="IR")
    store = open_store(url)
    try:
        customers.save_rows(store, rows)
    finally:
        store.close()
    return debts


class Daemons:
    """``fsapp serve`` processes started by one test; killed at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, config: Path, name: str) -> Started:
        """Start one daemon, its log in a file (a pipe would fill up and stall it); wait for its port."""
        log = self.tmp_path / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fsapp", "serve", "-c", str(config)],
                env={**os.environ, "PYTHONPATH": str(ROOT), "FSAPP_LOG_LEVEL": "info"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"server_started"' in line:
                    port = int(json.loads(line)["listen"].rsplit(":", 1)[1])
                    return proc, ("127.0.0.1", port)
            if proc.poll() is not None:
                break
            gevent.sleep(0.05)
        raise AssertionError(f"daemon did not start: {log.read_text(encoding='utf-8', errors='replace')[-2000:]}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def daemons(pg_url: str, tmp_path: Path) -> Iterator[Daemons]:
    """Daemon processes for a test that has a PostgreSQL database; all killed at its end."""
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.stop()


def _start_pair(daemons: Daemons, config: Path, names: tuple[str, str]) -> list[Started]:
    started = [gevent.spawn(daemons.start, config, name) for name in names]
    gevent.joinall(started, raise_error=True)
    return [g.value for g in started]


def _wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        gevent.sleep(every)


def _talk(n: int) -> int:
    """Scripted talk seconds of call ``n``: 1 to 900, hitting whole-minute edges."""
    edges = (1, 59, 60, 61, 119, 120, 121, 599, 600, 601)
    return edges[n % len(edges)] if n % 3 == 0 else 1 + (n * 37) % 900


def test_two_daemons_share_one_ledger_exactly(pg_url: str, daemons: Daemons, tmp_path: Path) -> None:
    """500 calls over two daemons: exact ledger and debts, each call journaled once, each CRM write sent once."""
    debts = _import_customers(pg_url)
    config = _pg_config(tmp_path, pg_url)
    addresses = [address for _, address in _start_pair(daemons, config, ("a", "b"))]

    scripts = []
    for n in range(CALLS):
        i = n % CUSTOMERS + 1
        scripts.append(Script(caller=_phone(i), bridges=[f"answer:{_talk(n)}"]))
    t0 = time.monotonic()
    calls = [gevent.spawn(run_call, addresses[n % 2], s) for n, s in enumerate(scripts)]
    gevent.joinall(calls, timeout=60)
    fakes: list[FakeFreeSWITCH] = [g.value for g in calls]
    assert all(f is not None and f.exit_received and not f.error for f in fakes)
    print(f"{CALLS} calls over two daemons in {time.monotonic() - t0:.1f} s")

    expected_call: dict[str, int] = {}
    expected_customer: dict[str, int] = defaultdict(int)
    for n, fake in enumerate(fakes):
        talk = _talk(n)
        amount = -(-talk // 60) * AMOUNT
        expected_call[fake.uuid] = amount
        expected_customer[f"C-{n % CUSTOMERS + 1:03d}"] += amount
    # The stand-in is done at `exit`; the daemon writes the journal row just after.
    store = open_store(pg_url)
    try:
        rows = _wait_for(lambda: (r := store.list_calls()) and len(r) == CALLS and all(
            x["status"] != "active" for x in r) and r, 20, "500 finished journal rows")
        assert sorted(r["uuid"] for r in rows) == sorted(expected_call)
        assert {r["status"] for r in rows} == {"answered"}
        assert {r["uuid"]: r["charge"] for r in rows} == expected_call
        assert len({r["daemon"] for r in rows}) == 2

        charges = store.charges()
        assert len(charges) == CALLS
        assert {(c["call_uuid"], c["module"], c["source"]) for c in charges} == {
            (u, "paid", "call") for u in expected_call}
        assert {c["call_uuid"]: c["amount"] for c in charges} == expected_call
        totals: dict[str, int] = defaultdict(int)
        for c in charges:
            totals[c["customer_id"]] += c["amount"]
        assert totals == expected_customer
        directory = {c["id"]: c["debt"] for c in store.customer_rows()}
        assert directory == {cid: debts[cid] + expected_customer[cid] for cid in debts}

        _wait_for(lambda: not store.outbox_rows(pending_only=True), 30, "the outbox to drain", every=0.25)
        outbox = store.outbox_rows()
        assert len(outbox) == 2 * CALLS
        sent: dict[str, dict[str, int]] = defaultdict(dict)
        for row in outbox:
            call_uuid = row["idempotency_key"].rsplit("-", 2)[0]  # {uuid}-{module}-{invoice|link}
            sent[row["kind"]][call_uuid] = row["payload"]["amount"]
        assert sent == {"invoice": expected_call, "payment_link": expected_call}
        assert all(r["attempts"] == 1 and r["delivered_at"] and not r["last_error"] for r in outbox)

        others = store.db.one("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                              " AND pid <> pg_backend_pid()")
        assert others is not None and others["n"] <= 2 * 20  # each daemon within its pool_size
    finally:
        store.close()


def _charges_for(store: Store, uuid: str) -> list[dict[str, Any]]:
    return store.db.query("SELECT * FROM charges WHERE call_uuid = ? ORDER BY id", (uuid,))


def _talking(store: Store, uuid: str) -> bool:
    """The call's meter is bridged and has a heartbeat stamped at least a second into the talk."""
    meter = store.db.one("SELECT * FROM meters WHERE call_uuid = ? AND state = 'open'", (uuid,))
    return bool(meter and meter["bridge_us"] and meter["seen_us"] >= meter["bridge_us"] + 1_000_000)


def _debt(store: Store, customer: str) -> int:
    return {c["id"]: c["debt"] for c in store.customer_rows()}[customer]


def test_killed_daemon_meter_reconciled_once_by_the_other(pg_url: str, daemons: Daemons, tmp_path: Path) -> None:
    """A daemon killed mid-bridge: the other charges its meter once, within seconds; its restart adds nothing."""
    debts = _import_customers(pg_url)
    config = _pg_config(tmp_path, pg_url, FAST_HEARTBEAT)
    (doomed, doomed_address), (survivor, _) = _start_pair(daemons, config, ("doomed", "survivor"))

    store = open_store(pg_url)
    uuid = str(uuidlib.uuid4())
    call = gevent.spawn(run_call, doomed_address, Script(caller=_phone(7), bridges=["answer:60:hold"],
                                                         channel_uuid=uuid))
    try:
        _wait_for(lambda: _talking(store, uuid), 10, "a heartbeat stamped after the bridge answered")
        assert f":{doomed.pid}:" in store.open_meters()[0]["daemon"] + ":"  # host:pid[:...]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(5)  # reaped: its pid is gone from this host
        killed_at = time.monotonic()
        (last_beat,) = store.db.query("SELECT beat_at FROM meters WHERE call_uuid = ?", (uuid,))
        (charge,) = _wait_for(lambda: _charges_for(store, uuid), 6, "the survivor to reconcile the meter")
        print(f"reconciled {time.monotonic() - killed_at:.1f} s after the kill")
        # Sooner than a stale heartbeat (3 beats) would tell: judged dead by its pid.
        assert time.time() - last_beat["beat_at"] < 3.0
        assert charge["source"] == "reconciled"
        assert charge["customer_id"] == "C-007"
        assert charge["talk_seconds"] >= 1 and charge["units"] == 1 and charge["amount"] == AMOUNT
        assert survivor.poll() is None
        assert store.open_meters() == []
        row = store.get_call(uuid)
        assert row is not None and row["status"] == "failed" and row["charge"] == AMOUNT

        daemons.start(config, "doomed")
        gevent.sleep(2.5)  # its reconcile at start, then two rounds of its maintenance loop
        assert _charges_for(store, uuid) == [charge]
        assert len(store.charges()) == 1
        assert _debt(store, "C-007") == debts["C-007"] + AMOUNT
        _wait_for(lambda: not store.outbox_rows(pending_only=True), 10, "the outbox to drain")
        assert sorted((r["kind"], r["attempts"]) for r in store.outbox_rows()) == [
            ("invoice", 1), ("payment_link", 1)]
    finally:
        call.kill()
        store.close()


def test_call_resumed_on_the_other_daemon_is_billed_for_both_talks(
    pg_url: str, daemons: Daemons, tmp_path: Path
) -> None:
    """A call the dialplan hands to the second daemon (socket_resume) after the first died bills both talks."""
    debts = _import_customers(pg_url)
    config = _pg_config(tmp_path, pg_url, FAST_HEARTBEAT)
    (first, first_address), (_, second_address) = _start_pair(daemons, config, ("first", "second"))

    store = open_store(pg_url)
    uuid = str(uuidlib.uuid4())
    call = gevent.spawn(run_call, first_address, Script(caller=_phone(3), bridges=["answer:60:hold"],
                                                        channel_uuid=uuid))
    try:
        _wait_for(lambda: _talking(store, uuid), 10, "a heartbeat stamped after the bridge answered")
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        _wait_for(lambda: _charges_for(store, uuid), 6, "the second daemon to reconcile the first one's meter")
        call.kill()
        # FreeSWITCH goes on to the next socket action: the same channel, from the entry module again.
        resumed = run_call(second_address, Script(caller=_phone(3), bridges=["answer:120"], channel_uuid=uuid))
        assert resumed.exit_received and not resumed.error
        charges = _wait_for(lambda: len(c := _charges_for(store, uuid)) == 2 and c, 5, "the second talk's charge")
        assert [(c["source"], c["amount"]) for c in charges] == [("reconciled", AMOUNT), ("call", 2 * AMOUNT)]
        assert _debt(store, "C-003") == debts["C-003"] + 3 * AMOUNT
    finally:
        call.kill()
        store.close()


def test_database_outage_mid_talk_is_charged_in_full(pg_url: str, daemons: Daemons, tmp_path: Path) -> None:
    """The database gone for two heartbeats mid-talk: the call stays answered and is charged for its whole talk."""
    import psycopg

    debts = _import_customers(pg_url)
    config = _pg_config(tmp_path, pg_url, FAST_HEARTBEAT)
    _, address = daemons.start(config, "only")
    name = pg_url.rsplit("/", 1)[1]
    store = open_store(pg_url)
    uuid = str(uuidlib.uuid4())
    call = gevent.spawn(run_call, address, Script(caller=_phone(5), bridges=["answer:6:hold"], channel_uuid=uuid))
    try:
        _wait_for(lambda: _talking(store, uuid), 10, "a heartbeat stamped after the bridge answered")
        with psycopg.connect(os.environ[PG_ENV], autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            gevent.sleep(2)
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        call.join(15)
        row = _wait_for(lambda: (r := store.get_call(uuid)) and r["status"] != "active" and r, 10, "the journal row")
        assert [(c["source"], c["talk_seconds"], c["amount"]) for c in _charges_for(store, uuid)] == [
            ("call", 6, AMOUNT)]
        assert row["status"] == "answered" and row["charge"] == AMOUNT
        assert _debt(store, "C-005") == debts["C-005"] + AMOUNT
    finally:
        with psycopg.connect(os.environ[PG_ENV], autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        call.kill()
        store.close()


POOL_SCRIPT = textwrap.dedent("""
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import time

    import gevent

    from fsapp.store.postgres import PostgresDB

    url, mode = sys.argv[1], sys.argv[2]
    out = {}
    if mode == "slow":
        db = PostgresDB(url, size=4)
        db.query("SELECT 1 AS warm")
        t0 = time.monotonic()

        def slow():
            db.query("SELECT pg_sleep(1)")
            out["sleep_done"] = time.monotonic() - t0

        def quick():
            for i in range(20):
                assert db.one("SELECT ? + 1 AS n", (i,))["n"] == i + 1
            out["quick_done"] = time.monotonic() - t0

        gevent.joinall([gevent.spawn(slow), gevent.spawn(quick)], raise_error=True)
    elif mode == "ceiling":
        db = PostgresDB(url, size=5)
        gevent.joinall([gevent.spawn(db.query, "SELECT pg_sleep(0.05)") for _ in range(60)], raise_error=True)
        out["sessions"] = db.one(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )["n"] + 1
    elif mode == "killed":
        db = PostgresDB(url, size=1, wait_timeout=3)

        def in_query():
            db.query("SELECT pg_sleep(5)")

        def in_transaction():
            with db.transaction():
                db.execute("SELECT pg_sleep(5)")

        def waiter():
            try:
                return db.one("SELECT 41 + 1 AS n")["n"]
            except Exception as exc:
                return str(exc)

        out["next"], out["waited"] = [], []
        for victim in (in_query, in_transaction):
            g = gevent.spawn(victim)
            gevent.sleep(0.2)
            w = gevent.spawn(waiter)  # queued for the pool's only connection
            gevent.sleep(0.2)
            g.kill()
            killed = time.monotonic()
            out["next"].append(w.get())
            out["waited"].append(time.monotonic() - killed)
    elif mode == "terminated":
        import psycopg

        db = PostgresDB(url, size=3)
        gevent.joinall([gevent.spawn(db.query, "SELECT pg_sleep(0.1)") for _ in range(3)], raise_error=True)
        with psycopg.connect(url, autocommit=True) as admin:
            out["terminated"] = admin.execute(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        gevent.sleep(0.2)

        def after():
            try:
                with db.transaction():
                    return db.one("SELECT 41 + 1 AS n FROM pg_sleep(0.05)")["n"]
            except Exception as exc:
                return str(exc)

        out["after"] = [g.get() for g in [gevent.spawn(after) for _ in range(4)]]
    db.close()
    print(json.dumps(out))
""")


def _pool_script(url: str, mode: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", POOL_SCRIPT, url, mode], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_slow_query_does_not_stall_other_greenlets(pg_url: str) -> None:
    """Under gevent's monkey-patching a pg_sleep(1) parks only its greenlet: 20 quick queries finish first."""
    timings = _pool_script(pg_url, "slow")
    print(timings)
    assert timings["sleep_done"] >= 1.0
    assert timings["quick_done"] < 0.5  # counted from when both greenlets were started


def test_pool_never_opens_more_than_its_size(pg_url: str) -> None:
    """60 greenlets querying at once through a pool of 5 open 5 connections, not one each."""
    assert _pool_script(pg_url, "ceiling")["sessions"] <= 5


def test_greenlet_killed_mid_query_leaves_no_busy_connection(pg_url: str) -> None:
    """A greenlet killed mid-query or mid-transaction: the one waiting for the pool gets a working connection."""
    out = _pool_script(pg_url, "killed")
    assert out["next"] == [42, 42]
    assert max(out["waited"]) < 1.0  # served at once, not after the pool's 3 s wait_timeout


def test_connections_ended_by_the_server_are_not_handed_out(pg_url: str) -> None:
    """After PostgreSQL ends the pool's idle connections (restart, failover), the next queries still succeed."""
    out = _pool_script(pg_url, "terminated")
    assert out["terminated"] == 3
    assert out["after"] == [42, 42, 42, 42]


def test_serve_exits_1_naming_storage_url_when_postgres_is_unreachable(tmp_path: Path) -> None:
    """`fsapp serve` on a PostgreSQL URL nobody listens on exits 1 with a message naming storage.url."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the daemon tries it
    config = _pg_config(tmp_path, f"postgresql://fsapp@127.0.0.1:{port}/fsapp")
    proc = subprocess.run([sys.executable, "-m", "fsapp", "serve", "-c", str(config)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert f"{config}:storage.url:" in proc.stderr
    assert "server_started" not in proc.stderr
