"""A call only its CDR knows gets the daemon's after-call work, once: CDRs posted over HTTP to running
`fsapp serve` daemons as mod_json_cdr posts them, then the analysis queue, the reviewer's notifier,
the CRM's call log (a Payamgostar stand-in) and the metrics each show exactly one."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsapp.crm.payamgostar import CALL_OUTGOING
from fsapp.store import open_store
from tests.cdrkit import ServeProcess, free_port, leg_body, leg_uuid, post_together
from tests.payamgostar_standin import PayamgostarStandIn
from tests.test_cdr import CLUB, EXPECTED, _db_url, _seed_c1, _socket_call_a

CDR_ONLY = ("f", "g")  # an agent's outbound call and an internal call, both recorded, 10 s of talk


@pytest.fixture
def standin() -> Iterator[PayamgostarStandIn]:
    pg = PayamgostarStandIn().start()
    yield pg
    pg.stop()


def _body(tmp: Path, crm: str = "") -> str:
    notes = tmp / "notes.sh"
    notes.write_text('#!/bin/sh\necho "$FSAPP_REASON $FSAPP_UUID $FSAPP_TALK_SECONDS" >> "$0.log"\n')
    notes.chmod(0o755)
    club = CLUB.replace("[journal]\n", f'[journal]\ntoo_long_seconds = 5\nnotify_command = "{notes}"\n')
    return crm + club


def _crm(pg: PayamgostarStandIn) -> str:
    return (f'[crm]\nkind = "payamgostar"\nurl = "{pg.url}"\nusername = "{pg.username}"\n'
            'password_env = "FSAPP_TEST_PG_PASSWORD"\ntelephony_key = "ts-key"\n\n')


def _daemon(tmp: Path, body: str, db_url: str = "", env: dict[str, str] | None = None) -> ServeProcess:
    port = free_port()
    d = ServeProcess(tmp, body, db_url=db_url, env=env, server=f'metrics_listen = "127.0.0.1:{port}"')
    d.metrics_port = port  # type: ignore[attr-defined]
    return d


def _notes(tmp: Path) -> list[str]:
    log = tmp / "notes.sh.log"
    return log.read_text().splitlines() if log.exists() else []


def _metric(d: ServeProcess, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=10).read().decode()  # type: ignore[attr-defined]
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}{{{want}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def _eventually(check: object, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("not within the time")
        time.sleep(0.1)


def test_cdr_only_calls_get_the_after_call_work_once_across_daemons_and_replays(
        tmp_path: Path, store_url: str, standin: PayamgostarStandIn) -> None:
    """Each leg to one of two daemons on one database, the A leg first for one call, and every leg
    replayed to the other daemon: one queue entry, one notice, one CRM call, one count per call."""
    env = {"FSAPP_TEST_PG_PASSWORD": standin.password}
    daemons = [_daemon(tmp_path / f"d{n}", _body(tmp_path, _crm(standin)), store_url, env) for n in range(2)]
    try:
        jobs = []
        for i, s in enumerate(CDR_ONLY):
            order = "ab" if i else "ba"  # out of order too
            jobs += [(daemons[i % 2], leg_body(s, leg)) for leg in order]
            jobs += [(daemons[(i + 1) % 2], leg_body(s, leg)) for leg in order]  # replays
        assert post_together(jobs) == [200] * len(jobs)
        uuids = {EXPECTED[s]["uuid"] for s in CDR_ONLY}
        _eventually(lambda: len(standin.calls) >= 1 and len(_notes(tmp_path)) >= 2)
        time.sleep(1.0)  # time for a second (wrong) delivery or notice to show
        store = open_store(store_url)
        try:
            queued = {u: store.analysis_get(u) for u in uuids}
            assert {u: (q or {}).get("customer_channel") for u, q in queued.items()} == {
                EXPECTED["f"]["uuid"]: "right", EXPECTED["g"]["uuid"]: "left"}  # the agent made the outbound call
            assert all(q and q["recording"].endswith(f"{u}.wav") for u, q in queued.items())
            # the CRM's call log: the agent's call to a customer, not the internal call
            assert [r["idempotency_key"] for r in store.outbox_rows()] == [f"{EXPECTED['f']['uuid']}-call"]
        finally:
            store.close()
        assert sorted(_notes(tmp_path)) == sorted(f"too_long {u} 10" for u in uuids)
        assert [(c["sourceId"], c["callTypeIndex"]) for c in standin.calls.values()] == [
            (EXPECTED["f"]["uuid"], CALL_OUTGOING)]
        assert sum(_metric(d, "fsapp_calls_total", entry="cdr", status="answered") for d in daemons) == 2
        assert sum(_metric(d, "fsapp_talk_duration_seconds_count") for d in daemons) == 2
    finally:
        for d in daemons:
            d.stop()


def test_a_socket_journaled_call_gets_its_after_call_work_from_the_socket_only(tmp_path: Path) -> None:
    """Scenario a through fsapp's socket, its B leg before and its A leg after the session: the CDR adds
    its facts to the row, but no second notice, queue entry or count."""
    d = _daemon(tmp_path, _body(tmp_path))
    try:
        _seed_c1(d)
        d.post(leg_body("a", "b"))
        _socket_call_a(d)
        status, text, _ = d.post(leg_body("a", "a"))
        assert status == 200, text
        d.post(leg_body("a", "a"))  # a replay
        uuid = EXPECTED["a"]["uuid"]
        _eventually(lambda: len(_notes(tmp_path)) >= 1)
        time.sleep(1.0)
        (note,) = _notes(tmp_path)  # the socket's own, with the talk it timed
        assert note.startswith(f"too_long {uuid} ")
        store = open_store(_db_url(d))
        try:
            assert store.analysis_get(uuid) is not None
            row = store.get_call(uuid)
            assert row is not None and row["cdr_a_leg"] and row["customer_id"] == "c1"
        finally:
            store.close()
        assert _metric(d, "fsapp_calls_total", entry="main", status="answered") == 1
        assert _metric(d, "fsapp_calls_total", entry="cdr", status="answered") == 0
    finally:
        d.stop()


def test_a_cdr_only_call_that_was_not_answered_is_counted_but_not_queued_or_noticed(tmp_path: Path) -> None:
    """Scenario b's legs without the socket: a missed call, counted as missed; no recording to analyse
    (its line figures still are), no notice."""
    d = _daemon(tmp_path, _body(tmp_path))
    try:
        d.post_scenario("b", "ba")
        uuid = EXPECTED["b"]["uuid"]
        _eventually(lambda: _metric(d, "fsapp_calls_total", entry="cdr", status="missed") == 1)
        store = open_store(_db_url(d))
        try:
            queued = store.analysis_get(uuid)
            assert queued is not None and queued["recording"] == "" and queued["mos"] == 4.5
        finally:
            store.close()
        assert _notes(tmp_path) == []
    finally:
        d.stop()


def test_fsapp_cdr_import_gives_an_imported_call_its_after_call_work_once(tmp_path: Path) -> None:
    """The legs FreeSWITCH could not post, imported from its err-log-dir, twice (a second copy of the files)."""
    d = _daemon(tmp_path, _body(tmp_path))
    uuid = EXPECTED["f"]["uuid"]
    try:
        for attempt in range(2):
            folder = tmp_path / f"json_cdr_err{attempt}"
            folder.mkdir()
            for leg in "ab":
                body = leg_body("f", leg)
                (folder / f"{leg_uuid(body)}.cdr.json").write_bytes(body)
            proc = d.cli("cdr", "import", str(folder))
            assert proc.returncode == 0, proc.stderr
        _eventually(lambda: len(_notes(tmp_path)) >= 1)
        time.sleep(1.0)
        assert _notes(tmp_path) == [f"too_long {uuid} 10"]
        store = open_store(_db_url(d))
        try:
            queued = store.analysis_get(uuid)
            assert queued is not None and queued["customer_channel"] == "right"
        finally:
            store.close()
    finally:
        d.stop()


def test_fsapp_cdr_import_names_a_crm_it_cannot_build_and_imports_nothing(
        tmp_path: Path, standin: PayamgostarStandIn) -> None:
    """Run by hand without the CRM's password variable (the daemon has it): exit 2 naming it, files left."""
    d = _daemon(tmp_path, _body(tmp_path, _crm(standin)), env={"FSAPP_TEST_PG_PASSWORD": standin.password})
    try:
        folder = tmp_path / "json_cdr_err"
        folder.mkdir()
        body = leg_body("f", "a")
        (folder / f"{leg_uuid(body)}.cdr.json").write_bytes(body)
        env = {k: v for k, v in d.env.items() if k != "FSAPP_TEST_PG_PASSWORD"}
        proc = subprocess.run([sys.executable, "-m", "fsapp", "cdr", "import", "-c", str(d.config), str(folder)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2 and "FSAPP_TEST_PG_PASSWORD" in proc.stderr, proc.stderr
        assert [p.name for p in folder.iterdir()] == [f"{leg_uuid(body)}.cdr.json"]
        assert d.calls() == []
    finally:
        d.stop()
