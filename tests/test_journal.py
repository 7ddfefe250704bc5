"""The call journal (seed 004): rows written by real calls over the socket, and `fsapp calls`."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from fsapp import config as configmod
from fsapp.journal import ANALYSIS_FIELDS
from fsapp.store import Store, now_iso, open_store
from tests.helpers import ROOT, Daemon, write_config

MakeConfig = Callable[..., configmod.Config]
StartDaemon = Callable[[configmod.Config], Daemon]

# spec section 5: the keys of `fsapp calls --format json`, and the CSV header
SPEC_KEYS = [
    "uuid", "started_at", "answered_at", "ended_at", "direction", "caller", "called", "extension", "status",
    "total_seconds", "talk_seconds", "too_long", "customer_id", "customer_name", "customer_type", "modules",
    "auth_method", "auth_result", "charge", "recording", "hangup_cause",
]
# then what FreeSWITCH's CDRs add (README, "Every call of the PBX"): empty or null on a socket-only row
CDR_KEYS = [
    "missed_cause", "ring_seconds", "wait_seconds", "hold_seconds", "hangup_by", "caller_mos", "caller_quality",
    "caller_flaws", "caller_jitter", "callee_mos", "callee_quality", "callee_flaws", "callee_jitter", "queue",
]

MENU = """
[[modules]]
code = "main"
kind = "menu"
prompt = "menu/main"
options = { "1" = "ext:1001", "2" = "queue:support", "0" = "transfer:9196:public", "5" = "club" }
timeout_ms = 3000
max_attempts = 1
next = "hangup"
error = "hangup"

[[modules]]
code = "club"
kind = "customer_club"
auth = "phone"
register_unknown = true
next = "hangup"
error = "hangup"
"""

CLUB = """
[[modules]]
code = "club"
kind = "customer_club"
auth = "phone"
register_unknown = true
next = "hangup"
error = "hangup:NORMAL_TEMPORARY_FAILURE"
"""


def _iso(us: int | str) -> str:
    return now_iso(int(us) / 1e6)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path.name} was not written within {timeout} s")


def fsapp_calls(cfg: configmod.Config | Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = cfg if isinstance(cfg, Path) else cfg.file
    return subprocess.run(
        [sys.executable, "-m", "fsapp", "calls", "-c", str(path), *args],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )


# -- rows written by calls over the socket ---------------------------------------------------


def test_answered_call_takes_durations_from_freeswitch(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A 600 s bridge journals talk 600 s (virtual clock, no wait) and every time from FreeSWITCH's variables."""
    d = daemon(make_config(MENU))
    t0 = time.monotonic()
    fake, row = d.call(caller="09121234567", destination="7000", dtmf=["1"], bridges=["answer:600"])
    assert time.monotonic() - t0 < 10
    assert row is not None
    assert row["status"] == "answered"
    assert row["talk_seconds"] == 600
    assert row["total_seconds"] == int(fake.vars["duration"]) > 600
    assert row["started_at"] == _iso(fake.created_us)
    assert row["answered_at"] == _iso(fake.vars["bridge_uepoch"])
    assert row["ended_at"] == _iso(fake.vars["end_uepoch"])
    assert row["direction"] == "inbound"
    assert (row["caller"], row["called"], row["extension"]) == ("09121234567", "7000", "1001")
    assert row["modules"] == ["main"]
    assert row["hangup_cause"] == "NORMAL_CLEARING"
    assert row["too_long"] is False  # 600 is not over the default limit of 600


def test_queue_answer_journals_the_agent_talk(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A callcenter queue answered by an agent is answered, with the talk from BRIDGE to UNBRIDGE."""
    d = daemon(make_config(MENU))
    _fake, row = d.call(dtmf=["2"], bridges=["answer:95"])
    assert row is not None
    assert row["status"] == "answered"
    assert row["talk_seconds"] == 95


@pytest.mark.parametrize("plan", ["no-answer", "busy", "unregistered"])
def test_bridge_nobody_answered_is_missed(make_config: MakeConfig, daemon: StartDaemon, plan: str) -> None:
    """A rung extension that does not answer (no answer, busy, unregistered) is missed, with no talk."""
    d = daemon(make_config(MENU))
    fake, row = d.call(dtmf=["1"], bridges=[plan])
    assert row is not None
    assert row["status"] == "missed"
    assert row["talk_seconds"] == 0
    assert row["answered_at"] is None
    assert row["extension"] == ""
    assert row["hangup_cause"] == "NO_ANSWER"  # the [dial] fallback
    assert row["total_seconds"] == int(fake.vars["duration"])


def test_caller_hanging_up_in_the_ivr_is_abandoned(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A caller who hangs up in the menu is abandoned, with the duration FreeSWITCH reported."""
    body = MENU.replace("max_attempts = 1", 'max_attempts = 2\ninvalid_prompt = "menu/invalid"', 1)
    d = daemon(make_config(body))
    fake, row = d.call(dtmf=[""], hangup_after=3)  # no input, then gone during the "invalid" prompt
    assert fake.apps()[-1] == "playback"
    assert row is not None
    assert row["status"] == "abandoned"
    assert row["talk_seconds"] == 0
    assert row["answered_at"] is None
    assert row["total_seconds"] == int(fake.vars["duration"]) >= 4
    assert row["ended_at"] == _iso(fake.vars["end_uepoch"])
    assert row["hangup_cause"] == "NORMAL_CLEARING"


def test_sub_second_call_keeps_freeswitch_duration_zero(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A call FreeSWITCH reports with variable_duration 0 is journaled with total_seconds 0, not a rounded 1."""
    d = daemon(make_config(MENU))
    fake, row = d.call(dtmf=["1"], hangup_after=2)  # gone half a second into the first prompt
    assert fake.vars["duration"] == "0"
    assert row is not None
    assert row["total_seconds"] == 0


def test_transfer_is_transferred(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """Handing the call back to the dialplan is transferred."""
    d = daemon(make_config(MENU))
    _fake, row = d.call(dtmf=["0"])
    assert row is not None
    assert row["status"] == "transferred"
    assert row["final_destination"] == "transfer:9196:public"


def test_ivr_hangup_is_completed(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """The IVR ending the call itself (menu error -> hangup) is completed."""
    d = daemon(make_config(MENU))
    _fake, row = d.call(dtmf=[""])
    assert row is not None
    assert row["status"] == "completed"
    assert row["hangup_cause"] == "NORMAL_CLEARING"


def test_crm_down_is_failed(make_config: MakeConfig, daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """The club's HTTP CRM refusing connections sends the call to error and the row is failed."""
    monkeypatch.setenv("FSAPP_TEST_JOURNAL_TOKEN", "journal-test-token")
    extra = f"""
    [crm]
    kind = "http"
    url = "http://127.0.0.1:{_closed_port()}/api"
    token_env = "FSAPP_TEST_JOURNAL_TOKEN"
    timeout_seconds = 1
    connect_timeout_seconds = 0.5
    """
    d = daemon(make_config(CLUB, entry="club", extra=extra))
    fake, row = d.call(caller="09121234567")
    assert row is not None
    assert row["status"] == "failed"
    assert row["auth_method"] == "phone"
    assert row["auth_result"] == "crm_error"
    assert row["hangup_cause"] == "NORMAL_TEMPORARY_FAILURE"
    assert fake.steps[-1].app == "hangup"


def test_outbound_direction_comes_from_the_channel(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A channel whose Call-Direction is outbound is journaled outbound."""
    d = daemon(make_config(MENU))
    _fake, row = d.call(caller="1001", destination="09121234567", direction="outbound", dtmf=["1"],
                        bridges=["answer:12"])
    assert row is not None
    assert row["direction"] == "outbound"
    assert row["called"] == "09121234567"


def test_too_long_marks_the_row_runs_notify_and_warns(
    make_config: MakeConfig, daemon: StartDaemon, tmp_path: Path
) -> None:
    """Talk over too_long_seconds marks the row, runs notify_command with FSAPP_UUID, logs call_too_long."""
    flag = tmp_path / "notified.txt"
    extra = f"""
    [journal]
    too_long_seconds = 60
    notify_command = "sh -c 'printf %s \\"$FSAPP_UUID\\" > {flag}'"
    """
    with structlog.testing.capture_logs() as logs:
        d = daemon(make_config(MENU, extra=extra))
        fake, row = d.call(dtmf=["1"], bridges=["answer:61"])
        _short, short_row = d.call(dtmf=["1"], bridges=["answer:60"])
    assert row is not None and short_row is not None
    assert row["too_long"] is True and row["talk_seconds"] == 61
    assert short_row["too_long"] is False  # exactly the limit is not over it
    assert _wait_for(flag) == fake.uuid
    warned = [e for e in logs if e["event"] == "call_too_long"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["talk_seconds"] == 61 and warned[0]["limit"] == 60


def test_record_sends_record_session_and_marks_downloaded(
    make_config: MakeConfig, daemon: StartDaemon, tmp_path: Path
) -> None:
    """`record = true` records to <record_dir>/YYYY/MM/DD/<uuid>.wav; --mark-downloaded sets the mark."""
    rec = tmp_path / "rec"
    cfg = make_config(MENU, extra=f'[journal]\nrecord = true\nrecord_dir = "{rec}"\n')
    d = daemon(cfg)
    days = {time.strftime("%Y/%m/%d")}
    fake, row = d.call(dtmf=["1"], bridges=["answer:30"])
    days.add(time.strftime("%Y/%m/%d"))
    assert row is not None
    recorded = [s.arg for s in fake.steps if s.app == "record_session"]
    assert len(recorded) == 1
    assert recorded[0] in {f"{rec}/{day}/{fake.uuid}.wav" for day in days}
    assert fake.apps().index("record_session") < fake.apps().index("play_and_get_digits")
    assert row["recording"] == recorded[0]
    assert row["downloaded"] is False

    done = fsapp_calls(cfg, "--mark-downloaded", fake.uuid)
    assert done.returncode == 0, done.stderr
    assert fake.uuid in done.stdout
    got = d.store.get_call(fake.uuid)
    assert got is not None and got["downloaded"] is True

    unknown = fsapp_calls(cfg, "--mark-downloaded", "no-such-uuid")
    assert unknown.returncode == 2
    assert "--mark-downloaded" in unknown.stderr and "no-such-uuid" in unknown.stderr


def test_module_record_records_only_calls_that_enter_it(
    make_config: MakeConfig, daemon: StartDaemon, tmp_path: Path
) -> None:
    """A module's `record = true` starts record_session when a call enters it, and only then."""
    rec = tmp_path / "rec"
    body = MENU.replace('kind = "customer_club"\n', 'kind = "customer_club"\nrecord = true\n')
    d = daemon(make_config(body, extra=f'[journal]\nrecord_dir = "{rec}"\n'))
    plain, plain_row = d.call(dtmf=["1"], bridges=["answer:5"])
    club, club_row = d.call(caller="09121112222", dtmf=["5"])
    assert plain_row is not None and club_row is not None
    assert "record_session" not in plain.apps()
    assert plain_row["recording"] == ""
    recorded = [s.arg for s in club.steps if s.app == "record_session"]
    assert len(recorded) == 1 and recorded[0].startswith(f"{rec}/") and recorded[0].endswith(f"/{club.uuid}.wav")
    assert club_row["recording"] == recorded[0]


def test_registered_unknown_caller_shows_new_customer_id(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """An unknown caller registered by the club is journaled with the new customer id; the next call finds it."""
    cfg = make_config(CLUB, entry="club")
    d = daemon(cfg)
    _first, row = d.call(caller="09125550001")
    assert row is not None
    assert row["customer_id"].startswith("U-") and row["customer_id"].endswith("9125550001")
    assert row["customer_type"] == "unknown"
    assert row["auth_result"] == "registered"
    _second, again = d.call(caller="09125550001")
    assert again is not None
    assert again["customer_id"] == row["customer_id"]
    assert again["auth_result"] == "ok"

    history = fsapp_calls(cfg, "--customer", row["customer_id"], "--format", "json")
    assert history.returncode == 0, history.stderr
    assert sorted(r["auth_result"] for r in json.loads(history.stdout)) == ["ok", "registered"]


# -- `fsapp calls` on a filled journal -------------------------------------------------------

# uuid, started_at, status, direction, caller, called, extension, talk, customer
ROWS: list[tuple[str, str, str, str, str, str, str, int, str]] = [
    ("c01", "2024-03-01T09:00:00", "answered", "inbound", "09121110001", "7000", "1001", 120, "C1"),
    ("c02", "2024-03-01T23:59:59", "missed", "inbound", "09121110002", "7000", "", 0, "C2"),
    ("c03", "2024-03-02T00:00:00", "answered", "outbound", "1002", "09351110003", "1002", 900, "C1"),
    ("c04", "2024-03-02T10:30:00", "abandoned", "inbound", "09121110004", "7000", "", 0, ""),
    ("c05", "2024-03-03T11:00:00", "transferred", "inbound", "09121110001", "7001", "", 0, "C1"),
    ("c06", "2024-03-03T23:59:59", "completed", "inbound", "02188880006", "7000", "", 0, "C3"),
    ("c07", "2024-03-04T00:00:00", "failed", "inbound", "09121110007", "7000", "", 0, ""),
    ("c08", "2024-03-04T15:00:00", "answered", "outbound", "1003", "09121110001", "1003", 45, "C1"),
    ("c09", "2024-03-05T08:00:00", "answered", "inbound", "09121110009", "7000", "1005", 700, "C2"),
    ("c10", "2024-03-05T09:00:00", "missed", "outbound", "1001", "09127770010", "", 0, "C2"),
]
TOO_LONG = 600


def _fill(store: Store) -> None:
    for uuid, started, status, direction, caller, called, ext, talk, customer in ROWS:
        start = time.mktime(time.strptime(started, "%Y-%m-%dT%H:%M:%S"))
        total = talk + 20
        store.call_finished(uuid, {
            "uuid": uuid, "started_at": now_iso(start),
            "answered_at": now_iso(start + 15) if status == "answered" else None,
            "ended_at": now_iso(start + total), "direction": direction, "caller": caller, "called": called,
            "extension": ext, "status": status, "total_seconds": total, "talk_seconds": talk,
            "too_long": talk > TOO_LONG, "customer_id": customer,
            "customer_name": f"Customer {customer}" if customer else "", "customer_type": "vip" if customer else "",
            "modules": ["main", "club"], "auth_method": "phone" if customer else "",
            "auth_result": "ok" if customer else "", "charge": talk * 10,
            "recording": f"/rec/{started[:10].replace('-', '/')}/{uuid}.wav", "hangup_cause": "NORMAL_CLEARING",
        })


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Path]:
    path = write_config(tmp_path, MENU)
    store = open_store(configmod.load(path, check_files=False).storage_url)
    _fill(store)
    store.close()
    yield path


def _uuids(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return [r["uuid"] for r in json.loads(proc.stdout)]


def test_json_is_one_array_with_exactly_the_spec_keys(journal: Path) -> None:
    """--format json prints one array of objects with the spec's keys then the CDR's, typed (list, bool, int)."""
    proc = fsapp_calls(journal, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list) and len(rows) == len(ROWS)
    assert all(list(r) == SPEC_KEYS + CDR_KEYS + ANALYSIS_FIELDS for r in rows)  # the spec's, the CDR's, the analysis
    first = rows[0]
    assert first["missed_cause"] == "" and first["caller_mos"] is None and first["ring_seconds"] == 0
    assert first["uuid"] == "c01" and first["started_at"].startswith("2024-03-01T09:00:00")  # the host's zone
    assert dt.datetime.fromisoformat(first["started_at"]).utcoffset() is not None  # with its offset
    assert first["modules"] == ["main", "club"]
    assert first["too_long"] is False and first["talk_seconds"] == 120 and first["charge"] == 1200
    assert rows[1]["answered_at"] is None
    assert [r["uuid"] for r in rows] == [r[0] for r in ROWS]  # default order: started_at ascending


def test_csv_header_is_the_spec_keys(journal: Path) -> None:
    """--format csv has the spec's names (then the CDR's) as header and one line per call."""
    proc = fsapp_calls(journal, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    reader = csv.DictReader(io.StringIO(proc.stdout))
    assert reader.fieldnames == SPEC_KEYS + CDR_KEYS + ANALYSIS_FIELDS
    rows = list(reader)
    assert [r["uuid"] for r in rows] == [r[0] for r in ROWS]
    assert rows[0]["modules"] == "main;club"
    assert rows[2]["too_long"] == "true" and rows[0]["too_long"] == "false"
    assert rows[1]["answered_at"] == ""


def test_table_is_plain_when_not_a_tty(journal: Path) -> None:
    """The table off a TTY has no ANSI escapes: a header, one line per call, a count."""
    proc = fsapp_calls(journal)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["date", "time", "status", "dir"]
    assert lines[-1] == f"{len(ROWS)} calls"
    assert len(lines) == len(ROWS) + 3
    assert lines[2].split()[:4] == ["2024-03-01", "09:00:00", "answered", "in"]


def test_table_is_coloured_by_status_on_a_tty(journal: Path) -> None:
    """On a TTY each row carries its status colour and a reset."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsapp", "calls", "-c", str(journal), "--status", "answered"],
        stdout=child, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(child)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(main)
    assert proc.wait(60) == 0
    text = out.decode()
    rows = [line for line in text.splitlines() if "answered" in line]
    assert len(rows) == 4
    assert all(line.startswith("\x1b[32m") and line.endswith("\x1b[0m") for line in rows)


def test_from_to_are_inclusive_days(journal: Path) -> None:
    """--from/--to take whole days, both ends included (00:00:00 and 23:59:59)."""
    assert _uuids(fsapp_calls(journal, "--from", "2024-03-02", "--to", "2024-03-03", "--format", "json")) == [
        "c03", "c04", "c05", "c06"]
    assert _uuids(fsapp_calls(journal, "--from", "2024-03-04", "--format", "json")) == ["c07", "c08", "c09", "c10"]
    assert _uuids(fsapp_calls(journal, "--to", "2024-03-01", "--format", "json")) == ["c01", "c02"]
    assert _uuids(fsapp_calls(journal, "--from", "2024-03-06", "--format", "json")) == []


def test_customer_filter_is_the_customers_history(journal: Path) -> None:
    """--customer lists exactly that customer's calls, in both directions."""
    assert _uuids(fsapp_calls(journal, "--customer", "C1", "--format", "json")) == ["c01", "c03", "c05", "c08"]
    assert _uuids(fsapp_calls(journal, "--customer", "C9", "--format", "json")) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [("answered", ["c01", "c03", "c08", "c09"]), ("missed", ["c02", "c10"]), ("abandoned", ["c04"]),
     ("transferred", ["c05"]), ("completed", ["c06"]), ("failed", ["c07"])],
)
def test_status_filter(journal: Path, status: str, expected: list[str]) -> None:
    """--status keeps only calls with that status."""
    assert _uuids(fsapp_calls(journal, "--status", status, "--format", "json")) == expected


def test_direction_too_long_and_number_filters(journal: Path) -> None:
    """--direction, --too-long and --number (caller/called contains, extension equals) each narrow the list."""
    assert _uuids(fsapp_calls(journal, "--direction", "outbound", "--format", "json")) == ["c03", "c08", "c10"]
    assert _uuids(fsapp_calls(journal, "--direction", "inbound", "--format", "json")) == [
        "c01", "c02", "c04", "c05", "c06", "c07", "c09"]
    assert _uuids(fsapp_calls(journal, "--too-long", "--format", "json")) == ["c03", "c09"]
    # caller or called containing the digits
    assert _uuids(fsapp_calls(journal, "--number", "9121110001", "--format", "json")) == ["c01", "c05", "c08"]
    assert _uuids(fsapp_calls(journal, "--number", "8888", "--format", "json")) == ["c06"]
    # 1001 answered c01 and called out on c10
    assert _uuids(fsapp_calls(journal, "--number", "1001", "--format", "json")) == ["c01", "c10"]
    # the extension must equal the number, not merely contain it
    assert _uuids(fsapp_calls(journal, "--number", "1005", "--format", "json")) == ["c09"]
    assert _uuids(fsapp_calls(journal, "--number", "005", "--format", "json")) == []


def test_filters_combine(journal: Path) -> None:
    """Several filters together are ANDed."""
    proc = fsapp_calls(journal, "--customer", "C2", "--status", "missed", "--from", "2024-03-05", "--format", "json")
    assert _uuids(proc) == ["c10"]


def test_sort_by_talk_descending(journal: Path) -> None:
    """--sort talk_seconds --desc orders by talk, longest first; --limit cuts the list."""
    rows = json.loads(fsapp_calls(journal, "--sort", "talk_seconds", "--desc", "--format", "json").stdout)
    talks = [r["talk_seconds"] for r in rows]
    assert talks == sorted(talks, reverse=True)
    assert [r["uuid"] for r in rows[:4]] == ["c03", "c09", "c01", "c08"]
    assert _uuids(fsapp_calls(journal, "--sort", "talk_seconds", "--desc", "--limit", "2", "--format", "json")) == [
        "c03", "c09"]
    asc = _uuids(fsapp_calls(journal, "--sort", "talk_seconds", "--format", "json"))
    assert asc[-4:] == ["c08", "c01", "c09", "c03"]


def test_unknown_sort_column_exits_2(journal: Path) -> None:
    """--sort with a column the journal lacks exits 2 naming the argument."""
    proc = fsapp_calls(journal, "--sort", "nonsense")
    assert proc.returncode == 2
    assert "--sort" in proc.stderr and "nonsense" in proc.stderr


EXPECTED_DAYS = [
    {"date": "2024-03-01", "calls": 2, "answered": 1, "missed": 1, "abandoned": 0, "talk_seconds": 120,
     "charge": 1200},
    {"date": "2024-03-02", "calls": 2, "answered": 1, "missed": 0, "abandoned": 1, "talk_seconds": 900,
     "charge": 9000},
    {"date": "2024-03-03", "calls": 2, "answered": 0, "missed": 0, "abandoned": 0, "talk_seconds": 0, "charge": 0},
    {"date": "2024-03-04", "calls": 2, "answered": 1, "missed": 0, "abandoned": 0, "talk_seconds": 45,
     "charge": 450},
    {"date": "2024-03-05", "calls": 2, "answered": 1, "missed": 1, "abandoned": 0, "talk_seconds": 700,
     "charge": 7000},
]


def test_group_by_date_json(journal: Path) -> None:
    """--group-by date --format json gives per-day counts and total talk, oldest day first."""
    proc = fsapp_calls(journal, "--group-by", "date", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == EXPECTED_DAYS


def test_group_by_date_with_filters(journal: Path) -> None:
    """Grouping applies to the filtered rows, even when sorted by another column."""
    proc = fsapp_calls(journal, "--group-by", "date", "--customer", "C1", "--sort", "talk_seconds", "--desc",
                       "--format", "json")
    days = json.loads(proc.stdout)
    assert [(g["date"], g["calls"], g["talk_seconds"]) for g in days] == [
        ("2024-03-01", 1, 120), ("2024-03-02", 1, 900), ("2024-03-03", 1, 0), ("2024-03-04", 1, 45)]


def test_group_by_date_csv(journal: Path) -> None:
    """--group-by date --format csv has a header and one line per day with the same figures."""
    proc = fsapp_calls(journal, "--group-by", "date", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert rows == [{k: str(v) for k, v in day.items()} for day in EXPECTED_DAYS]


def test_group_by_date_csv_header_without_rows(journal: Path) -> None:
    """An empty grouped CSV still carries the full header, so a consumer's columns never change."""
    proc = fsapp_calls(journal, "--group-by", "date", "--format", "csv", "--from", "2030-01-01")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [",".join(EXPECTED_DAYS[0])]


def test_group_by_date_table(journal: Path) -> None:
    """--group-by date as a table: one plain line per day with calls and talk as h:mm:ss or m:ss."""
    proc = fsapp_calls(journal, "--group-by", "date")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["date", "calls", "answered", "missed", "talk", "charge"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [d["date"], str(d["calls"]), str(d["answered"])] for d in EXPECTED_DAYS]
    assert lines[2].split()[4] == "15:00"
    assert lines[1].split()[4] == "2:00"


def test_bad_from_exits_2_naming_the_argument(journal: Path) -> None:
    """A --from that is not a date exits 2 and names --from."""
    proc = fsapp_calls(journal, "--from", "2024-13-45")
    assert proc.returncode == 2
    assert "--from" in proc.stderr and "2024-13-45" in proc.stderr
    assert proc.stdout == ""


def test_calls_made_over_the_socket_are_listed_by_the_cli(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """Rows the daemon wrote are what `fsapp calls` shows: statuses, direction and talk."""
    cfg = make_config(MENU)
    d = daemon(cfg)
    answered, _ = d.call(dtmf=["1"], bridges=["answer:600"])
    missed, _ = d.call(dtmf=["1"], bridges=["busy"])
    outbound, _ = d.call(direction="outbound", dtmf=["0"])
    rows = {r["uuid"]: r for r in json.loads(fsapp_calls(cfg, "--format", "json").stdout)}
    assert rows[answered.uuid]["status"] == "answered" and rows[answered.uuid]["talk_seconds"] == 600
    assert rows[missed.uuid]["status"] == "missed"
    assert rows[outbound.uuid]["status"] == "transferred"
    assert _uuids(fsapp_calls(cfg, "--direction", "outbound", "--format", "json")) == [outbound.uuid]
    assert _uuids(fsapp_calls(cfg, "--status", "missed", "--format", "json")) == [missed.uuid]

