"""SQLite connection for the store: WAL mode, one connection per process.

A transaction never yields to other greenlets, so it is never interleaved with
another call's inside one process; other processes (a second daemon, ``fsapp
ledger reconcile``) are kept apart by SQLite's own locking. When another process
holds the database, a statement is retried with cooperative sleeps (never
SQLite's own busy wait, which would stop every call of the daemon) until
``busy_timeout_ms``, then fails as a StorageError.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.lock

T = TypeVar("T")

class StorageError(Exception):
    """The database failed (locked too long, disk full, unreachable)."""


class SQLiteDB:
    dialect = "sqlite"
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    skip_locked = ""  # BEGIN IMMEDIATE already gives one writer at a time

    def __init__(self, path: str, busy_timeout_ms: int = 3000) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.create_function("GREATEST", 2, max, deterministic=True)
            self.conn.execute("PRAGMA busy_timeout = 0")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: {exc}") from exc
        self._depth = 0
        self._busy_seconds = busy_timeout_ms / 1000
        self._lock = gevent.lock.RLock()

    def _retry_locked(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (holding the lock); while the database is busy, sleep and retry."""
        deadline = time.monotonic() + self._busy_seconds
        delay = 0.002
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or self._depth or time.monotonic() + delay > deadline:
                    raise StorageError(str(exc)) from exc
                self._lock.release()
                try:
                    gevent.sleep(delay)
                finally:
                    self._lock.acquire()
                delay = min(2 * delay, 0.05)
            except sqlite3.Error as exc:
                raise StorageError(str(exc)) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            self._depth = 0
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StorageError(str(exc)) from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        with self._lock:
            return self._retry_locked(lambda: self.conn.execute(sql, params).rowcount)

    def lock(self, name: str) -> None:
        """Serialise a critical section across processes: a write transaction already is."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._retry_locked(lambda: [dict(r) for r in self.conn.execute(sql, params).fetchall()])

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def ping(self) -> bool:
        try:
            self.query("SELECT 1")
            return True
        except StorageError:
            return False

    def close(self) -> None:
        self.conn.close()
