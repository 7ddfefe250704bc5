"""SQLite connection for the store: WAL mode, one connection per process.

A transaction never yields to other greenlets, so it is never interleaved with
another call's inside one process; other processes (a second daemon, ``fsapp
ledger reconcile``) are kept apart by SQLite's own locking. When another process
holds the database, a statement is retried with cooperative sleeps (never
SQLite's own busy wait, which would stop every call of the daemon) until
``busy_timeout_ms``, then fails as a StorageError.

Group commit (``group_window``, set by the daemon): each commit writes every page it
changed to the WAL, and a busy daemon's calls all write the same few pages (the
journal's and the outbox's last ones, their indexes). While writes come closer
together than the window, a single-statement write joins a group that runs as one
transaction when the window ends; its caller waits for that commit, so a write that
returns is committed, as before. A write into a quiet database goes straight in.

Checkpoints off the loop (``checkpoint_in_background``, set by the daemon): left to
SQLite, the commit that fills the WAL to ``WAL_PAGES`` copies all of it back into the
database file first, 40 MB and an fsync, 50-70 ms in which the whole daemon stands
still; at 1,000 CDR posts/s that was every quarter of a second. Instead a second
connection copies the WAL back on gevent's thread pool (SQLite lets go of the GIL
meanwhile), PASSIVE, while the daemon goes on writing. The WAL starts again from its
beginning only once every frame is copied when a write begins, which a busy daemon
never lets happen: so once the WAL is full, after a second copy of what came in during
the first (and of what came in during that, until one copies under ``CATCH_UP_FRAMES``),
the last few frames are copied while this connection's lock is held, no transaction
between; the next write then starts the WAL afresh. That pause is those few frames and
the fsyncs, 15-20 ms at 2,000 CDR posts/s (bench/cdr_bench.py), not the whole WAL.
SQLite's own checkpoint stays as a backstop at four times ``WAL_PAGES``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.lock

T = TypeVar("T")
OPEN_WAIT_SECONDS = 120.0  # see SQLiteDB.__init__
# Pages the WAL may hold before a commit copies them back into the database (SQLite's default:
# 1,000). A call's row is in some forty index pages; copied back every 4 MB, a busy page is
# written again and again and every copy waits on an fsync. At 40 MB the CDR endpoint's store
# costs a fifth less a leg, the daemon a tenth less a post (bench/cdr_bench.py, random uuids),
# and the WAL file stays under about 40 MB.
WAL_PAGES = 10_000
CHECKPOINT_SECONDS = 0.25  # how often the background checkpoint copies the WAL back (see above)
CATCH_UP_PASSES = 4  # copies of what came in during the last, at most, before the last one (see above)
CATCH_UP_FRAMES = 500  # a copy of fewer frames than this is caught up


class StorageError(Exception):
    """The database failed (locked too long, disk full, unreachable)."""


def _private_file(path: Path, *, create: bool = True) -> None:
    """Make ``path`` (created if asked, with its folder) unreadable to other users, whatever the umask.

    The database holds PIN hashes and the journal: a new one is 0600 in a 0750 folder; an
    existing one loses any permission for others (its group's stay, for operators).
    """
    if create:
        try:
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror or exc}") from exc
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o007:
            os.chmod(path, mode & 0o770)
    except OSError:  # not there (no WAL yet), or another user's file: SQLite says what matters
        pass


class SQLiteDB:
    dialect = "sqlite"
    autoid = "INTEGER PRIMARY KEY AUTOINCREMENT"
    skip_locked = ""  # BEGIN IMMEDIATE already gives one writer at a time
    # How long a migration waits for another's: processes started together on a new or older file
    # all migrate it, one after another, as long as they wait for the WAL switch (see __init__).
    # Their reads until the store is open wait as long (``opened``): a read waits only while a
    # connection holds the file alone, as the last one to close does while it copies its WAL back.
    opening_wait = OPEN_WAIT_SECONDS

    def __init__(self, path: str, busy_timeout_ms: int = 3000) -> None:
        self.path = path
        if path != ":memory:":
            _private_file(Path(path))
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.create_function("GREATEST", 2, max, deterministic=True)
            self.conn.execute("PRAGMA busy_timeout = 0")
            # a brand-new file becomes WAL only with its first write, which is another process's
            # whole first migration when they start together: wait for that, not only busy_timeout
            _while_busy(lambda: self.conn.execute("PRAGMA journal_mode = WAL"),
                        max(busy_timeout_ms / 1000, OPEN_WAIT_SECONDS))
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StorageError(f"{path}: {exc}") from exc
        if path != ":memory:":
            for side in ("-wal", "-shm"):  # SQLite gives them the database's mode; older ones may be looser
                _private_file(Path(path + side), create=False)
        self._identity = _identity(path)
        self._depth = 0
        self._busy_seconds = busy_timeout_ms / 1000
        self._lock = gevent.lock.RLock()
        self.group_window = 0.0  # seconds; 0: every write commits on its own
        self._group: _Group | None = None  # taking writes, until its window ends
        self._committing: _Group | None = None  # running its transaction
        self._last_write = 0.0
        self._checkpointer: gevent.Greenlet | None = None
        self._checkpoint_problem = ""
        self._read_wait: float | None = OPEN_WAIT_SECONDS  # until opened()

    def _retry_locked(self, fn: Callable[[], T], wait: float | None = None) -> T:
        """Run ``fn`` (holding the lock); while the database is busy, sleep and retry (for up to
        ``wait`` seconds, by default the busy timeout)."""
        deadline = time.monotonic() + (self._busy_seconds if wait is None else wait)
        delay = 0.002
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or self._depth or time.monotonic() + delay > deadline:
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
    def transaction(self, wait: float | None = None) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; nested calls join the outer transaction. ``wait``: how long
        BEGIN waits for another connection's write to end (by default the busy timeout)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"), wait)
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
        if self.group_window and not self._depth:
            group = self._group
            if group is None:
                now = time.monotonic()
                busy = now - self._last_write < self.group_window
                self._last_write = now
                if busy:
                    group = self._group = _Group()
                    gevent.spawn_later(self.group_window, self._commit_group, group)
            if group is not None:
                return group.join(sql, params)
        with self._lock:
            return self._retry_locked(lambda: self.conn.execute(sql, params).rowcount)

    def _commit_group(self, group: _Group) -> None:
        """Run a group's statements in one transaction; wake their callers with each one's outcome."""
        if group.started:  # flush() took it before its window ended
            return
        group.started = True
        if self._group is group:
            self._group = None
        self._committing = group
        try:
            with self._lock:
                try:
                    self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
                except StorageError as exc:
                    group.fail(exc)
                    return
                conn = self.conn
                for write in group.writes:
                    try:
                        write.rowcount = conn.execute(write.sql, write.params).rowcount
                    except sqlite3.Error as exc:
                        write.error = _storage_error(exc)
                        if not conn.in_transaction:  # it took the whole transaction back with it
                            group.fail(write.error)
                            return
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    group.fail(_storage_error(exc))
        except BaseException as exc:  # killed mid-commit (shutdown): no caller may wait forever
            group.fail(StorageError(f"group commit interrupted: {exc!r}"))
            raise
        finally:
            if self._committing is group:
                self._committing = None
            group.done.set()

    def checkpoint_in_background(self, every: float = CHECKPOINT_SECONDS) -> None:
        """Copy the WAL back into the database file from now on as described above, every ``every`` s."""
        if self.path == ":memory:" or self._checkpointer is not None:
            return
        try:
            other = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            other.execute("PRAGMA busy_timeout = 0")  # a busy database is tried again next round
            other.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # its WAL open now, not later
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {4 * WAL_PAGES}")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        self._checkpointer = gevent.spawn(self._checkpoints, other, every)

    def _checkpoints(self, other: sqlite3.Connection, every: float) -> None:
        def passive() -> tuple[int, int]:
            """PASSIVE checkpoint: (frames in the WAL, frames copied back of them)."""
            _busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            return int(frames), int(copied)

        try:
            while True:
                gevent.sleep(every)
                try:
                    frames, copied = _in_thread(passive)
                    if frames < WAL_PAGES:
                        continue
                    for _ in range(CATCH_UP_PASSES):  # what came in meanwhile, less each time
                        before, (frames, copied) = copied, _in_thread(passive)
                        if copied - before < CATCH_UP_FRAMES:
                            break
                    with self._lock:  # the last frames, no transaction between: the WAL starts again
                        _in_thread(passive)
                    self._checkpoint_problem = ""
                except sqlite3.Error as exc:  # SQLite's own checkpoint still runs (the backstop)
                    if not (isinstance(exc, sqlite3.OperationalError) and _busy(exc)):  # busy: next round
                        self._checkpoint_problem = f"{self.path}: checkpoint failed: {exc}"
        finally:
            other.close()

    def flush(self) -> None:
        """Commit the pending group now, and wait for one already committing (before closing)."""
        committing = self._committing
        if committing is not None:
            committing.done.wait()
        group = self._group
        if group is not None:
            self._commit_group(group)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement for each of ``rows`` (inside a transaction); the rows it changed."""
        with self._lock:
            return self._retry_locked(lambda: self.conn.executemany(sql, rows).rowcount)

    def lock(self, name: str) -> None:
        """Serialise a critical section across processes: a write transaction already is."""

    def lock_many(self, names: Sequence[str]) -> None:
        """``lock`` each of ``names``."""

    def load_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert many rows in one transaction (bulk loads: benchmarks, imports); how many."""
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        count = 0
        with self.transaction():
            for chunk in _batches(rows, 10_000):
                self._retry_locked(lambda chunk=chunk: self.conn.executemany(sql, chunk))
                count += len(chunk)
        return count

    def opened(self) -> None:
        """The schema is up to date: from now on a read waits the busy timeout, as a write does."""
        self._read_wait = None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._retry_locked(lambda: [dict(r) for r in self.conn.execute(sql, params).fetchall()],
                                      self._read_wait)

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def ping(self) -> bool:
        try:
            self.query("SELECT 1")
            return True
        except StorageError:
            return False

    def problem(self) -> str:
        """'' while the file at ``path`` is the one opened; else what happened to it.

        A database deleted or replaced under the daemon still answers (the process
        holds the old file open) while every write goes where nobody will read it.
        """
        if self._identity is None:
            return ""
        if self._checkpoint_problem:
            return self._checkpoint_problem
        now = _identity(self.path)
        if now is None:
            return f"{self.path}: the database file is gone (deleted while open)"
        if now != self._identity:
            return f"{self.path}: the database file was replaced while open"
        return ""

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.kill()  # after its copy in flight, if any (_in_thread)
            self._checkpointer = None
        self.flush()
        self.conn.close()


def _in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on gevent's thread pool, this greenlet waiting for it.

    Killed while it waits, the greenlet still waits for the thread to finish before it
    dies: what the thread uses (a connection, a lock held for it) stays until it is done.
    """
    result = gevent.get_hub().threadpool.spawn(fn)
    interrupted: BaseException | None = None
    while not result.ready():
        try:
            result.wait()
        except BaseException as exc:  # noqa: BLE001 - raised again once the thread is done
            interrupted = exc
    if interrupted is not None:
        raise interrupted
    return result.get()


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the database (worth waiting for), not another failure."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _while_busy(fn: Callable[[], T], seconds: float) -> T:
    """``fn()``, tried again (cooperative sleeps) while another connection holds the database,
    for up to ``seconds``: turning a brand-new file to WAL needs it alone, and daemons and
    commands started together all open it at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                raise
            gevent.sleep(0.005)


def _batches(rows: Iterable[Sequence[Any]], n: int) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None for ':memory:' or no file."""
    if path == ":memory:":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Write:
    __slots__ = ("sql", "params", "rowcount", "error")

    def __init__(self, sql: str, params: Sequence[Any]) -> None:
        self.sql = sql
        self.params = params
        self.rowcount = 0
        self.error: StorageError | None = None


class _Group:
    """Writes that commit together; ``done`` is set once they have (or have failed)."""

    __slots__ = ("writes", "done", "started")

    def __init__(self) -> None:
        self.writes: list[_Write] = []
        self.done = gevent.event.Event()
        self.started = False

    def join(self, sql: str, params: Sequence[Any]) -> int:
        write = _Write(sql, params)
        self.writes.append(write)
        self.done.wait()
        if write.error is not None:
            raise write.error
        return write.rowcount

    def fail(self, error: StorageError) -> None:
        for write in self.writes:
            write.error = write.error or error


def _storage_error(exc: sqlite3.Error) -> StorageError:
    err = StorageError(str(exc))
    err.__cause__ = exc
    return err
