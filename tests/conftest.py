"""Shared fixtures: a config from TOML text, an in-process daemon, one simulated call."""

from __future__ import annotations

import socket
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fsapp import config as configmod
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.simulate import in_process_server, wait_idle

ROOT = Path(__file__).resolve().parents[1]
SOUNDS = ROOT / "sounds"
SHARED = ROOT.parent / "shared"

BASE = """
[server]
listen = "127.0.0.1:0"
allow = ["127.0.0.1"]
command_timeout_seconds = 5

[storage]
url = "sqlite:///{db}"

[sounds]
dir = "{sounds}"
language = "fa"

[entry]
default = "{entry}"
"""


Handler = Callable[[socket.socket, threading.Event], None]


@contextmanager
def raw_server(handler: Handler) -> Iterator[str]:
    """A TCP server on a free port running `handler` for every connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def run(conn: socket.socket) -> None:
        try:
            handler(conn, stop)
        except OSError:
            pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for conn in conns:
            conn.close()



def write_config(tmp_path: Path, body: str, *, entry: str = "main", extra: str = "") -> Path:
    text = BASE.format(db=tmp_path / "fsapp.db", sounds=SOUNDS, entry=entry) + textwrap.dedent(extra) + "\n"
    text += textwrap.dedent(body)
    path = tmp_path / "fsapp.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., configmod.Config]:
    def make(body: str, *, entry: str = "main", extra: str = "", check_files: bool = False) -> configmod.Config:
        return configmod.load(write_config(tmp_path, body, entry=entry, extra=extra), check_files=check_files)

    return make


class Daemon:
    """An in-process fsapp daemon on a free loopback port."""

    def __init__(self, cfg: configmod.Config) -> None:
        self.server = in_process_server(cfg)
        self.app = self.server.app
        self.store = self.app.store

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def call(self, **script: Any) -> tuple[FakeFreeSWITCH, dict[str, Any] | None]:
        """Play one call to its end; return the stand-in and the journal row."""
        fake = run_call(self.address, Script(**script))
        wait_idle(self.server)
        return fake, self.store.get_call(fake.uuid)

    def stop(self) -> None:
        self.server.stream.close()
        self.app.stop()
        self.app.store.close()


@pytest.fixture
def daemon() -> Iterator[Callable[[configmod.Config], Daemon]]:
    started: list[Daemon] = []

    def start(cfg: configmod.Config) -> Daemon:
        d = Daemon(cfg)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


PG_ENV = "FSAPP_TEST_PG_URL"


def _pg_admin_url() -> str:
    import os

    return os.environ.get(PG_ENV, "")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; skipped when no server is reachable."""
    import uuid as uuidlib

    admin = _pg_admin_url()
    if not admin:
        pytest.skip(f"PostgreSQL tests need a server: set {PG_ENV} (e.g. from .ci/start-postgres)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg (pip install 'fsapp[postgres]')")
    name = "fsapp_test_" + uuidlib.uuid4().hex[:12]
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {PG_ENV} is not reachable: {str(exc).strip()[:120]}")
    base, _, _db = admin.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The storage URL for each backend: SQLite in a temp folder, PostgreSQL when reachable."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")
