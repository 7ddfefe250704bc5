"""Shared fixtures: a config from TOML text, an in-process daemon, a PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

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
