"""PIN guessing against ``fsapp serve`` daemons, with real concurrency through their sockets.

A stand-in HTTP CRM (real threads, a real socket) takes ``DELAY`` seconds to check each
PIN and counts every check it is asked for; the daemons are real ``fsapp serve``
processes (two on one database), on SQLite and on PostgreSQL; FreeSWITCH is the
stand-in, many calls at once. What is measured is what the CRM saw:

- parallel callers guessing one customer's PIN get no more checks than
  ``pin_max_failures`` (each attempt takes its slot before its PIN is checked);
- one caller ID spraying one PIN across many customers is locked out after
  ``caller_max_failures`` wrong PINs;
- a daemon killed, or a caller hanging up, while a PIN is being checked leaves that attempt counted;
- withheld numbers share one caller limit; failures of all customers raise one alarm.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gevent
import pytest
import structlog

from fsapp import log as logmod
from fsapp.config import Config
from fsapp.customers import parse_csv, save_rows
from fsapp.fakefs import FakeFreeSWITCH, Script
from fsapp.metrics import PrometheusMetrics
from fsapp.simulate import wait_idle
from fsapp.store import open_store
from tests.helpers import Daemon, write_config
from tests.test_postgres import Daemons

TOKEN_ENV = "FSAPP_TEST_GUESSING_CRM_TOKEN"
DELAY = 0.3
WRONG = "9876"
PIN_FLOW = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "pin"
max_attempts = 3
timeout_ms = 3000
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # hundreds of calls connect at once


class CRMStandIn:
    """An HTTP CRM whose customers are ``number -> (id, pin)``; it records every PIN check."""

    def __init__(self, pins: dict[str, str], delay: float = DELAY) -> None:
        self.pins = pins  # customer id (= number) -> PIN
        self.delay = delay
        self.checks: list[tuple[str, bool]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = threading.Event()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"

    def verified(self, pin_ok: bool | None = None) -> int:
        with self._lock:
            return sum(1 for _cid, ok in self.checks if pin_ok is None or ok == pin_ok)

    def _check(self, cid: str, pin: str) -> bool:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        ok = self.pins.get(cid) == pin
        with self._lock:
            self.checks.append((cid, ok))  # counted when asked: a check whose caller is gone still reached the CRM
        self.started.set()
        time.sleep(self.delay)
        with self._lock:
            self.in_flight -= 1
        return ok

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the daemon gave up waiting: that is what the test drives
                    pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                number = parse_qs(url.query).get("number", [""])[0]
                if url.path == "/api/customers" and number in crm.pins:
                    self._json(200, {"id": number, "number": number, "name": "", "type": "", "mobile": ""})
                elif url.path == "/api/customers":
                    self._json(404, {"error": "not found"})
                else:
                    self._json(200, {"ok": True})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                cid = self.path.split("/")[-2]
                self._json(200, {"ok": crm._check(cid, body["pin"])})

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crm_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "guessing-token")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.stop()


def config(tmp_path: Path, store_url: str, crm: CRMStandIn, security: str) -> Path:
    extra = (f'[crm]\nkind = "http"\nurl = "{crm.url}"\ntoken_env = "{TOKEN_ENV}"\n'
             f"timeout_seconds = 5\n\n[security]\n{security}\n")
    path = write_config(tmp_path, PIN_FLOW, extra=extra)
    text = path.read_text(encoding="utf-8")
    sqlite_url = f'url = "sqlite:///{tmp_path / "fsapp.db"}"'
    assert sqlite_url in text
    url = store_url if store_url.startswith("postgres") else f"sqlite:///{tmp_path / 'shared.db'}"
    path.write_text(text.replace(sqlite_url, f'url = "{url}"'), encoding="utf-8")
    open_store(url).close()  # the schema first: two daemons then start together on it
    return path


def start_two(daemons: Daemons, path: Path) -> list[tuple[str, int]]:
    started = [gevent.spawn(daemons.start, path, name) for name in ("a", "b")]
    gevent.joinall(started, raise_error=True)
    return [g.value[1] for g in started]


def call_all(scripts: list[tuple[tuple[str, int], Script]]) -> list[FakeFreeSWITCH]:
    """Run every call at once; return the stand-ins when all have ended."""
    calls = [FakeFreeSWITCH(address, script) for address, script in scripts]
    gevent.joinall([gevent.spawn(c.run) for c in calls], timeout=120, raise_error=True)
    for c in calls:
        assert c.exit_received and not c.error, c.error
    return calls


def journal(store_url: str, tmp_path: Path, calls: list[FakeFreeSWITCH]) -> list[dict[str, Any]]:
    url = store_url if store_url.startswith("postgres") else f"sqlite:///{tmp_path / 'shared.db'}"
    store = open_store(url)
    try:
        deadline = time.monotonic() + 60  # the rows are written just after the stand-ins end; a loaded host is slow
        while True:
            rows = [store.get_call(c.uuid) for c in calls]
            if all(r and r["status"] != "active" for r in rows) or time.monotonic() > deadline:
                return [r or {} for r in rows]
            time.sleep(0.05)
    finally:
        store.close()


def results(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.get("auth_result", "")] = out.get(r.get("auth_result", ""), 0) + 1
    return out


# ------------------------------------------------------------------ one customer, many callers at once


def test_parallel_callers_get_no_more_pin_checks_than_the_limit(store_url: str, tmp_path: Path,
                                                                daemons: Daemons, crm_token: None) -> None:
    """30 callers at once, 3 wrong PINs each, for one customer, over two daemons: the CRM checks 5 PINs."""
    crm = CRMStandIn({"1001": "4821"})
    try:
        addresses = start_two(daemons, config(tmp_path, store_url, crm, "pin_max_failures = 5"))
        scripts = [(addresses[i % 2], Script(caller=f"0912{i:07d}", dtmf=["1001", WRONG, WRONG, WRONG]))
                   for i in range(30)]
        calls = call_all(scripts)
        rows = journal(store_url, tmp_path, calls)
    finally:
        crm.close()
    assert crm.verified() == 5, crm.checks
    assert crm.most_in_flight <= 5
    assert results(rows) == {"locked": 30}


# ------------------------------------------------------------------ one caller ID, many customers


def test_one_caller_spraying_one_pin_across_customers_is_locked_out(store_url: str, tmp_path: Path,
                                                                    daemons: Daemons, crm_token: None) -> None:
    """One caller ID, 200 calls at once, 200 customers, PIN 1234 once each (20 of them have it): 10
    wrong PINs at most. A check in flight holds its slot, a right PIN's too: while every slot is
    held the burst's other calls are refused, so the burst may end with 9 wrong (seen on a loaded
    machine). The calls after it, one at a time, take what is left: 10 wrong in all, then locked."""
    pins = {str(1000 + i): ("1234" if i % 10 == 9 else str(5000 + i)) for i in range(200)}
    crm = CRMStandIn(pins, delay=0.05)
    try:
        addresses = start_two(daemons, config(tmp_path, store_url, crm, ""))  # caller_max_failures: 10 by default
        scripts = [(addresses[i % 2], Script(caller="09121234567", dtmf=[number, "1234"]))
                   for i, number in enumerate(pins)]
        calls = call_all(scripts)
        in_burst = crm.verified(False)
        later = [call_all([(addresses[k % 2], Script(caller="09121234567", dtmf=[number, "1234"]))])[0]
                 for k, number in enumerate([str(1000 + k) for k in range(9)][:11 - in_burst])]
        # Another caller ID is not locked out by it.
        other = call_all([(addresses[0], Script(caller="09351112233", dtmf=["1009", "1234"]))])
        rows = journal(store_url, tmp_path, calls + later + other)
    finally:
        crm.close()
    wrong, opened = crm.verified(False), crm.verified(True) - 1
    assert in_burst <= 10 and wrong == 10, crm.checks
    assert [r["auth_result"] for r in rows[len(calls):-1]][-1] == "locked"  # the last one after the 10th
    assert rows[-1]["auth_result"] == "ok"
    counts = results(rows[:len(calls)])  # the burst's calls
    assert counts.get("ok", 0) == opened < 20
    # The tenth wrong PIN locked its own call (and calls still in their retries); every later one was
    # refused before any check.
    assert counts.get("wrong_pin", 0) + counts["locked"] == 200 - opened
    assert counts.get("wrong_pin", 0) <= 9


# ------------------------------------------------------------------ a daemon dies mid-check


def test_daemon_killed_mid_check_leaves_the_attempt_counted(store_url: str, tmp_path: Path,
                                                            daemons: Daemons, crm_token: None) -> None:
    """SIGKILL while the CRM checks a PIN: that attempt keeps its slot, so 3 checks in all with a limit of 3."""
    crm = CRMStandIn({"1001": "4821"}, delay=2.0)
    try:
        path = config(tmp_path, store_url, crm, "pin_max_failures = 3")
        victim, address = daemons.start(path, "victim")
        first = FakeFreeSWITCH(address, Script(caller="09121110000", dtmf=["1001", WRONG]))
        running = gevent.spawn(first.run)
        deadline = time.monotonic() + 20
        while not crm.started.is_set() and time.monotonic() < deadline:
            gevent.sleep(0.01)  # the call's greenlet runs meanwhile
        assert crm.started.is_set()
        victim.kill()
        victim.wait()
        running.join(timeout=10)
        crm.delay = 0.0
        _proc, survivor = daemons.start(path, "survivor")
        calls = call_all([(survivor, Script(caller=f"0912111000{i}", dtmf=["1001", WRONG]))
                          for i in range(1, 4)])
        rows = journal(store_url, tmp_path, calls)
    finally:
        crm.close()
    assert crm.verified() == 3, crm.checks  # the killed daemon's check, then two more
    assert sorted(r["auth_result"] for r in rows) == ["locked", "wrong_pin", "wrong_pin"]


# ------------------------------------------------------------------ withheld numbers, the alarm, the metrics

DIRECTORY = "id,number,name,type,phones,mobile,pin,sales,support,other,debt\n" + "".join(
    f"cus-{i},{2000 + i},Customer {i},,,,{4000 + i},,,,0\n" for i in range(6))


def local_daemon(make_config: Callable[..., Config], daemon: Callable[[Config], Daemon], security: str) -> Daemon:
    d = daemon(make_config(PIN_FLOW.replace("max_attempts = 3", "max_attempts = 1"),
                           extra=f"[security]\n{security}\n"))
    save_rows(d.store, parse_csv(DIRECTORY))
    d.app.metrics = PrometheusMetrics(process=False)
    return d


def sample(d: Daemon, name: str, **labels: str) -> float:
    value = d.app.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_withheld_numbers_share_one_caller_limit_and_numbered_callers_keep_theirs(
        make_config: Callable[..., Config], daemon: Callable[[Config], Daemon]) -> None:
    """"anonymous", "" and "0000000000" count as one caller ID, locked at anonymous_max_failures; others still try."""
    d = local_daemon(make_config, daemon, "anonymous_max_failures = 2\ncaller_max_failures = 5")
    for i, caller in enumerate(("anonymous", "0000000000")):
        _fake, row = d.call(caller=caller, dtmf=[str(2000 + i), WRONG])
        assert row is not None and row["auth_result"] == ("wrong_pin" if i == 0 else "locked")
    fake, row = d.call(caller="", dtmf=["2002", "4002"])
    assert row is not None and row["auth_result"] == "locked"
    assert len([s for s in fake.steps if s.app == "play_and_get_digits"]) == 1  # the PIN is not even asked
    _fake, row = d.call(caller="09121234567", dtmf=["2002", "4002"])
    assert row is not None and row["auth_result"] == "ok"
    assert sample(d, "fsapp_pin_failures_total", scope="caller") == 2
    assert sample(d, "fsapp_pin_failures_total", scope="global") == 2


def test_failures_of_all_customers_reaching_the_alarm_level_raise_one_alarm(
        make_config: Callable[..., Config], daemon: Callable[[Config], Daemon]) -> None:
    """Callers each with their own number and customer: the 4th wrong PIN overall logs pin_failure_alarm, once."""
    d = local_daemon(make_config, daemon, "alarm_failures = 4\nalarm_window_seconds = 300")
    lines = io.StringIO()
    saved = structlog.get_config()
    logmod.configure("info", json=True, stream=lines)
    try:
        for i in range(6):
            _fake, row = d.call(caller=f"0912555000{i}", dtmf=[str(2000 + i), WRONG])
            assert row is not None and row["auth_result"] == "wrong_pin"
    finally:
        structlog.configure(**saved)
    alarms = [json.loads(x) for x in lines.getvalue().splitlines() if '"pin_failure_alarm"' in x]
    assert len(alarms) == 1 and alarms[0]["failures"] == 4 and alarms[0]["level"] == "error"
    assert alarms[0]["caller"] == "09125550003"
    assert sample(d, "fsapp_pin_alarms_total") == 1
    assert sample(d, "fsapp_pin_failures_total", scope="global") == 6
    assert sample(d, "fsapp_pin_failures_total", scope="customer") == 0


def test_caller_hanging_up_during_the_check_gets_no_slot_back(make_config: Callable[..., Config],
                                                               daemon: Callable[[Config], Daemon]) -> None:
    """A caller who hangs up while the CRM checks a wrong PIN still spent it: with a limit of 2, the next one locks."""
    d = local_daemon(make_config, daemon, "pin_max_failures = 2")
    real = d.app.crm
    hung_up: list[FakeFreeSWITCH] = []

    class HangUpMidCheck:
        """The directory; the first caller hangs up while their PIN is being checked."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def verify_pin(self, customer_id: str, pin: str) -> bool:
            if not hung_up[0].closed_by_peer:
                hung_up[0]._sock.close()
                gevent.sleep(0.05)
            return bool(real.verify_pin(customer_id, pin))

    d.app.crm = HangUpMidCheck()
    hung_up.append(FakeFreeSWITCH(d.address, Script(caller="09121110001", dtmf=["2000", WRONG])))
    gevent.spawn(hung_up[0].run).join(timeout=10)
    assert hung_up[0].closed_by_peer
    wait_idle(d.server)  # the daemon finishes the check the caller left
    _fake, row = d.call(caller="09121110002", dtmf=["2000", WRONG])
    assert row is not None and row["auth_result"] == "locked"
    assert d.store.locked_until("cus-0", time.time()) > time.time()
