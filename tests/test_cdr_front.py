"""The CDR listener's front process (``[cdr] own_process``): it serves the posts' HTTP, the daemon
commits; it comes back when it dies, ends with the daemon, and takes a reload's new ``[cdr]``."""

from __future__ import annotations

import concurrent.futures
import http.client
import itertools
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import structlog.testing

from fsapp.cdr import legs as cdrlegs
from fsapp.cdr.listener import Keeper
from fsapp.cdr.writer import CDRWriter
from fsapp.store import open_store
from tests.cdrkit import CLUB, ServeProcess, leg_body, numbered_call


def _fronts(pid: int) -> list[int]:
    """The daemon's child processes running the CDR front."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            try:
                if b"fsapp.cdr.front" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
            except FileNotFoundError:
                pass
    return found


def _one_front(d: ServeProcess, other_than: int = 0) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        fronts = [pid for pid in _fronts(d.proc.pid) if pid != other_than]
        if len(fronts) == 1:
            return fronts[0]
        time.sleep(0.05)
    raise AssertionError(f"no single front process: {_fronts(d.proc.pid)}")


def _gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # exited, not yet reaped by its parent
            return True
        time.sleep(0.05)
    return False


def _wait_log(d: ServeProcess, text: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while text not in d.log_text():
        assert time.monotonic() < deadline, f"{text!r} not in the log: {d.log_text()}"
        time.sleep(0.05)


def test_a_front_that_dies_comes_back_and_no_post_is_lost_or_doubled(tmp_path: Path) -> None:
    d = ServeProcess(tmp_path, CLUB)
    try:
        first = _one_front(d)
        assert d.post(leg_body("a", "b"))[0] == 200
        os.kill(first, signal.SIGKILL)
        assert d.post(leg_body("a", "a"))[:2] == (200, "OK\n")  # waited in the socket's queue for the new front
        second = _one_front(d, other_than=first)
        assert second != first
        assert d.post(leg_body("a", "a"))[:2] == (200, "OK (already stored)\n")  # FreeSWITCH's retry
        (row,) = d.calls()
        assert row["status"] == "answered" and row["talk_seconds"] == 10  # the A leg's account
        assert "cdr_front_exited" in d.log_text()
    finally:
        d.stop()


def test_the_front_ends_with_the_daemon(tmp_path: Path) -> None:
    """Stopped (SIGTERM) or killed, the daemon leaves no front behind holding the port."""
    d = ServeProcess(tmp_path / "stopped", CLUB)
    front = _one_front(d)
    d.stop()
    assert d.proc.returncode == 0 and _gone(front)
    assert "cdr_front_exited" not in d.log_text()

    d = ServeProcess(tmp_path / "killed", CLUB)
    front = _one_front(d)
    d.proc.kill()
    d.proc.wait()
    assert _gone(front)


def test_a_daemon_stopped_while_it_starts_drains_and_leaves_no_front(tmp_path: Path) -> None:
    """SIGTERM as soon as the ESL port is bound, before the loop serves: a clean stop, not death."""
    for attempt in range(3):
        d = ServeProcess(tmp_path / str(attempt), CLUB, wait=False)
        try:
            deadline = time.monotonic() + 20
            while not _accepts(d.esl_address):
                assert d.proc.poll() is None and time.monotonic() < deadline, d.log_text()
                time.sleep(0.001)
            d.proc.send_signal(signal.SIGTERM)
            assert d.proc.wait(20) == 0, d.log_text()
        finally:
            d.stop()  # a daemon left running by a failed assertion
        assert "server_stopped" in d.log_text()
        deadline = time.monotonic() + 10
        while _accepts(("127.0.0.1", d.cdr_port)):  # the front ends with the daemon's channel
            assert time.monotonic() < deadline, "a front still holds the CDR port"
            time.sleep(0.05)


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.2).close()
        return True
    except OSError:
        return False


def test_the_front_leaves_signals_to_the_daemon(tmp_path: Path) -> None:
    """A signal to the whole process group (a terminal's Ctrl-C, systemd's stop) is the daemon's to act
    on: the front goes on serving until the daemon ends it, so the legs of the calls draining are taken."""
    d = ServeProcess(tmp_path, CLUB)
    try:
        front = _one_front(d)
        assert d.post(leg_body("b", "b"))[0] == 200  # the front is serving
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(front, number)
        assert d.post(leg_body("b", "a"))[0] == 200
        assert not _gone(front, seconds=0.5)
        assert _fronts(d.proc.pid) == [front]
    finally:
        d.stop()


def test_a_reload_gives_the_front_the_new_credentials(tmp_path: Path) -> None:
    env = {"FSAPP_TEST_CDR_OLD": "fs:old", "FSAPP_TEST_CDR_NEW": "fs:new"}
    d = ServeProcess(tmp_path, CLUB, cdr='credentials_env = "FSAPP_TEST_CDR_OLD"', env=env)
    try:
        assert d.post(leg_body("a", "b"), auth="fs:old")[0] == 200
        d.config.write_text(d.config.read_text().replace("FSAPP_TEST_CDR_OLD", "FSAPP_TEST_CDR_NEW"))
        d.proc.send_signal(signal.SIGHUP)
        _wait_log(d, "config_reloaded")
        deadline = time.monotonic() + 5  # the settings reach the front just after the reload
        while d.post(leg_body("a", "a"), auth="fs:old")[0] != 401:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert d.post(leg_body("a", "a"), auth="fs:new")[0] == 200
        (row,) = d.calls()
        assert row["status"] == "answered" and row["talk_seconds"] == 10
    finally:
        d.stop()


@pytest.mark.parametrize("own_process", ["true", "false"])
def test_either_way_a_refusal_is_logged_by_the_daemon(tmp_path: Path, own_process: str) -> None:
    d = ServeProcess(tmp_path, CLUB, cdr=f"own_process = {own_process}")
    try:
        if own_process == "true":
            _one_front(d)  # started just after the port is bound: it may be a moment behind
        status, text, _ = d.post(b'{"variables": 1}', uuid="x")
        assert status == 400 and "variables" in text
        assert d.post(leg_body("g", "a"))[0] == 200
        _wait_log(d, "cdr_refused")
        assert d.calls()[0]["direction"] == "local"
        assert (_fronts(d.proc.pid) != []) == (own_process == "true")
    finally:
        d.stop()


def test_posts_in_flight_when_the_front_dies_are_retried_and_stored_once(tmp_path: Path) -> None:
    """The front killed while posts come: each one is answered 200 or not at all (FreeSWITCH retries
    the latter, as mod_json_cdr does); in the end every call is there once, built from both legs."""
    d = ServeProcess(tmp_path, CLUB)
    try:
        front = _one_front(d)
        bodies = [leg for i in range(120) for leg in reversed(numbered_call(i))]  # the B leg first
        unanswered: list[bytes] = []
        answered = itertools.count(1)

        def post(body: bytes) -> None:
            try:
                if d.post(body)[0] != 200:
                    unanswered.append(body)
            except (OSError, http.client.HTTPException):  # the connection died with the front
                unanswered.append(body)
            if next(answered) == 60:  # half-way, with seven other posts in flight
                os.kill(front, signal.SIGKILL)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(post, bodies))
        for body in unanswered:  # mod_json_cdr's retries
            assert d.post(body)[0] == 200
        rows = d.calls()
        assert len(rows) == 120
        # the A leg's own account in each: its duration is 12 s, the B leg's 11 s
        assert {(r["status"], r["talk_seconds"], r["total_seconds"]) for r in rows} == {("answered", 10, 12)}
        assert _one_front(d, other_than=front) != front
    finally:
        d.stop()


class _BrokenWriter(CDRWriter):
    """A writer with a fault of ours in it: computing a call's row raises."""

    def _compute(self, legs: list[dict[str, object]]) -> dict[str, object]:
        raise RuntimeError("a fault in the row's computation")


def test_a_fault_of_ours_is_500_and_logged_and_the_next_leg_is_stored(tmp_path: Path) -> None:
    """Neither a 2xx nor a lost post: 500 (mod_json_cdr retries, then files the leg), the fault logged
    with its traceback, and a leg after it goes in as usual."""
    store = open_store(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        keep = Keeper(_BrokenWriter(store, lambda: 600))
        leg = cdrlegs.parse(leg_body("a", "a"), "application/json")
        with structlog.testing.capture_logs() as logs:
            answer = keep(leg, leg_body("a", "a"))
        assert answer.status == 500 and "a fault in the row's computation" in answer.text
        (line,) = [entry for entry in logs if entry["event"] == "cdr_failed"]
        assert line["uuid"] == leg["uuid"] and isinstance(line["exc_info"], RuntimeError)
        assert store.cdr_leg_count() == 0  # the transaction went back whole
        assert Keeper(CDRWriter(store, lambda: 600))(leg, leg_body("a", "a")).status == 200
        assert store.cdr_leg_count() == 1
    finally:
        store.close()
