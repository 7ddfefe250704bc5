"""SQLite connection for the store: WAL mode, one connection per process.

sqlite3 calls do not yield to other greenlets, so a transaction is never
interleaved with another call's inside one process; other processes (a second
daemon, ``fsapp ledger reconcile``) are kept apart by SQLite's own locking.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: {exc}") from exc
        self._depth = 0
        self._lock = threading.RLock()

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
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(str(exc)) from exc
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
        try:
            with self._lock:
                return self.conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    def lock(self, name: str) -> None:
        """Serialise a critical section across processes: a write transaction already is."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            with self._lock:
                return [dict(r) for r in self.conn.execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def script(self, sql: str) -> None:
        try:
            with self._lock:
                self.conn.executescript(sql)
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    def ping(self) -> bool:
        try:
            self.query("SELECT 1")
            return True
        except StorageError:
            return False

    def close(self) -> None:
        self.conn.close()
