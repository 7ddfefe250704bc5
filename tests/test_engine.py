"""The daemon, the call engine and the menu, over a real TCP socket with the stand-in."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gevent
import gevent.socket
import pytest

from fsapp import config as configmod
from fsapp import esl
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.simulate import wait_idle
from fsapp.store import sqlite_path
from tests.helpers import ROOT, write_config

MENU = """
[[modules]]
code = "main"
kind = "menu"
prompt = "menu/main"
invalid_prompt = "menu/invalid"
options = { "1" = "ext:1001", "2" = "queue:support", "0" = "transfer:9196:public", "3" = "second" }
timeout_ms = 3000
max_attempts = 3
next = "hangup"
error = "hangup:CALL_REJECTED"

[[modules]]
code = "second"
kind = "menu"
prompt = "menu/main"
options = { "1" = "ext:1002" }
max_attempts = 1
next = "hangup"
error = "main"
"""


def test_menu_routes_by_digit(make_config, daemon):
    """Digit 1 bridges to the extension; the row says answered with that extension."""
    d = daemon(make_config(MENU))
    fake, row = d.call(caller="09121234567", dtmf=["1"], bridges=["answer:42"])
    assert fake.apps() == ["answer", "play_and_get_digits", "multiset", "bridge", "hangup"]
    assert "user/1001@${domain_name}" in fake.steps[3].arg
    assert fake.exit_received
    assert row["status"] == "answered"
    assert row["extension"] == "1001"
    assert row["talk_seconds"] == 42
    assert row["modules"] == ["main"]


def test_daemon_turns_off_the_events_it_never_reads(make_config, daemon):
    """After myevents the daemon nixes DTMF, CHANNEL_EXECUTE and the state events: FreeSWITCH never
    sends them, while completions, bridge and hangup events still arrive and the call is journaled."""
    d = daemon(make_config(MENU))
    fake, row = d.call(caller="09121234567", dtmf=["1"], bridges=["answer:42"])
    assert fake.commands[:4] == ["connect", "myevents", f"nixevent {esl.NIXED}", "linger"]
    names = {m.group(1).decode() for f in fake.frames_out if (m := re.search(rb"\n\nEvent-Name: (\w+)\n", f))}
    # (CHANNEL_PARK does not come either: nixevent goes out with myevents, before the socket app parks.)
    assert names.isdisjoint({"DTMF", "CHANNEL_EXECUTE", "CHANNEL_STATE", "CHANNEL_UNPARK"})
    assert {"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_HANGUP",
            "CHANNEL_HANGUP_COMPLETE"} <= names
    assert row["status"] == "answered" and row["talk_seconds"] == 42


def test_bridge_variables_and_the_answer_cost_no_round_trip(make_config, daemon):
    """The answer goes out in the write that subscribes to events, multiset in the bridge's write:
    FreeSWITCH runs them in that order, and the daemon waits once for each write."""
    d = daemon(make_config(MENU))
    fake, row = d.call(caller="09121234567", dtmf=["1"], bridges=["answer:42"])
    assert fake.commands[3:6] == ["linger", "sendmsg", "sendmsg"]
    assert [s.app for s in fake.steps][:4] == ["answer", "play_and_get_digits", "multiset", "bridge"]
    assert fake.batches == [["connect"], ["myevents", "nixevent", "linger", "sendmsg answer"],
                            ["sendmsg play_and_get_digits"], ["sendmsg multiset", "sendmsg bridge"],
                            ["sendmsg hangup"], ["exit"]]
    assert row["status"] == "answered"


def test_menu_routes_to_queue_transfer_and_submenu(make_config, daemon):
    """Digit 2 goes to the callcenter queue, 0 transfers to the dialplan, 3 enters another menu."""
    d = daemon(make_config(MENU))
    fake, row = d.call(dtmf=["2"], bridges=["answer:10"])
    assert [s.arg for s in fake.steps if s.app == "callcenter"] == ["support@default"]
    # The agent hangs up, FreeSWITCH parks the caller, and a plain queue: destination hangs up.
    assert fake.apps()[-2:] == ["callcenter", "hangup"] and fake.steps[-1].result == "call-command"
    assert row["status"] == "answered" and row["talk_seconds"] == 10
    fake, row = d.call(dtmf=["0"])
    assert fake.steps[-1].app == "transfer" and fake.steps[-1].arg == "9196 XML public"
    assert row["status"] == "transferred"
    fake, row = d.call(dtmf=["3", "1"], bridges=["no-answer"])
    assert row["modules"] == ["main", "second"]
    assert row["status"] == "missed"


def test_menu_no_input_and_invalid_input_then_error(make_config, daemon):
    """No input, then invalid input, then no input: three attempts, invalid prompt between, then error."""
    d = daemon(make_config(MENU))
    fake, row = d.call(dtmf=["", "7", ""])
    asks = [s for s in fake.steps if s.app == "play_and_get_digits"]
    assert [a.result for a in asks] == ["", "invalid:7", ""]
    plays = fake.prompts()
    assert len(plays) == 2 and all(p.endswith("/fa/menu/invalid.wav") for p in plays)
    assert fake.steps[-1].app == "hangup" and fake.steps[-1].arg == "CALL_REJECTED"
    assert row["status"] == "completed"
    assert row["final_destination"] == "hangup:CALL_REJECTED"


def test_caller_hangup_during_prompt_ends_cleanly(make_config, daemon):
    """A caller hanging up in the first prompt: greenlet ends, socket closed, row abandoned."""
    d = daemon(make_config(MENU))
    fake, row = d.call(dtmf=["1"], hangup_after=2)
    assert fake.exit_received  # collected HANGUP_COMPLETE, then sent exit
    assert not d.server.calls
    assert row["status"] == "abandoned"
    assert row["hangup_cause"] == "NORMAL_CLEARING"
    assert row["ended_at"] and row["total_seconds"] >= 0


def test_two_hundred_concurrent_calls_complete(make_config, daemon):
    """200 simultaneous calls all finish, each journaled once, nothing left running."""
    d = daemon(make_config(MENU))
    calls = [gevent.spawn(run_call, d.address, Script(caller=f"0912{i:07}", dtmf=["1"], bridges=["answer:30"]))
             for i in range(200)]
    gevent.joinall(calls, timeout=60)
    fakes = [g.value for g in calls]
    wait_idle(d.server)
    assert all(f is not None and f.exit_received and not f.error for f in fakes)
    rows = d.store.list_calls()
    assert len(rows) == 200
    assert {r["status"] for r in rows} == {"answered"}
    assert not d.server.calls


def test_peer_outside_allow_is_refused(make_config, daemon):
    """A peer outside server.allow is closed before any command is sent."""
    cfg = make_config(MENU.replace('allow = ["127.0.0.1"]', ""), extra="")
    cfg = configmod.from_dict(
        {**_as_dict(cfg), "server": {"listen": "127.0.0.1:0", "allow": ["10.9.8.0/24"]}},
        check_files=False,
    )
    d = daemon(cfg)
    s = gevent.socket.create_connection(d.address, timeout=5)
    assert s.recv(100) == b""  # closed at once, nothing sent
    s.close()
    assert d.store.list_calls() == []


def _as_dict(cfg: configmod.Config) -> dict:
    import tomllib

    path = sqlite_path(cfg.storage_url).parent / "fsapp.toml"
    return tomllib.loads(path.read_text())


def test_overflow_above_max_calls(make_config, daemon, tmp_path):
    """Above max_calls a new call is not dropped: it goes to [entry] overflow."""
    cfg = make_config(MENU, extra="")
    data = _as_dict(cfg)
    data["server"]["max_calls"] = 1
    data["entry"]["overflow"] = "hangup:USER_BUSY"
    cfg = configmod.from_dict(data, check_files=False)
    d = daemon(cfg)
    first = gevent.spawn(run_call, d.address, Script(dtmf=["1"], bridges=["answer:1:hold"]))
    deadline = time.monotonic() + 5
    while not d.server.calls and time.monotonic() < deadline:
        gevent.sleep(0.01)
    second, row = d.call(caller="1002")
    first.join(10)
    assert second.steps[-1].app == "hangup" and second.steps[-1].arg == "USER_BUSY"
    assert "answer" not in second.apps()
    assert first.value.steps[-1].app == "hangup" and first.value.exit_received


def _serve(config_path: Path, tmp_path: Path) -> tuple[subprocess.Popen, tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(config_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "server_started" in line:
            import json

            port = int(json.loads(line)["listen"].rsplit(":", 1)[1])
            break
    assert port, "daemon did not start"
    return proc, ("127.0.0.1", port)


def test_sigterm_drains_live_call_and_exits_zero(tmp_path):
    """SIGTERM: stop accepting, let the live call finish, exit 0."""
    path = write_config(tmp_path, MENU)
    proc, address = _serve(path, tmp_path)
    try:
        live = gevent.spawn(run_call, address, Script(dtmf=["1"], bridges=["answer:1.5:hold"]))
        gevent.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        live.join(15)
        assert live.value.exit_received and live.value.steps[-1].app == "hangup"
        assert proc.wait(15) == 0
        with pytest.raises(OSError):
            socket.create_connection(address, timeout=1)
    finally:
        proc.kill()
        proc.wait()
    from fsapp.store import open_store

    rows = open_store(f"sqlite:///{tmp_path / 'fsapp.db'}").list_calls()
    assert [r["status"] for r in rows] == ["answered"]


BAD = {
    "unknown kind": ('[[modules]]\ncode = "x"\nkind = "teleport"\nnext = "hangup"\nerror = "hangup"\n',
                     "modules[1].kind: unknown kind 'teleport'"),
    "unknown destination": ('[[modules]]\ncode = "x"\nkind = "menu"\noptions = { "1" = "nowhere" }\n'
                            'next = "hangup"\nerror = "hangup"\n', "modules[1].options.1: unknown module code"),
    "missing destination": ('[[modules]]\ncode = "x"\nkind = "menu"\noptions = { "1" = "hangup" }\n'
                            'next = "hangup"\n', "modules[1].error: missing destination"),
    "duplicate code": ('[[modules]]\ncode = "main"\nkind = "menu"\noptions = { "1" = "hangup" }\n'
                       'next = "hangup"\nerror = "hangup"\n', "modules[1].code: duplicate code 'main'"),
    "loop": ('[[modules]]\ncode = "a"\nkind = "menu"\noptions = { "1" = "b" }\nnext = "b"\nerror = "b"\n'
             '[[modules]]\ncode = "b"\nkind = "menu"\noptions = { "1" = "a" }\nnext = "a"\nerror = "a"\n',
             "modules[1]: module 'a' loops without ever reaching FreeSWITCH or a hangup"),
    "missing prompt": ('[[modules]]\ncode = "x"\nkind = "menu"\nprompt = "menu/nonexistent"\n'
                       'options = { "1" = "hangup" }\nnext = "hangup"\nerror = "hangup"\n',
                       "modules[1].prompt: "),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_reports_each_problem_with_its_key(tmp_path, case):
    """`fsapp check` exits 2 with one file:key: message line per problem."""
    body, expected = BAD[case]
    path = write_config(tmp_path, MENU.split("[[modules]]\ncode = \"second\"")[0].replace(
        '"3" = "second"', '"3" = "hangup"') + body)
    proc = subprocess.run([sys.executable, "-m", "fsapp", "check", "-c", str(path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any(line.startswith(f"{path}:") and expected in line for line in lines), lines


def test_check_reports_bad_listen_and_serve_refuses(tmp_path):
    """A bad listen address is reported by key, and `serve` refuses to start on it."""
    path = write_config(tmp_path, MENU)
    path.write_text(path.read_text().replace('listen = "127.0.0.1:0"', 'listen = "localhost-no-port"'))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in ("check", "serve"):
        proc = subprocess.run([sys.executable, "-m", "fsapp", command, "-c", str(path)], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 2
        assert f"{path}:server.listen: not HOST:PORT" in proc.stderr


def test_sample_config_checks_clean():
    """The shipped sample config passes `fsapp check`, prompts included."""
    proc = subprocess.run([sys.executable, "-m", "fsapp", "check"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr


RELOAD = """
[billing]
meter_heartbeat_seconds = 1

[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
next = "paid"
error = "hangup"

[[modules]]
code = "paid"
kind = "telephone_bill"
product_code = "P1"
amount_per_interval = 1000
max_debt = 1000000000
targets = ["ext:1001"]
next = "after"
error = "hangup"

[[modules]]
code = "after"
kind = "menu"
options = { "1" = "ext:3001" }
max_attempts = 1
next = "hangup"
error = "hangup"
"""


def test_sighup_reload_applies_to_new_calls_not_live_ones(tmp_path):
    """SIGHUP: the next call follows the new config; a live call finishes on the old; a bad config changes nothing."""
    from fsapp import customers
    from fsapp.store import open_store

    path = write_config(tmp_path, RELOAD)
    store = open_store(f"sqlite://{tmp_path / 'fsapp.db'}")
    customers.save_rows(store, customers.parse_csv(
        "id,number,name,type,phones,mobile,pin,sales,support,other,debt\n"
        "C-1,C-1,Test,active,09121234567,,,,,,0\n"))
    store.close()
    proc, address = _serve(path, tmp_path)
    try:
        script = {"caller": "09121234567", "dtmf": ["1"]}
        live = gevent.spawn(run_call, address, Script(**script, bridges=["answer:3:hold", "answer:5"]))
        gevent.sleep(1.0)  # the live call is in its held bridge, under the first config
        path.write_text(path.read_text().replace('"1" = "ext:3001"', '"1" = "ext:4001"'))
        proc.send_signal(signal.SIGHUP)
        gevent.sleep(0.5)
        new = run_call(address, Script(**script, bridges=["answer:1", "answer:5"]))
        live.join(15)
        bridged = lambda fake: [s.arg.split("}", 1)[1] for s in fake.steps if s.app == "bridge"]  # noqa: E731
        assert bridged(new) == ["user/1001@${domain_name}", "user/4001@${domain_name}"]
        assert bridged(live.value) == ["user/1001@${domain_name}", "user/3001@${domain_name}"]

        path.write_text(path.read_text().replace('next = "after"', 'next = "nowhere"'))
        proc.send_signal(signal.SIGHUP)
        gevent.sleep(0.5)
        again = run_call(address, Script(**script, bridges=["answer:1", "answer:5"]))
        assert bridged(again) == ["user/1001@${domain_name}", "user/4001@${domain_name}"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    log = proc.stderr.read()
    assert '"config_reloaded"' in log
    assert "config_reload_rejected" in log and "unknown module code 'nowhere'" in log


def test_stand_in_flags_an_execute_queued_behind_an_unlocked_playback():
    """The stand-in catches what real FreeSWITCH would do wrong: two executes written together,
    the first a playback without event-lock, would run the second inside the first."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def app_side() -> None:  # a careless app, in place of the daemon
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"connect\n\n")
            conn.recv(65536)
            conn.sendall(b"sendmsg\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: a.wav\n"
                         b"Event-UUID: u-1\n\nsendmsg\ncall-command: execute\nexecute-app-name: hangup\n"
                         b"Event-UUID: u-2\n\n")
            conn.settimeout(2)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    t = threading.Thread(target=app_side)
    t.start()
    fake = FakeFreeSWITCH(srv.getsockname(), Script(caller="09121234567"), io_timeout=1).run()
    t.join()
    srv.close()
    assert fake.error == "execute hangup queued behind playback without event-lock"
    assert [s.app for s in fake.steps] == ["playback", "hangup"]


@dataclass
class QueueTalk:
    """A bare app's queue call on the stand-in: the app's session and a second connection's, if one came."""

    fake: FakeFreeSWITCH
    worker: gevent.Greenlet
    first: esl.Session
    second: esl.Session | None

    def end(self) -> None:
        """Hang up and exit every session; the stand-in then ends its run (the resumed connection's too)."""
        for s in (self.second, self.first):
            if s is not None:
                s.hangup()
                s.finish()
        self.worker.join(timeout=5)
        assert self.worker.dead and self.fake.error == ""


def _queue_talk_from_a_bare_app(bridge_vars: str) -> QueueTalk:
    """An app sets ``bridge_vars``, queues the caller and waits out a 3 s talk, on a two-socket dialplan."""
    listener = gevent.socket.socket(gevent.socket.AF_INET, gevent.socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)
    fake = FakeFreeSWITCH(listener.getsockname(), Script(bridges=["answer:3"], after_socket="socket"),
                          io_timeout=2, linger_timeout=2)
    worker = gevent.spawn(fake.run)
    try:
        with gevent.Timeout(5):
            conn, _ = listener.accept()
        s = esl.Session(conn, command_timeout=5)
        s.connect()
        s.setup()  # myevents, nixevent, linger
        s.execute("multiset", bridge_vars)
        assert s.execute("callcenter", "support@default").var("cc_cause") == "answered"
        s.wait_for(lambda: bool(s.bridges) and bool(s.bridges[-1].end_us), timeout=5)
        second = None
        try:
            with gevent.Timeout(0.5):
                conn2, _ = listener.accept()
            second = esl.Session(conn2, command_timeout=5)
            second.connect()
        except gevent.Timeout:
            pass
        return QueueTalk(fake, worker, s, second)
    finally:
        listener.close()


def test_stand_in_resumes_the_dialplan_after_a_queue_talk_without_park_after_bridge():
    """As FreeSWITCH does: the uuid_bridge ends, the dialplan goes on, and its second socket line
    connects for the same uuid while the first session is still open."""
    call = _queue_talk_from_a_bare_app("continue_on_fail=true hangup_after_bridge=false")
    try:
        assert call.second is not None, "no second connection"
        assert call.second.uuid == call.first.uuid and len(call.fake.resumed) == 1
    finally:
        call.end()


def test_stand_in_parks_the_caller_after_a_queue_talk_with_park_after_bridge():
    """park_after_bridge=true: the caller is parked (CS_PARK), no second connection comes, and the
    first session's next app still plays to the caller; the hangup comes from the park."""
    call = _queue_talk_from_a_bare_app("continue_on_fail=true hangup_after_bridge=false park_after_bridge=true")
    try:
        assert call.second is None and call.fake.resumed == []
        assert call.first.execute("playback", "prompts/thanks.wav").get("Application-Response") == "FILE PLAYED"
    finally:
        call.end()
    hangup = next(f for f in call.fake.frames_out if b"\nEvent-Name: CHANNEL_HANGUP\n" in f)
    assert b"\nChannel-State: CS_PARK\n" in hangup and b"\nChannel-Call-State: ACTIVE\n" in hangup  # as in 11
