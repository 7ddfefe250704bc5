"""systemd: the unit verifies, and `fsapp serve` speaks the notify protocol on a real socket."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import HANGUP_MENU, ROOT, write_config

UNIT = ROOT / "dialplan" / "fsapp.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_unit_verifies_and_is_type_notify(tmp_path):
    """`systemd-analyze verify` accepts the shipped unit (ExecStart pointed at an executable that exists)."""
    text = UNIT.read_text()
    assert "\nType=notify\n" in text and "\nSyslogLevelPrefix=yes\n" in text
    for key in ("SystemCallFilter=@system-service", "ProtectProc=invisible", "ProcSubset=pid"):
        assert f"\n{key}\n" in text, key
    unit = tmp_path / "fsapp.service"
    unit.write_text(text.replace("/usr/local/bin/fsapp", sys.executable))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "fsapp.service" not in proc.stderr, proc.stderr  # no warning about our unit either


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(20)
    return sock


def _serve(path: Path, notify: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(notify)}
    return subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_serve_notifies_ready_once_listening_and_stopping_on_sigterm(tmp_path):
    """READY=1 arrives when the port accepts connections; SIGTERM sends STOPPING=1, then exit 0."""
    notify = _notify_socket(tmp_path)
    proc = _serve(write_config(tmp_path, HANGUP_MENU), tmp_path / "notify")
    try:
        ready = notify.recv(4096).decode().split("\n")
        assert "READY=1" in ready and f"MAINPID={proc.pid}" in ready
        status = next(s for s in ready if s.startswith("STATUS=accepting calls on 127.0.0.1:"))
        port = int(status.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # bound before READY=1
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in notify.recv(4096).decode().split("\n")
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_serve_that_cannot_bind_never_says_ready(tmp_path):
    """A taken port: exit 1 with the reason, and no READY=1 (systemd marks the start failed)."""
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    path = write_config(tmp_path, HANGUP_MENU)
    path.write_text(path.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'))
    notify = _notify_socket(tmp_path)
    proc = _serve(path, tmp_path / "notify")
    try:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert f"server.listen: cannot listen on 127.0.0.1:{port}" in err
        notify.settimeout(0.2)
        with pytest.raises(TimeoutError):
            notify.recv(4096)
    finally:
        proc.kill()
        taken.close()
        notify.close()


def test_under_journald_every_line_carries_its_syslog_priority(tmp_path):
    """JOURNAL_STREAM naming stderr: <6> info, <4> warning, <3> error, each before the JSON line."""
    path = write_config(tmp_path, HANGUP_MENU)
    path.write_text(path.read_text().replace('allow = ["127.0.0.1"]', 'allow = ["10.0.0.0/8"]'))
    notify = _notify_socket(tmp_path)
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        st = os.fstat(stderr.fileno())
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify"),
               "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        ready = notify.recv(4096).decode()
        port = int(ready.split("STATUS=accepting calls on 127.0.0.1:")[1].split("\n")[0])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # not in allow: a warning
        path.write_text(path.read_text() + "\n[[modules]]\n")  # a broken config: SIGHUP logs an error
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "config_reload_rejected" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
        notify.close()
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>\{", line) for line in lines), lines
    by_event = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert by_event["server_started"] == "<6>"
    assert by_event["connection_refused"] == "<4>"
    assert by_event["config_reload_rejected"] == "<3>"
