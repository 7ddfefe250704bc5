"""The web console's test journal: calls made over the socket, recorded, and users of each role."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from fsapp import config as configmod
from fsapp.store import Store
from fsapp.web.auth import hash_password
from tests.helpers import ROOT, SARA, Daemon, paid_line, seed

PASSWORD = "correct horse battery"
SARA_PHONE = "09121234567"

PAID = paid_line(link=False)


def extra(rec: Path, web: str = "") -> str:
    return f'[journal]\nrecord = true\nrecord_dir = "{rec}"\ntoo_long_seconds = 60\n\n[web]\n{web}\n'


@dataclass
class Journal:
    """The calls: ``answered`` (61 s, charged, too long), ``short`` (answered 20 s), ``missed``, ``stranger``."""

    cfg: configmod.Config
    store: Store
    uuids: dict[str, str] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)


def make_journal(cfg: configmod.Config, d: Daemon) -> Journal:
    seed(d.store, SARA.format(debt=0))
    j = Journal(cfg, d.store)
    for name, script in (("answered", {"caller": SARA_PHONE, "bridges": ["answer:61"]}),
                         ("short", {"caller": SARA_PHONE, "bridges": ["answer:20"]}),
                         ("missed", {"caller": SARA_PHONE, "bridges": ["busy", "busy"]}),
                         ("stranger", {"caller": "+989350001111", "direction": "outbound"})):
        fake, row = d.call(**script)
        assert row is not None
        j.uuids[name], j.rows[name] = fake.uuid, row
        if row["recording"]:
            write_wav(Path(row["recording"]), seconds=1)  # what FreeSWITCH's record_session leaves
    deadline = time.monotonic() + 10  # the invoices reach the CRM stand-in, as the pages expect
    while d.store.outbox_rows(pending_only=True) and time.monotonic() < deadline:
        d.app.outbox.run_once()
    assert d.store.outbox_rows(pending_only=True) == [], "the CRM deliveries did not finish"
    return j


def write_wav(path: Path, *, seconds: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * (8000 * 2 * seconds // 256))


def add_users(store: Store) -> None:
    for role in ("viewer", "reviewer", "admin"):
        store.web_user_set(role, role, hash_password(PASSWORD))


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def login(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    token = csrf(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"name": name, "password": password, "csrf": token})


def row_uuids(html: str) -> list[str]:
    return re.findall(r'data-uuid="([^"]+)"', html)


def fsapp(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(config: Path) -> Iterator[str]:
    """``fsapp web -c config`` in its own process; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "web", "-c", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        assert m, f"no listening line: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
