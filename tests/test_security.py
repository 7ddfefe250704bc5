"""Security: who may connect, what a caller can smuggle in, and what never reaches a log.

- the listener refuses peers outside ``[server] allow`` before reading a byte;
- caller ID, caller name and typed digits full of quotes, separators, braces, path
  pieces, Persian text and control characters reach no dial string, prompt path or
  SQL statement: the journal keeps them as text, lookups find nothing;
- a CRM ``responsible`` extension that is really a dial string is refused;
- PIN guesses count across daemons sharing a database;
- no PIN, token or full card-like number in a log line, and the CRM token (read
  from the environment) is printed by no command.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest
import structlog
from pytest_httpserver import HTTPServer

from fsapp import config as configmod
from fsapp import esl
from fsapp import log as logmod
from fsapp.customers import ImportError_, parse_csv, save_rows
from fsapp.fakefs import FakeFreeSWITCH, Script, fs_encode
from fsapp.simulate import wait_idle
from tests.helpers import ROOT, SOUNDS, Daemon, write_config

PIN = "48273916"
WRONG_PIN = "51738264"
CARD = "6037991234567890"
TOKEN_ENV = "FSAPP_TEST_SECURITY_CRM_TOKEN"
TOKEN = "sec-Zq81-token-never-printed"

CUSTOMERS_CSV = """\
id,number,name,type,phones,mobile,pin,sales,support,other,debt
cus-1,C-1001,Sara Ahmadi,vip,09121234567,09121234567,48273916,1001,1002,,0
"""

# Entry: identify by caller ID; unknown callers type a customer number; then a menu.
FLOW = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
next = "expert"
error = "ask"

[[modules]]
code = "ask"
kind = "customer_club"
auth = "customer_number"
customer_number_prefix = "C-"
max_attempts = 1
timeout_ms = 3000
enter_number = "club/enter_number"
next = "expert"
error = "menu"

[[modules]]
code = "menu"
kind = "menu"
prompt = "menu/main"
options = { "7" = "ext:1001", "8" = "queue:support" }
max_attempts = 1
next = "hangup"
error = "hangup:CALL_REJECTED"

[[modules]]
code = "expert"
kind = "case_expert"
role = "sales"
ring_seconds = 20
connecting = "expert/connecting"
unavailable = "expert/unavailable"
next = "hangup:NORMAL_CLEARING"
error = "hangup:NO_ROUTE_DESTINATION"
"""

PIN_FLOW = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "pin"
customer_number_prefix = "C-"
max_attempts = 1
timeout_ms = 3000
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""

MENU = """
[[modules]]
code = "main"
kind = "menu"
prompt = "menu/main"
invalid_prompt = "menu/invalid"
options = { "1" = "ext:1001" }
next = "hangup"
error = "hangup:CALL_REJECTED"
"""

HOSTILE = [
    "1001'; DROP TABLE calls; --",
    "0912' OR '1'='1",
    "1001;sofia/gateway/evil/00123",
    "{absolute_codec_string=PCMA}1001",
    "1001}{x=y}",
    "1001,sofia/gateway/evil/00123",
    "1001|sofia/gateway/evil/00123",
    "../../../etc/passwd",
    "مشتری تست ۱۲۳",
    "\x00\x07\x1b[31m\r\t1001",
    "${system(id)}",
    "%0Aexecute-app-name: hangup",
    "100%_",
]
# What no command of the daemon may carry, whatever the caller sent.
FRAGMENTS = ("DROP", "'", ";", "evil", "absolute_codec", "x=y", "|sofia", "../", "etc/passwd", "system(", "\x00",
             "\x07", "\x1b", "\r", "\t", "%", "مشتری", "۱")
COMMANDS = {"connect", "myevents", "linger", "sendmsg", "exit"}
HEADERS = {"call-command", "execute-app-name", "execute-app-arg", "Event-UUID", "hangup-cause", "event-lock"}
DIAL_RE = re.compile(r"\{originate_timeout=\d+\}user/[0-9]+@\$\{domain_name\}")
PROMPT_RE = re.compile(re.escape(f"{SOUNDS}/fa/") + r"[a-z0-9_]+/[a-z0-9_]+\.wav|silence_stream://250")


def delivered(text: str) -> str:
    """What the daemon reads for ``text`` after FreeSWITCH URL-encodes it into a header."""
    return esl.decode(fs_encode(text))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command the in-process daemon writes to a FreeSWITCH socket, as raw text."""
    out: list[str] = []
    real = esl.Session._send

    def record(self: esl.Session, text: str) -> None:
        out.append(text)
        real(self, text)

    monkeypatch.setattr(esl.Session, "_send", record)
    return out


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The project's log pipeline (redact included) as JSON lines at debug level; structlog restored after."""
    saved = structlog.get_config()
    buf = io.StringIO()
    logmod.configure("debug", json=True, stream=buf)
    try:
        yield buf
    finally:
        structlog.configure(**saved)


def seed(d: Daemon, csv_text: str = CUSTOMERS_CSV) -> None:
    save_rows(d.store, parse_csv(csv_text))


class LaxFreeSWITCH(FakeFreeSWITCH):
    """A FreeSWITCH whose play_and_get_digits ignores the regex: the daemon gets whatever was typed."""

    def _app_play_and_get_digits(self, arg: str, app_uuid: str) -> None:
        parts = arg.split(" ")
        if len(parts) > 8:
            parts[8] = ""
        super()._app_play_and_get_digits(" ".join(parts), app_uuid)
        self.steps[-1].arg = arg


def lax_call(d: Daemon, **script: Any) -> tuple[FakeFreeSWITCH, dict[str, Any] | None]:
    fake = LaxFreeSWITCH(d.address, Script(**script)).run()
    wait_idle(d.server)
    return fake, d.store.get_call(fake.uuid)


def assert_commands_clean(commands: list[str]) -> None:
    """Only known commands and headers; bridges dial a plain extension; playbacks name shipped prompts."""
    assert commands
    for written in commands:
        # Several commands may go out in one write; each ends with a blank line.
        assert written.endswith("\n\n") and "\n\n\n" not in written, repr(written)
        for text in (c + "\n\n" for c in written[:-2].split("\n\n")):
            _assert_command_clean(text)


def _assert_command_clean(text: str) -> None:
    first, *lines = text[:-2].split("\n")
    assert first in COMMANDS or first == f"nixevent {esl.NIXED}", repr(text)
    headers = dict(line.split(": ", 1) for line in lines)
    assert set(headers) <= HEADERS, repr(text)
    for fragment in FRAGMENTS:
        assert fragment not in text, (fragment, text)
    app, arg = headers.get("execute-app-name", ""), headers.get("execute-app-arg", "")
    if app == "bridge":
        assert DIAL_RE.fullmatch(arg), arg
    elif app == "playback":
        files = arg.removeprefix("file_string://").split("!")
        assert all(PROMPT_RE.fullmatch(f) for f in files), arg
    elif app == "play_and_get_digits":
        fields = arg.split(" ")
        assert PROMPT_RE.fullmatch(fields[5]) and PROMPT_RE.fullmatch(fields[6]), arg
        assert re.fullmatch(r"\^[\[\]()|0-9*#\\d+-]+\$", fields[8]), arg


# ------------------------------------------------------------------ the listener


def test_allow_verdicts_are_remembered_per_peer_and_stay_right(tmp_path: Path,
                                                               daemon: Callable[..., Daemon]) -> None:
    """Each peer's verdict is worked out once; asked again (or after the memory is full) it is the same."""
    path = write_config(tmp_path, MENU)
    path.write_text(path.read_text().replace('allow = ["127.0.0.1"]', 'allow = ["127.0.0.1", "10.9.8.0/24"]'))
    server = daemon(configmod.load(path, check_files=False)).server
    cases = {"127.0.0.1": True, "10.9.8.77": True, "::ffff:10.9.8.1": True, "10.9.9.1": False,
             "::1": False, "not-an-address": False, "": False}
    for _ in range(2):
        assert {host: server.allowed(host) for host in cases} == cases
    for i in range(3000):  # a scan from many hosts: the memory stays bounded, the verdicts right
        assert server.allowed(f"192.168.{i // 256}.{i % 256}") is False
    assert len(server._allowed) <= 1024
    assert {host: server.allowed(host) for host in cases} == cases


def test_peer_outside_allow_that_talks_first_is_refused_unread(tmp_path: Path, daemon: Callable[..., Daemon],
                                                                json_log: io.StringIO) -> None:
    """A refused peer that sends a whole call at once gets nothing back, leaves no journal row, is logged."""
    path = write_config(tmp_path, MENU)
    path.write_text(path.read_text().replace('allow = ["127.0.0.1"]', 'allow = ["10.9.8.0/24"]'))
    d = daemon(configmod.load(path, check_files=False))
    fake_stream = (b"Event-Name: CHANNEL_DATA\nUnique-ID: 5a1b0c1e-0000-4000-8000-000000000001\n"
                   b"Content-Type: command/reply\nReply-Text: %2BOK%0A\n\n"
                   b"Content-Type: command/reply\nReply-Text: +OK Events Enabled\n\n") * 50
    s = gevent.socket.create_connection(d.address, timeout=5)
    s.sendall(fake_stream)
    try:
        got = s.recv(100)
    except ConnectionResetError:  # closed with our bytes unread: the kernel answers with a reset
        got = b""
    s.close()
    assert got == b""  # not even "connect"
    wait_idle(d.server)
    assert d.store.list_calls() == []
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    refused = [line for line in lines if line["event"] == "connection_refused"]
    assert len(refused) == 1 and refused[0]["peer"] == "127.0.0.1" and "allow" in refused[0]["reason"]
    assert not [line for line in lines if line["event"].startswith("call_")]


# ------------------------------------------------------------------ what a caller can send


@pytest.fixture
def flow_daemon(make_config: Callable[..., configmod.Config], daemon: Callable[..., Daemon]) -> Daemon:
    d = daemon(make_config(FLOW))
    seed(d)
    return d


@pytest.mark.parametrize("lax", [False, True], ids=["freeswitch", "lax_regex"])
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_caller_id_name_and_digits_reach_no_command(flow_daemon: Daemon, sent: list[str], value: str,
                                                             lax: bool) -> None:
    """Quotes, separators, braces, ../, Persian, control chars as caller ID, name and DTMF: clean commands."""
    d = flow_daemon
    script = {"caller": value, "caller_name": value, "dtmf": [value, value]}
    fake, row = lax_call(d, **script) if lax else d.call(**script)
    assert fake.exit_received and not fake.error
    asks = [s.result for s in fake.steps if s.app == "play_and_get_digits"]
    if lax:  # the daemon itself got the typed text, not FreeSWITCH's verdict on it
        assert asks[0] == value[:12]
    assert "bridge" not in fake.apps()
    assert_commands_clean(sent)
    assert row is not None
    assert row["caller"] == delivered(value) and row["caller_name"] == delivered(value)
    assert row["customer_id"] == "" and row["final_destination"] == "hangup:CALL_REJECTED"
    assert row["modules"] == ["main", "ask", "menu"]
    assert len(d.store.list_calls()) == 1 and d.store.customer_count() == 1  # no statement was altered
    assert d.app.crm.find_by_phone(value) is None
    assert d.app.crm.find_by_number(value) is None and d.app.crm.find_by_number("C-" + value) is None
    assert [r["uuid"] for r in d.store.list_calls(number=delivered(value))] == [fake.uuid]


def test_hostile_caller_name_of_a_known_caller_stays_out_of_the_bridge(flow_daemon: Daemon, sent: list[str]) -> None:
    """An identified caller whose name is a dial string: the bridge dials the customer's own extension only."""
    name = "{sip_h_X=1}1001,sofia/gateway/evil/00123|../x'; DROP TABLE calls;--"
    fake, row = flow_daemon.call(caller="09121234567", caller_name=name, bridges=["answer:5"])
    assert [s.arg for s in fake.steps if s.app == "bridge"] == ["{originate_timeout=20}user/1001@${domain_name}"]
    assert_commands_clean(sent)
    assert row is not None and row["caller_name"] == name and row["customer_id"] == "cus-1"
    assert row["status"] == "answered" and row["extension"] == "1001"


def test_many_hostile_calls_leave_the_journal_whole(flow_daemon: Daemon) -> None:
    """Every hostile call is journaled once with its text; no row or table is lost to a quote."""
    d = flow_daemon
    uuids = [d.call(caller=v, caller_name=v[::-1], dtmf=[v])[0].uuid for v in HOSTILE]
    rows = {r["uuid"]: r for r in d.store.list_calls()}
    assert set(rows) == set(uuids)
    for uuid, value in zip(uuids, HOSTILE, strict=True):
        assert rows[uuid]["caller"] == delivered(value)
        assert rows[uuid]["caller_name"] == delivered(value[::-1])
    assert d.store.customer_count() == 1


# ------------------------------------------------------------------ responsible extensions from the CRM

BAD_EXTENSIONS = [
    "1001,sofia/gateway/evil/00123",
    "{x=y}1001",
    "1001|sofia/gateway/evil/00123",
    "1001 1002",
    "../1001",
    "1001;fs_path=sip:evil",
    "[leg_timeout=1]1001",
    "1001\n",
    "١٠٠١",
    "${evil}",
]


@pytest.mark.parametrize("ext", [e for e in BAD_EXTENSIONS if e.strip() == e], ids=str)
def test_directory_import_rejects_a_dial_string_as_responsible(ext: str) -> None:
    """The CSV import refuses a sales/support/other value that is not a plain extension."""
    quoted = '"' + ext.replace('"', '""') + '"'
    text = CUSTOMERS_CSV.replace(",1001,1002,,0", f",{quoted},1002,,0")
    with pytest.raises(ImportError_) as err:
        parse_csv(text)
    assert any("sales: not an extension" in p for p in err.value.problems), err.value.problems


def assert_expert_refused(fake: FakeFreeSWITCH, row: dict[str, Any] | None, sent: list[str]) -> None:
    assert row is not None
    assert row["customer_id"] and row["modules"] == ["main", "expert"]
    assert row["final_destination"] == "hangup:NO_ROUTE_DESTINATION"
    assert "bridge" not in fake.apps() and row["status"] != "answered"
    assert fake.prompts()[-1].endswith("/fa/expert/unavailable.wav")
    assert_commands_clean(sent)


@pytest.mark.parametrize("ext", BAD_EXTENSIONS, ids=range(len(BAD_EXTENSIONS)))
def test_case_expert_refuses_a_tampered_local_responsible(flow_daemon: Daemon, sent: list[str], ext: str) -> None:
    """A directory row written past the import (sales = a dial string): case_expert goes to error, bridges nothing."""
    d = flow_daemon
    d.store.upsert_customer({"id": "cus-1", "number": "C-1001", "name": "x", "type": "vip", "sales": ext},
                            ["+989121234567"])
    fake, row = d.call(caller="09121234567", bridges=["answer:5"])
    assert_expert_refused(fake, row, sent)


@pytest.fixture
def crm_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


def http_crm(url: str) -> str:
    return (f'[crm]\nkind = "http"\nurl = "{url}"\ntoken_env = "{TOKEN_ENV}"\n'
            "timeout_seconds = 1\nconnect_timeout_seconds = 0.5\n")


def crm_customer(sales: object) -> dict[str, Any]:
    return {"id": "crm-9", "number": "C-1001", "name": "Sara", "type": "vip", "mobile": "+989121234567",
            "phones": ["+989121234567"], "responsible": {"sales": sales, "support": "1002"}}


@pytest.mark.parametrize("ext", BAD_EXTENSIONS, ids=range(len(BAD_EXTENSIONS)))
def test_case_expert_refuses_a_dial_string_from_the_http_crm(make_config: Callable[..., configmod.Config],
                                                              daemon: Callable[..., Daemon], httpserver: HTTPServer,
                                                              crm_token: str, sent: list[str], ext: str) -> None:
    """An HTTP CRM answering responsible.sales = a dial string: case_expert goes to error, nothing is bridged."""
    httpserver.expect_request("/api/customers", query_string={"phone": "+989121234567"}).respond_with_json(
        crm_customer(ext))
    d = daemon(make_config(FLOW, extra=http_crm(httpserver.url_for("/api"))))
    fake, row = d.call(caller="09121234567", bridges=["answer:5"])
    assert_expert_refused(fake, row, sent)
    assert row is not None and row["customer_id"] == "crm-9"


# ------------------------------------------------------------------ PIN guessing

LOCKOUT = "[security]\npin_max_failures = 3\npin_window_seconds = 900\npin_lockout_seconds = 600\n"


def test_pin_guesses_spread_over_two_daemons_lock_the_customer(make_config: Callable[..., configmod.Config],
                                                                daemon: Callable[..., Daemon]) -> None:
    """Wrong PINs alternating between two daemons on one SQLite file add up; then the right PIN is refused on both."""
    cfg = make_config(PIN_FLOW, extra=LOCKOUT)
    first, second = daemon(cfg), daemon(cfg)
    assert first.store is not second.store
    seed(first)
    results = []
    for d in (first, second, first):
        _fake, row = d.call(dtmf=["1001", WRONG_PIN])
        assert row is not None
        results.append(row["auth_result"])
    assert results == ["wrong_pin", "wrong_pin", "locked"]
    for d in (second, first):
        fake, row = d.call(dtmf=["1001", PIN])
        assert row is not None and row["auth_result"] == "locked" and row["customer_id"] == "cus-1"
        assert len([s for s in fake.steps if s.app == "play_and_get_digits"]) == 1  # the PIN is not even asked
    assert len(second.store.list_calls()) == 5


# ------------------------------------------------------------------ secrets in logs


def test_no_pin_token_or_card_number_in_any_log_line(make_config: Callable[..., configmod.Config],
                                                     daemon: Callable[..., Daemon], httpserver: HTTPServer,
                                                     crm_token: str, json_log: io.StringIO) -> None:
    """A local PIN call, an HTTP-CRM PIN call with a token, a card-number caller: none of them in the log text."""
    local = daemon(make_config(PIN_FLOW))
    seed(local)
    _fake, row = local.call(caller=CARD, dtmf=["1001", WRONG_PIN])
    assert row is not None and row["auth_result"] == "wrong_pin"
    _fake, row = local.call(caller=CARD, dtmf=["1001", PIN])
    assert row is not None and row["auth_result"] == "ok"

    httpserver.expect_request("/api/customers", query_string={"number": "C-1001"}).respond_with_json(
        crm_customer("1001"))
    httpserver.expect_request("/api/customers/crm-9/verify-pin", method="POST", json={"pin": PIN},
                              headers={"Authorization": f"Bearer {TOKEN}"}).respond_with_json({"ok": True})
    remote = daemon(make_config(PIN_FLOW, extra=http_crm(httpserver.url_for("/api"))))
    _fake, row = remote.call(caller=CARD, caller_name=f"card {CARD}", dtmf=["1001", PIN])
    assert row is not None and row["auth_result"] == "ok" and row["customer_id"] == "crm-9"
    httpserver.check_assertions()

    text = json_log.getvalue()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert "crm_request" in events and "club_identified" in events and "club_wrong_pin" in events
    for secret in (PIN, WRONG_PIN, TOKEN, CARD, "Bearer"):
        assert secret not in text, secret
    assert CARD[:4] + "*" * 12 in text  # the caller is there, masked


@pytest.mark.parametrize("caller", ["00989121234567", "+989121234567", "989121234567"])
def test_a_phone_number_caller_is_logged_whole_and_a_card_beside_it_masked(
        make_config: Callable[..., configmod.Config], daemon: Callable[..., Daemon], json_log: io.StringIO,
        caller: str) -> None:
    """Every line of the call carries the caller ID as sent; a card number in the caller name is still masked."""
    d = daemon(make_config(MENU))
    fake, row = d.call(caller=caller, caller_name=f"card {CARD}", dtmf=["9"])
    assert row is not None
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    mine = [line for line in lines if line.get("uuid") == fake.uuid and "caller" in line]
    assert mine and {line["caller"] for line in mine} == {caller}
    assert CARD not in json_log.getvalue()


# ------------------------------------------------------------------ the token and the command line


def _fsapp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT)})


def _http_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, MENU, extra=http_crm("http://127.0.0.1:9/api"))


def test_check_never_prints_the_crm_token(tmp_path: Path) -> None:
    """`fsapp check` (also at debug level) with an HTTP CRM passes and never shows the token from the environment."""
    path = _http_config(tmp_path)
    env = {**os.environ, TOKEN_ENV: TOKEN}
    for extra in ([], ["--log-level", "debug"]):
        proc = _fsapp(*extra, "check", "-c", str(path), env=env)
        assert proc.returncode == 0, proc.stderr
        assert TOKEN not in proc.stdout + proc.stderr
        assert "ok" in proc.stdout


def test_serve_without_the_token_variable_exits_2_naming_it(tmp_path: Path) -> None:
    """`fsapp serve` with crm.token_env unset refuses to start (exit 2) and names crm.token_env, not a value."""
    path = _http_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = _fsapp("serve", "-c", str(path), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "crm.token_env" in proc.stderr and TOKEN_ENV in proc.stderr
    assert "server_started" not in proc.stderr


def test_serve_on_a_taken_port_exits_1_naming_server_listen(tmp_path: Path) -> None:
    """`fsapp serve` whose listen port another program holds says so in one line (exit 1), no traceback."""
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(5)
    port = other.getsockname()[1]
    path = write_config(tmp_path, MENU)
    path.write_text(path.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
    try:
        proc = _fsapp("serve", "-c", str(path), env=dict(os.environ))
    finally:
        other.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{path}:server.listen: cannot listen on 127.0.0.1:{port}:" in proc.stderr
    assert "in use" in proc.stderr
    assert "Traceback" not in proc.stderr and "server_started" not in proc.stderr


def test_check_without_the_token_variable_fails_like_serve(tmp_path: Path) -> None:
    """`fsapp check` with crm.token_env unset exits 2 naming crm.token_env, as `fsapp serve` does."""
    path = _http_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = _fsapp("check", "-c", str(path), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "crm.token_env" in proc.stderr
