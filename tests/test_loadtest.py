"""Smoke runs of the load test: every call completes and nothing is left behind (no timings asserted)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

import gevent

from fsapp import loadtest
from fsapp.simulate import wait_idle


def _live_greenlets() -> int:
    """Spawned greenlets still alive (gevent's resolver thread pool and its hubs are not calls: left out)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead)


def _open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_loadtest_full_scenario_in_a_child_daemon() -> None:
    """200 full-scenario calls against ``fsapp serve``: all complete, fds not above the baseline, exit 0."""
    out = loadtest.run(200, 20, 0, "full")
    assert out["errors"] == {}
    assert out["calls"] == 200
    assert out["completed"] == 200
    assert out["daemon_fds_before"] > 0
    assert out["daemon_fds_after"] <= out["daemon_fds_before"]
    assert out["daemon_exit"] == 0
    assert "error" not in out["daemon_log"] and "warning" not in out["daemon_log"]


def test_load_in_process_leaves_no_greenlet_or_socket(make_config: Callable[..., Any], daemon: Any) -> None:
    """200 menu calls against an in-process daemon: no live greenlet, socket or call left afterwards."""
    d = daemon(make_config(loadtest.BENCH_MODULES, entry="bench"))
    warm = loadtest.drive(d.address, (loadtest.menu_scenario(i) for i in range(10)), concurrency=5)
    assert warm.completed == 10
    wait_idle(d.server)
    gevent.sleep(0.1)
    greenlets, sockets = _live_greenlets(), _open_sockets()

    res = loadtest.drive(d.address, (loadtest.menu_scenario(i) for i in range(200)), concurrency=20)
    assert res.errors == {}
    assert res.completed == 200
    wait_idle(d.server)
    gevent.sleep(0.1)
    assert not d.server.calls
    assert _open_sockets() == sockets
    assert _live_greenlets() == greenlets


def test_loadtest_daemon_logging_only_errors_still_starts() -> None:
    """Readiness does not hang on the ``server_started`` line: at log level error there is none."""
    out = loadtest.run(20, 5, 0, "menu", log_level="error")
    assert out["completed"] == 20
    assert out["errors"] == {}
    assert out["daemon_log"] == {}  # not one line: nothing went wrong
    assert out["daemon_exit"] == 0


def test_loadtest_daemon_that_cannot_start_is_reported_with_its_error(monkeypatch: Any) -> None:
    """A daemon that exits at start is reported at once, with what it said (here: a bad config line)."""
    make = loadtest.make_config

    def broken(workdir: Any, scenario: str, **kw: Any) -> Any:
        path = make(workdir, scenario, **kw)
        path.write_text(path.read_text(encoding="utf-8").replace("max_calls = 20000", "max_calls = -1"),
                        encoding="utf-8")
        return path

    monkeypatch.setattr(loadtest, "make_config", broken)
    try:
        loadtest.start_daemon("menu")
    except RuntimeError as exc:
        assert "did not start listening" in str(exc)
        assert "max_calls" in str(exc)
    else:
        raise AssertionError("a daemon with a bad config was reported as started")


def test_loadtest_does_not_take_another_programs_socket_for_the_daemon(monkeypatch: Any) -> None:
    """If another program listens on the port picked for the daemon, the daemon cannot bind it and says
    so; that program's socket is not mistaken for the daemon's."""
    import socket

    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(5)
    monkeypatch.setattr(loadtest, "_free_port", lambda: other.getsockname()[1])
    try:
        loadtest.start_daemon("menu")
    except RuntimeError as exc:
        assert "did not start listening" in str(exc)
        assert "in use" in str(exc)  # the daemon's own bind error
    else:
        raise AssertionError("another program's listening socket was taken for the daemon")
    finally:
        other.close()


def test_bench_setup_driver_times_the_first_command_then_plays_the_call() -> None:
    """The bench's setup driver reads the daemon's first command on a blocking socket, then hands the
    socket and those bytes to the stand-in: every call still reaches the bridge and ends cleanly."""
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    run_py = Path(__file__).resolve().parent.parent / "bench" / "run.py"
    d = loadtest.start_daemon("menu")
    try:
        address = f"{d.address[0]}:{d.address[1]}"
        out = subprocess.run([sys.executable, str(run_py), "--setup-driver", address, "12", "50", str(time.time()),
                              "bridge"], capture_output=True, text=True, timeout=120)
    finally:
        exit_code = d.stop()
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["errors"] == {}
    assert figures["calls"] == figures["completed"] == 12
    assert 0 < figures["setup_p50_ms"] <= figures["setup_p99_ms"]
    assert figures["command_rtt_p50_ms"] > 0  # the rest of each call went through the stand-in
    assert exit_code == 0
