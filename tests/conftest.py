"""Shared fixtures: a config from TOML text, an in-process daemon, a PostgreSQL database."""

from __future__ import annotations

import shutil
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsapp import config as configmod
from tests.helpers import PG_ENV, Daemon, write_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., configmod.Config]:
    def make(body: str, *, entry: str = "main", extra: str = "", check_files: bool = False) -> configmod.Config:
        return configmod.load(write_config(tmp_path, body, entry=entry, extra=extra), check_files=check_files)

    return make


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


def _pg_admin_url() -> str:
    import os

    return os.environ.get(PG_ENV, "")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; skipped when no server is reachable."""
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


@pytest.fixture(scope="session")
def journal_copies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """``copy(store_url, key, build)``: a store at ``store_url`` holding what ``build(store)``
    puts in a fresh one, built once for each ``key`` and copied for each test after (SQLite:
    the file, built once in the run; PostgreSQL: CREATE DATABASE ... TEMPLATE, built once in
    each test process). For the big journals several tests only read."""
    from fsapp.store import open_store

    built: dict[str, str] = {}
    templates: list[str] = []

    def copy(store_url: str, key: str, build: Callable[[Any], None]) -> Any:
        if store_url.startswith("sqlite:///"):
            shutil.copyfile(_sqlite_journal(tmp_path_factory, key, build), store_url[len("sqlite:///"):])
            return open_store(store_url)
        source = built.get(key)
        if source is None:
            source = f"fsapp_tpl_{key}_{uuidlib.uuid4().hex[:8]}"
            templates.append(source)
            _pg_admin(f'CREATE DATABASE "{source}"')
            store = open_store(f"{_pg_admin_url().rpartition('/')[0]}/{source}")
            build(store)
            store.close()
            built[key] = source
        name = store_url.rpartition("/")[2]
        _pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        return open_store(store_url)

    yield copy
    for name in templates:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(*statements: str) -> None:
    import psycopg

    with psycopg.connect(_pg_admin_url(), autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _sqlite_journal(tmp_path_factory: pytest.TempPathFactory, key: str, build: Callable[[Any], None]) -> str:
    """The SQLite file ``build`` fills for ``key``, made by the first test process of the run to
    ask (the others wait for it)."""
    import fcntl
    import os

    from fsapp.store import open_store

    run = tmp_path_factory.getbasetemp()  # with xdist: this worker's folder inside the run's
    path = (run.parent if os.environ.get("PYTEST_XDIST_WORKER") else run) / f"journal-{key}.db"
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            part = path.with_name(path.name + ".part")
            store = open_store(f"sqlite:///{part}")
            build(store)
            store.close()
            part.replace(path)
    return str(path)
