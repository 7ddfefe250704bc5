"""``fsapp.spawn.Child``: the daemon's children (the CDR front, the analysis workers, the
reviewer's notify command) started by posix_spawn, never a fork of the threaded daemon."""

from __future__ import annotations

import ast
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import gevent.os
import pytest
from gevent.hub import get_hub

from fsapp.spawn import Child

REPORT = """
import os, signal, sys
fd = int(sys.argv[1])
os.write(fd, repr({
    "sid_is_pid": os.getsid(0) == os.getpid(),
    "stdin": os.read(0, 10),
    "marker": os.environ.get("FSAPP_MARK"),
}).encode())
"""


@pytest.fixture(autouse=True)
def _sigchld_reset() -> Iterator[None]:
    """The loop reaps every child once a watcher is installed: the stdlib Popen of the tests
    after these (in this worker) wait for their own again."""
    yield
    get_hub().loop.reset_sigchld()


def _no_fork(*_args: object) -> int:
    raise AssertionError("the daemon forked")


def test_a_child_of_a_threaded_process_is_spawned_not_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fork", _no_fork)
    monkeypatch.setattr(gevent.os, "fork", _no_fork)
    held, release = threading.Lock(), threading.Event()

    def holder() -> None:  # another thread holding a lock while the child starts: what a fork inherits
        with held:
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    r, w = os.pipe()
    try:
        child = Child([sys.executable, "-c", REPORT, str(w)], pass_fds=[w], new_session=True,
                      env={**os.environ, "FSAPP_MARK": "mine"})
        os.close(w)
        assert child.wait(30) == 0
        report = ast.literal_eval(os.read(r, 4096).decode())  # the child's repr of a dict
    finally:
        release.set()
        thread.join()
        os.close(r)
    assert report == {"sid_is_pid": True, "stdin": b"", "marker": "mine"}


def test_a_child_starts_with_sigpipe_at_its_default_and_no_signal_blocked(tmp_path: Path) -> None:
    """Python ignores SIGPIPE, and a spawned program inherits what is ignored: a notify script
    whose pipe closes must end, as under subprocess's restore_signals."""
    out = tmp_path / "status"
    assert Child(["sh", "-c", f"grep -E '^Sig(Ign|Blk)' /proc/self/status > {out}"]).wait(30) == 0
    masks = dict(line.split(":") for line in out.read_text().split("\n") if line)
    assert int(masks["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1)) == 0
    assert int(masks["SigBlk"], 16) == 0


def test_a_descriptor_not_passed_is_closed_in_the_child() -> None:
    r, w = os.pipe()
    try:
        child = Child([sys.executable, "-c", f"import os; os.fstat({w})"])
        assert child.wait(30) == 1  # OSError: bad file descriptor
    finally:
        os.close(r)
        os.close(w)


def test_wait_poll_and_signals_report_as_popen_does() -> None:
    child = Child([sys.executable, "-c", "import time; time.sleep(30)"])
    assert child.poll() is None
    assert child.wait(0.2) is None  # still running
    child.terminate()
    assert child.wait(30) == -signal.SIGTERM
    assert child.poll() == -signal.SIGTERM
    child.kill()  # ended and reaped: nothing is sent to a pid that may be another's now
    assert Child([sys.executable, "-c", "raise SystemExit(3)"]).wait(30) == 3


def test_the_program_is_searched_for_on_the_environment_s_path(tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "fsapp-test-tool"
    tool.parent.mkdir()
    tool.write_text(f"#!/bin/sh\necho \"$FSAPP_MARK\" > {tmp_path / 'out'}\n")
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tool.parent}:/usr/bin:/bin", "FSAPP_MARK": "found"}
    assert Child(["fsapp-test-tool"], env=env).wait(30) == 0
    assert (tmp_path / "out").read_text() == "found\n"


def test_a_missing_program_is_an_error_that_names_it() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-fsapp-tool"):
        Child(["no-such-fsapp-tool", "--flag"])
