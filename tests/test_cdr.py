"""FreeSWITCH's CDRs (seed 004: every call of the PBX): real mod_json_cdr posts over real HTTP
to a real `fsapp serve`, read back through `fsapp calls`."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import gevent
import pytest

from fsapp import customers
from fsapp.cdr import legs as cdrlegs
from fsapp.cdr.writer import CDRWriter
from fsapp.fakefs import Script, run_call
from fsapp.journal import ANALYSIS_FIELDS
from fsapp.store import open_store
from tests.cdrkit import CDR_DIR, CLUB, SCENARIOS, ServeProcess, leg_body, leg_uuid, numbered_call, post_together
from tests.helpers import ROOT, write_config

# The row each captured call yields (shared/cdr/README.md, "What tells the scenarios apart").
EXPECTED = {
    "a": dict(uuid="7ea13f86-9781-489a-b42f-6716b6afbb32", status="answered", missed_cause="", direction="inbound",
              caller="09121234567", called="7000", extension="agent", talk_seconds=10, total_seconds=12,
              ring_seconds=1, hangup_by="callee", hangup_cause="NORMAL_CLEARING",
              recording="/usr/local/freeswitch/recordings/fsapp/2026/12/01/7ea13f86-9781-489a-b42f-6716b6afbb32.wav",
              caller_mos=4.5, callee_mos=4.5, callee_jitter=106.42, callee_flaws=0, callee_quality=100.0),
    "b": dict(uuid="feb2a788-2d6a-4a19-801d-1b754e3a3e5f", status="missed", missed_cause="no_answer",
              direction="inbound", extension="noanswer", talk_seconds=0, total_seconds=6, ring_seconds=6,
              hangup_by="system", caller_mos=4.5, callee_mos=None, recording=""),
    "c": dict(uuid="c4be110f-0b19-4621-b6c4-9c792605b772", status="missed", missed_cause="busy", direction="inbound",
              extension="busy", talk_seconds=0, total_seconds=0, ring_seconds=0, hangup_by="system",
              hangup_cause="NO_ANSWER"),
    "d": dict(uuid="bec8fa43-7be3-4249-8ce7-0e039faf8bce", status="missed", missed_cause="cancelled",
              direction="inbound", talk_seconds=0, total_seconds=4, ring_seconds=4, hangup_by="caller"),
    "e": dict(uuid="5b3961e2-718e-405a-b6ef-16f956e2846c", status="answered", direction="inbound", called="7002",
              extension="agent@default", talk_seconds=10, total_seconds=12, hangup_by="callee", callee_jitter=8.04),
    "f": dict(uuid="ee19368d-9b6f-40aa-a7fa-b92d3e1236b0", status="answered", direction="outbound", caller="1001",
              called="09121234567", extension="1001", talk_seconds=10, total_seconds=11, ring_seconds=1,
              hangup_by="callee", callee_jitter=170.37,
              recording="/usr/local/freeswitch/recordings/127.0.0.1/archive/2026/Dec/01/"
                        "ee19368d-9b6f-40aa-a7fa-b92d3e1236b0.wav"),
    "g": dict(uuid="6129c356-2cf2-47e5-9d8f-63282a272f6c", status="answered", direction="local", caller="1001",
              called="1002", extension="1001", talk_seconds=10, total_seconds=11, hangup_by="callee",
              recording="/usr/local/freeswitch/recordings/127.0.0.1/archive/2026/Dec/01/"
                        "6129c356-2cf2-47e5-9d8f-63282a272f6c.wav"),
}


def _started(tmp: Path, body: str = CLUB, **kw: object) -> ServeProcess:
    return ServeProcess(tmp, body, **kw)  # type: ignore[arg-type]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    d = _started(tmp_path)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One daemon that took every captured call, B legs first (as they arrived)."""
    d = _started(tmp_path_factory.mktemp("pbx"))
    for scenario in SCENARIOS:
        d.post_scenario(scenario, "ba")
    yield d
    d.stop()


def _by_uuid(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["uuid"]): r for r in rows}


def _journal(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The rows without their analysis, which the daemon's workers go on with in the background
    (a CDR-only call is queued too)."""
    return [{k: v for k, v in r.items() if k not in ANALYSIS_FIELDS} for r in rows]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_captured_call_yields_its_documented_row(pbx: ServeProcess, scenario: str) -> None:
    rows = _by_uuid(pbx.calls())
    assert len(rows) == len(SCENARIOS)  # one row per call, not per leg
    row = rows[EXPECTED[scenario]["uuid"]]  # the A leg's uuid
    assert {k: row[k] for k in EXPECTED[scenario]} == EXPECTED[scenario]
    assert row["started_at"].startswith("2026-12-01T")


def test_direction_and_extension_list_an_agents_outgoing_calls(pbx: ServeProcess) -> None:
    assert [r["uuid"] for r in pbx.calls("--direction", "outbound", "--extension", "1001")] == [EXPECTED["f"]["uuid"]]
    assert {r["uuid"] for r in pbx.calls("--extension", "1001")} == {EXPECTED["f"]["uuid"], EXPECTED["g"]["uuid"]}
    # a local call also counts for the extension it rang
    assert [r["uuid"] for r in pbx.calls("--extension", "1002")] == [EXPECTED["g"]["uuid"]]
    assert [r["uuid"] for r in pbx.calls("--direction", "local")] == [EXPECTED["g"]["uuid"]]


def test_missed_cause_and_mos_filters(pbx: ServeProcess) -> None:
    assert [r["uuid"] for r in pbx.calls("--missed-cause", "busy")] == [EXPECTED["c"]["uuid"]]
    assert len(pbx.calls("--status", "missed")) == 3
    assert len(pbx.calls("--min-mos", "4.4")) == 7  # loopback RTP: every leg with media scored 4.50
    assert pbx.calls("--min-mos", "4.6") == [] and pbx.calls("--max-mos", "4.4") == []
    bad = pbx.cli("calls", "--min-mos", "9")
    assert bad.returncode == 2 and "--min-mos" in bad.stderr


def test_queue_and_recording_filters(pbx: ServeProcess) -> None:
    assert [r["uuid"] for r in pbx.calls("--queue", "support")] == [EXPECTED["e"]["uuid"]]
    assert pbx.calls("--queue", "sales") == []
    recorded = {s for s in SCENARIOS if EXPECTED[s].get("recording")}
    assert {r["uuid"] for r in pbx.calls("--has-recording")} == {EXPECTED[s]["uuid"] for s in recorded}
    assert {r["uuid"] for r in pbx.calls("--no-recording")} == {
        EXPECTED[s]["uuid"] for s in SCENARIOS if s not in recorded}


def test_csv_export_carries_the_cdr_columns(pbx: ServeProcess) -> None:
    proc = pbx.cli("calls", "--format", "csv", "--missed-cause", "cancelled")
    header, line = proc.stdout.splitlines()
    row = dict(zip(header.split(","), line.split(","), strict=True))
    assert (row["missed_cause"], row["hangup_by"], row["ring_seconds"], row["caller_mos"]) == (
        "cancelled", "caller", "4", "4.5")
    assert row["callee_mos"] == ""  # the ringing leg had no media


def test_table_shows_direction_cause_and_mos(pbx: ServeProcess) -> None:
    out = pbx.cli("calls").stdout.splitlines()
    local = next(line for line in out if " loc " in line)
    assert "1001" in local and "4.5" in local
    assert any("cancelled" in line for line in out)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_leg_first_gives_the_same_row(tmp_path: Path, pbx: ServeProcess, scenario: str) -> None:
    d = _started(tmp_path)
    try:
        d.post_scenario(scenario, "ab")
        assert _journal(d.calls()) == _journal([_by_uuid(pbx.calls())[EXPECTED[scenario]["uuid"]]])
    finally:
        d.stop()


def test_b_leg_alone_is_already_the_calls_row(serve: ServeProcess) -> None:
    """Until the A leg comes, the B leg gives the call its row (under the A leg's uuid)."""
    serve.post(leg_body("f", "b"))
    (row,) = serve.calls()
    assert (row["uuid"], row["status"], row["direction"], row["extension"], row["talk_seconds"]) == (
        EXPECTED["f"]["uuid"], "answered", "outbound", "1001", 10)


def test_replays_change_nothing(serve: ServeProcess) -> None:
    for scenario in SCENARIOS:
        serve.post_scenario(scenario)
    before = serve.calls()
    for scenario in SCENARIOS:
        for leg in "ab":
            status, text, _ = serve.post(leg_body(scenario, leg))
            assert (status, text) == (200, "OK (already stored)\n")
    assert _journal(serve.calls()) == _journal(before)
    assert open_store(_db_url(serve)).cdr_leg_count() == 14


def _db_url(d: ServeProcess) -> str:
    text = d.config.read_text()
    return text.split('[storage]\nurl = "', 1)[1].split('"', 1)[0]


def test_form_encoded_request_as_captured(serve: ServeProcess) -> None:
    """The captured encode=true request, byte for byte (Host aside), over a raw socket."""
    raw = (CDR_DIR / "form-encoded-example.txt").read_bytes()
    raw = raw.replace(b"Host: 127.0.0.1:8089", f"Host: 127.0.0.1:{serve.cdr_port}".encode())
    with socket.create_connection(("127.0.0.1", serve.cdr_port), timeout=10) as s:
        s.sendall(raw)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    (row,) = serve.calls()
    assert (row["uuid"], row["direction"], row["caller"], row["called"], row["extension"]) == (
        "c0f835c0-f369-4613-b9f1-36d7ebc9e85a", "local", "1001", "1002", "1001")


def test_base64_body_and_url_encoded_values(serve: ServeProcess) -> None:
    """encode=base64, and encode-values=true (every variable URL-encoded, its default)."""
    doc = json.loads(leg_body("a", "a"))
    doc["variables"] = {k: quote(v, safe="") for k, v in doc["variables"].items()}
    encoded = json.dumps(doc).encode()
    status, text, _ = serve.post(b"cdr=" + base64.b64encode(encoded), uuid=leg_uuid(encoded),
                                 content_type="application/x-www-form-base64-encoded")
    assert status == 200, text
    serve.post(leg_body("a", "b"))
    (row,) = serve.calls()
    assert {k: row[k] for k in EXPECTED["a"]} == EXPECTED["a"]


@pytest.mark.parametrize(("body", "reason"), [
    (b"garbage", "not a CDR"),
    (b'{"variables": {"uuid": "x"', "not valid JSON"),
    (b"[1, 2]", "not an object"),
    (b'{"core-uuid": "x", "callflow": []}', 'no "variables"'),
    (b'{"variables": {"billsec": "3"}}', "no variables.uuid"),
    (b"cdr=%7B%22variables%22", "not valid JSON"),
])
def test_malformed_body_is_400_with_the_reason_logged(serve: ServeProcess, body: bytes, reason: str) -> None:
    status, text, _ = serve.post(body, uuid="9b0e")
    assert status == 400 and reason in text
    assert serve.calls() == []
    logged = [json.loads(line) for line in serve.log_text().splitlines() if '"cdr_refused"' in line]
    assert logged[-1]["reason"] == text.strip() and logged[-1]["uuid"] == "9b0e"


def test_query_uuid_must_be_the_legs_own(serve: ServeProcess) -> None:
    status, text, _ = serve.post(leg_body("a", "a"), uuid="someone-else")
    assert status == 400 and "someone-else" in text
    assert serve.calls() == []


def test_oversized_body_is_413_and_nothing_stored(tmp_path: Path) -> None:
    d = _started(tmp_path, cdr="max_body_bytes = 4096")
    try:
        status, text, _ = d.post(leg_body("a", "a"))
        assert status == 413 and "max_body_bytes (4096)" in text
        assert d.post(leg_body("c", "b"))[0] == 413  # 4573 bytes
        big = leg_body("a", "a").replace(b'"variables":{', b'"variables":{"pad":"' + b"x" * 3_000_000 + b'",')
        status, text, headers = d.post(big)  # refused on its head; the body is never read, the answer still comes
        assert status == 413 and "3010" in text and headers.get("Connection") == "close"
        assert d.calls() == []
        assert '"status":"413"' in d.log_text()
    finally:
        d.stop()


def test_wrong_or_missing_credentials_are_401(tmp_path: Path) -> None:
    d = _started(tmp_path, cdr='credentials_env = "FSAPP_TEST_CDR_CRED"', env={"FSAPP_TEST_CDR_CRED": "fs:s3cret"})
    try:
        for auth in ("", "fs:wrong", "fsx:s3cret"):
            status, _text, headers = d.post(leg_body("g", "a"), auth=auth)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert d.calls() == []
        assert d.post(leg_body("g", "a"), auth="fs:s3cret")[0] == 200
        assert len(d.calls()) == 1
    finally:
        d.stop()


def _own_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing interface
        return str(s.getsockname()[0])


def test_without_credentials_only_loopback_peers(tmp_path: Path) -> None:
    address = _own_address()
    if address.startswith("127."):
        pytest.skip("this host has no address but loopback")
    d = _started(tmp_path, cdr_host="0.0.0.0")
    try:
        conn = http.client.HTTPConnection(address, d.cdr_port, timeout=10)
        conn.request("POST", "/cdr", body=leg_body("a", "a"), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 403 and b"loopback" in resp.read()
        assert d.calls() == []
        assert d.post(leg_body("a", "a"))[0] == 200  # the same post from 127.0.0.1
    finally:
        d.stop()


def test_database_outage_during_a_post_is_503_then_stored_once(serve: ServeProcess) -> None:
    """A database that cannot take the leg: 503 (FreeSWITCH retries, then files it); the retry stores it once."""
    path = _db_url(serve)[len("sqlite://"):]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        status, text, _ = serve.post(leg_body("a", "a"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert status == 503 and "database" in text
    assert serve.calls() == []
    assert serve.post(leg_body("a", "a"))[:2] == (200, "OK\n")
    assert serve.post(leg_body("a", "b"))[0] == 200
    (row,) = serve.calls()
    assert row["status"] == "answered" and row["talk_seconds"] == 10


def test_concurrent_posts_all_stored(tmp_path: Path, store_url: str) -> None:
    """Many posts at once (FreeSWITCH posts from each channel's thread): every one answered 200, each
    stored, one row per call, on either database."""
    serve = _started(tmp_path / "d", db_url=store_url)
    try:
        _post_60_calls_at_once(serve)
    finally:
        serve.stop()


def _post_60_calls_at_once(serve: ServeProcess) -> None:
    bodies = []
    for i in range(60):
        for leg in "ab":
            text = leg_body("a", leg).decode()
            for scenario_uuid in ("7ea13f86-9781-489a-b42f-6716b6afbb32", "129ca055-5c83-4dbc-8ecc-39f282ea5d69"):
                text = text.replace(scenario_uuid, scenario_uuid[:-4] + f"{i:04d}")
            bodies.append(text.encode())
    results: list[int] = []

    def post(body: bytes) -> None:
        results.append(serve.post(body)[0])

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * len(bodies)
    rows = serve.calls()
    assert len(rows) == 60 and {r["status"] for r in rows} == {"answered"}
    assert {r["talk_seconds"] for r in rows} == {10}


# ------------------------------------------------------------------ the socket's journal and the CDR


def _seed_c1(d: ServeProcess) -> None:
    store = open_store(_db_url(d))
    csv = "id,number,name,type,phones,mobile,pin,sales,support,other,debt\nc1,c1,Ali Rezaei,VIP,09121234567,,,,,,0\n"
    customers.save_rows(store, customers.parse_csv(csv))
    store.close()


def _socket_call_a(d: ServeProcess) -> None:
    """Scenario a as fsapp's socket saw it: the same channel uuid, caller c1, the agent answers for 10 s."""
    run_call(d.esl_address, Script(caller="09121234567", caller_name="Ali Rezaei", destination="7000",
                                   bridges=["answer:10"], channel_uuid=EXPECTED["a"]["uuid"]))


@pytest.mark.parametrize("order", ["socket, then legs", "b leg, socket, a leg"])
def test_socket_journaled_call_merges_with_its_cdr(serve: ServeProcess, order: str) -> None:
    _seed_c1(serve)
    if order.startswith("b leg"):
        serve.post(leg_body("a", "b"))
    _socket_call_a(serve)
    serve.post_scenario("a", "a" if order.startswith("b leg") else "ba")
    (row,) = serve.calls()  # one row, not one per writer
    # the IVR's details stay
    assert (row["customer_id"], row["customer_type"], row["modules"], row["auth_method"]) == (
        "c1", "VIP", ["main"], "phone")
    # what only the CDR knows is added, and FreeSWITCH's account of the call wins
    assert {k: row[k] for k in EXPECTED["a"]} == EXPECTED["a"]


def test_socket_row_keeps_its_ivr_status_when_nobody_was_rung(tmp_path: Path) -> None:
    """An IVR-only call (the club hangs up an unknown caller): the socket's status stays, the CDR adds quality."""
    d = _started(tmp_path, CLUB.replace('next = "ext:agent"', 'next = "hangup"'))
    try:
        uuid = EXPECTED["c"]["uuid"]
        run_call(d.esl_address, Script(caller="09350000000", destination="7000", channel_uuid=uuid))
        doc = json.loads(leg_body("c", "a"))
        for key in ("originate_disposition", "DIALSTATUS", "originate_failed_cause", "originated_legs"):
            doc["variables"].pop(key)
        assert d.post(json.dumps(doc).encode())[0] == 200
        (row,) = d.calls()
        assert (row["status"], row["missed_cause"], row["caller_mos"]) == ("completed", "", 4.5)
        assert row["modules"] == ["main"]
    finally:
        d.stop()


# ------------------------------------------------------------------ fsapp cdr import


def _err_log_dir(tmp: Path) -> Path:
    """What mod_json_cdr leaves: raw, URL-encoded (encode=true) and base64 files, a_ prefixed or not."""
    folder = tmp / "json_cdr_err"
    folder.mkdir()
    for scenario in "ab":
        for leg in "ab":
            (folder / f"{leg_uuid(leg_body(scenario, leg))}.cdr.json").write_bytes(leg_body(scenario, leg) + b"\n")
    f_a = leg_body("f", "a")
    (folder / f"a_{leg_uuid(f_a)}.cdr.json").write_text(quote(f_a.decode(), safe=",/$-._") + "\n")
    f_b = leg_body("f", "b")
    (folder / f"{leg_uuid(f_b)}.cdr.json").write_bytes(base64.b64encode(f_b) + b"\n")
    (folder / "truncated.cdr.json").write_bytes(leg_body("g", "a")[:500])
    return folder


def test_cdr_import_imports_each_file_once_and_moves_it_aside(serve: ServeProcess) -> None:
    folder = _err_log_dir(serve.config.parent)
    serve.post(leg_body("a", "a"))  # posted before FreeSWITCH gave up on its retries: already kept
    proc = serve.cli("cdr", "import", str(folder))
    assert proc.returncode == 2, proc.stderr  # one file refused
    assert proc.stdout.strip() == "5 imported, 1 already in the journal, 1 refused"
    assert "truncated.cdr.json: refused: not valid JSON" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["imported", "refused"]
    assert len(list((folder / "imported").iterdir())) == 6
    assert "not valid JSON" in (folder / "refused" / "truncated.cdr.json.reason").read_text()
    rows = _by_uuid(_journal(serve.calls()))
    assert set(rows) == {EXPECTED[s]["uuid"] for s in "abf"}
    for s in "abf":
        assert {k: rows[EXPECTED[s]["uuid"]][k] for k in EXPECTED[s]} == EXPECTED[s]
    again = serve.cli("cdr", "import", str(folder))
    assert (again.returncode, again.stdout.strip()) == (0, "0 imported, 0 already in the journal, 0 refused")
    assert _by_uuid(_journal(serve.calls())) == rows


def test_cdr_import_leaves_the_files_when_the_database_fails(serve: ServeProcess) -> None:
    folder = _err_log_dir(serve.config.parent)
    path = _db_url(serve)[len("sqlite://"):]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        proc = serve.cli("cdr", "import", str(folder))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert proc.returncode == 1 and "storage.url" in proc.stderr
    assert len([p for p in folder.iterdir() if p.is_file()]) >= 6
    assert serve.cli("cdr", "import", str(folder)).returncode == 2
    assert len(serve.calls()) == 3


def test_cdr_import_of_a_missing_folder_exits_2(serve: ServeProcess) -> None:
    proc = serve.cli("cdr", "import", str(serve.config.parent / "nowhere"))
    assert proc.returncode == 2 and "nowhere" in proc.stderr


# ------------------------------------------------------------------ fsapp check


@pytest.mark.parametrize(("cdr", "key", "message"), [
    ('listen = "nowhere"', "cdr.listen", "not HOST:PORT"),
    ('credentials_env = "FSAPP_TEST_UNSET_CRED"', "cdr.credentials_env", "is not set"),
    ('max_body_bytes = 10', "cdr.max_body_bytes", "at least 1024"),
    ('listn = "127.0.0.1:1"', "cdr.listn", "unknown key"),
    ('own_process = "yes"', "cdr.own_process", "must be bool"),
])
def test_check_names_the_bad_cdr_key(tmp_path: Path, cdr: str, key: str, message: str) -> None:
    path = write_config(tmp_path, CLUB, extra=f"[cdr]\n{cdr}\n")
    proc = subprocess.run([sys.executable, "-m", "fsapp", "check", "-c", str(path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 2
    assert f"{path}:{key}: " in proc.stderr and message in proc.stderr


# ------------------------------------------------------------------ several daemons, one database


def test_several_daemons_on_one_database_write_one_row_per_call(tmp_path: Path, store_url: str) -> None:
    """mod_json_cdr rotates through its URLs: each leg of a call, and its replays, may go to another daemon."""
    daemons = [_started(tmp_path / f"d{n}", db_url=store_url) for n in range(2)]
    try:
        calls = [numbered_call(i) for i in range(40)]
        jobs = [(daemons[i % 2], a) for i, (a, _b) in enumerate(calls)]
        jobs += [(daemons[(i + 1) % 2], b) for i, (_a, b) in enumerate(calls)]
        jobs += [(daemons[i % 2], b) for i, (_a, b) in enumerate(calls[:10])]  # replays, to the other daemon
        assert post_together(jobs) == [200] * len(jobs)
        rows = daemons[0].calls()
        assert len(rows) == 40
        assert {(r["status"], r["talk_seconds"], r["extension"], r["callee_mos"]) for r in rows} == {
            ("answered", 10, "agent", 4.5)}
        store = open_store(store_url)
        assert store.cdr_leg_count() == 80
        # each row was built from both legs (the A leg's duration is 12 s, the B leg's 11 s)
        assert {(r["cdr_legs"], r["cdr_a_leg"], r["total_seconds"]) for r in store.list_calls()} == {(2, 1, 12)}
        store.close()
    finally:
        for d in daemons:
            d.stop()


# ------------------------------------------------------------------ HTTP as curl speaks it


def _raw(d: ServeProcess, data: bytes, *, read_until: int = 1) -> bytes:
    """Send ``data`` on one connection; read until ``read_until`` answers have come (or the server closes)."""
    with socket.create_connection(("127.0.0.1", d.cdr_port), timeout=10) as s:
        s.sendall(data)
        got = b""
        while got.count(b"HTTP/1.1 ") < read_until or not got.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def _request(body: bytes, *, uuid: str = "", extra: str = "") -> bytes:
    head = (f"POST /cdr?uuid={uuid or leg_uuid(body)} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode() + body


def test_expect_100_continue_is_answered_before_the_body(serve: ServeProcess) -> None:
    body = leg_body("g", "a")
    head = _request(body, extra="Expect: 100-continue\r\n")[: -len(body)]
    with socket.create_connection(("127.0.0.1", serve.cdr_port), timeout=10) as s:
        s.sendall(head)
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    assert len(serve.calls()) == 1


def test_keep_alive_carries_several_posts(serve: ServeProcess) -> None:
    answers = _raw(serve, b"".join(_request(leg_body(s, leg)) for s in "fg" for leg in "ba"), read_until=4)
    assert answers.count(b"HTTP/1.1 200 OK") == 4
    assert len(serve.calls()) == 2


@pytest.mark.parametrize(("data", "status"), [
    (b"GET /cdr HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
    (b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", b"404"),
    (b"POST /cdr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", b"411"),
    (b"POST /cdr HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n", b"400"),
    (b"POST /cdr HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"400"),
    (b"BREW /cdr HTCPCP/1.0\r\n\r\n", b"400"),
])
def test_requests_that_are_not_a_cdr_post(serve: ServeProcess, data: bytes, status: bytes) -> None:
    assert _raw(serve, data).startswith(b"HTTP/1.1 " + status)
    assert serve.calls() == []


# ------------------------------------------------------------------ the writer stopping


class _SlowWriter(CDRWriter):
    """A writer whose transactions take a while: each call's row is computed slowly, inside it."""

    def _compute(self, legs: list[dict[str, object]]) -> dict[str, object]:
        gevent.sleep(0.3)
        return super()._compute(legs)


def test_stopping_the_writer_answers_the_posts_of_the_batch_in_flight(tmp_path: Path) -> None:
    """The daemon stops (its CDR listener stops the writer) while a batch is committing: that batch
    ends, its posts are answered as stored, and its legs are kept. Killed inside its transaction,
    the batch was rolled back and its posts waited for an answer that never came."""
    store = open_store(f"sqlite:///{tmp_path / 'journal.db'}")
    writer = _SlowWriter(store, lambda: 600)
    writer.start()
    posts = [gevent.spawn(writer.add, cdrlegs.parse(leg_body("a", leg), "application/json"), leg_body("a", leg))
             for leg in "ba"]
    gevent.sleep(0.1)  # both queued, their batch in its transaction
    writer.stop()
    gevent.joinall(posts, timeout=5)
    answers = [p.value if p.ready() else "no answer" for p in posts]
    kept = store.cdr_leg_count()
    store.close()
    assert answers == [True, True] and kept == 2, (answers, kept)


# ------------------------------------------------------------------ the writer gathering legs


class _CountingWriter(CDRWriter):
    """A writer that notes the size of each transaction it commits."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.batches: list[int] = []

    def _commit(self, entries):  # type: ignore[no-untyped-def]
        self.batches.append(len(entries))
        return super()._commit(entries)


def _legs_of(call: str) -> list[tuple[dict[str, object], bytes]]:
    return [(cdrlegs.parse(leg_body(call, leg), "application/json"), leg_body(call, leg)) for leg in "ba"]


def _post_legs(writer: CDRWriter, legs: list[tuple[dict[str, object], bytes]], apart: float) -> list[object]:
    posts = []
    for leg, body in legs:
        posts.append(gevent.spawn(writer.add, leg, body))
        gevent.sleep(apart)
    gevent.joinall(posts, timeout=10)
    return [p.value if p.ready() else "no answer" for p in posts]


@pytest.mark.parametrize("window", [0.0, 0.2])
def test_legs_coming_close_together_share_a_transaction(tmp_path: Path, window: float) -> None:
    """With a gathering window, a call's B and A legs posted a few milliseconds apart, while legs
    are coming (one came just before), commit as one transaction; without one, each on its own.
    Every post is answered as stored either way, and both legs are kept."""
    store = open_store(f"sqlite:///{tmp_path / 'journal.db'}")
    writer = _CountingWriter(store, lambda: 600, gather_seconds=lambda: window)
    writer.start()
    try:
        first = _post_legs(writer, _legs_of("a")[:1], 0)
        answers = _post_legs(writer, _legs_of("c"), 0.01)  # B just after that answer, A 10 ms after B
    finally:
        writer.stop()
    kept = store.cdr_leg_count()
    store.close()
    assert first == [True] and answers == [True, True] and kept == 3, (first, answers, kept)
    assert writer.batches == ([1, 2] if window else [1, 1, 1]), writer.batches


def test_a_leg_after_a_quiet_spell_is_not_held_for_the_window(tmp_path: Path) -> None:
    """The window is for legs that come close together: the first leg after a quiet spell (here,
    the first of all) commits at once, not after the window (5 s here)."""
    store = open_store(f"sqlite:///{tmp_path / 'journal.db'}")
    writer = _CountingWriter(store, lambda: 600, gather_seconds=lambda: 5.0)
    writer.start()
    try:
        leg, body = _legs_of("a")[0]
        post = gevent.spawn(writer.add, leg, body)
        post.join(timeout=2.5)
        answered = post.value if post.ready() else "no answer within 2.5 s"
    finally:
        writer.stop()
    store.close()
    assert answered is True and writer.batches == [1], (answered, writer.batches)
