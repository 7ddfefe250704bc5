"""A real `fsapp serve` with its CDR listener, and real HTTP posts of mod_json_cdr's bodies."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, SHARED, write_config

CDR_DIR = SHARED / "cdr"
SCENARIOS = "abcdefg"

# A daemon that sends each call it takes to the agent (the captured calls need no more of it).
CLUB = """
[dial]
extension = "sofia/external/{ext}@127.0.0.1:5090"
ring_seconds = 20

[journal]
record = true
record_dir = "/usr/local/freeswitch/recordings/fsapp"

[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
next = "ext:agent"
error = "hangup"
"""


def leg_file(scenario: str, leg: str) -> Path:
    return next(CDR_DIR.glob(f"{scenario}-*.{leg}-leg.json"))


def leg_body(scenario: str, leg: str) -> bytes:
    return leg_file(scenario, leg).read_bytes()


def leg_uuid(body: bytes) -> str:
    return str(json.loads(body)["variables"]["uuid"])


def numbered_call(i: int) -> tuple[bytes, bytes]:
    """Scenario a's A and B legs, in that order, with uuids of their own (call ``i``)."""
    out = []
    for leg in "ab":
        text = leg_body("a", leg).decode()
        for uuid in ("7ea13f86-9781-489a-b42f-6716b6afbb32", "129ca055-5c83-4dbc-8ecc-39f282ea5d69"):
            text = text.replace(uuid, uuid[:-4] + f"{i:04d}")
        out.append(text.encode())
    return out[0], out[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`python -m fsapp serve` in its own process: the ESL server and the [cdr] listener."""

    def __init__(self, tmp: Path, body: str = "", *, cdr: str = "", env: dict[str, str] | None = None,
                 db_url: str = "", cdr_host: str = "127.0.0.1", server: str = "", wait: bool = True) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        for attempt in range(3):
            # a free port can be taken by another test's process before serve binds it: new ones, then
            self.esl_port, self.cdr_port = free_port(), free_port()
            extra = f'[cdr]\nlisten = "{cdr_host}:{self.cdr_port}"\n{cdr}\n'
            self.config = write_config(tmp, body, extra=extra)
            esl = f'listen = "127.0.0.1:{self.esl_port}"\n{server}'
            text = self.config.read_text().replace('listen = "127.0.0.1:0"', esl)
            if db_url:
                text = text.replace(text.split("[storage]\n", 1)[1].split("\n", 1)[0], f'url = "{db_url}"')
            self.config.write_text(text)
            self.log = tmp / f"serve-{self.cdr_port}.log"
            self.proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), env=self.env)
            try:
                if wait:
                    self._wait_listening()
                return
            except AssertionError as exc:
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise

    @property
    def esl_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.esl_port)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fsapp serve exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.cdr_port), timeout=0.2).close()
                socket.create_connection(self.esl_address, timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("fsapp serve did not start listening")

    def post(self, body: bytes, *, uuid: str | None = None, content_type: str = "application/json",
             auth: str = "", headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        """One POST /cdr?uuid=... as mod_json_cdr makes it; (status, body text, headers)."""
        uuid = leg_uuid(body) if uuid is None and body.startswith(b"{") else uuid
        conn = http.client.HTTPConnection("127.0.0.1", self.cdr_port, timeout=30)
        hdrs = {"Content-Type": content_type, "User-Agent": "freeswitch-json/1.0", "Accept": "*/*", **(headers or {})}
        if auth:
            hdrs["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        conn.request("POST", f"/cdr?uuid={uuid}" if uuid else "/cdr", body=body, headers=hdrs)
        resp = conn.getresponse()
        out = (resp.status, resp.read().decode(), dict(resp.getheaders()))
        conn.close()
        return out

    def post_scenario(self, scenario: str, order: str = "ba") -> None:
        for leg in order:
            status, text, _ = self.post(leg_body(scenario, leg))
            assert status == 200, text

    def calls(self, *args: str) -> list[dict[str, Any]]:
        proc = self.cli("calls", "--format", "json", *args)
        assert proc.returncode == 0, proc.stderr
        return list(json.loads(proc.stdout))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command, rest = args[0], args[1:]
        if command == "cdr":
            command, rest = "cdr", (rest[0], "-c", str(self.config), *rest[1:])
        else:
            rest = ("-c", str(self.config), *rest)
        return subprocess.run([sys.executable, "-m", "fsapp", command, *rest], capture_output=True, text=True,
                              env=self.env, timeout=60)

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def post_together(jobs: list[tuple[ServeProcess, bytes]]) -> list[int]:
    """Post every ``(daemon, body)`` at once, each from its own thread; the statuses."""
    results: list[int] = []
    barrier = threading.Barrier(len(jobs))

    def post(d: ServeProcess, body: bytes) -> None:
        barrier.wait()  # every leg at once: both legs of a call reach the daemons together
        results.append(d.post(body)[0])

    threads = [threading.Thread(target=post, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
