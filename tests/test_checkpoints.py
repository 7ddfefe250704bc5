"""SQLite's WAL copied back into the database off the event loop (``SQLiteDB.checkpoint_in_background``).

Under a stream of writes that never pauses, the WAL is still copied back and started again
from its beginning, so it stays near ``WAL_PAGES`` instead of growing to SQLite's own
checkpoint (the backstop, four times that); nothing written is lost on the way.
"""

from __future__ import annotations

import random
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest

from fsapp.store import sqlite as sqlitemod
from fsapp.store.sqlite import SQLiteDB
from tests.helpers import StartDaemon, balance_flow

PAGES = 1000  # WAL_PAGES in these tests: some 250 small transactions fill it


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SQLiteDB]:
    monkeypatch.setattr(sqlitemod, "WAL_PAGES", PAGES)
    d = SQLiteDB(str(tmp_path / "c.db"))
    d.conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
    d.conn.execute("CREATE INDEX t_v ON t (v)")
    yield d
    d.close()


def _wal(path: str) -> tuple[int, int]:
    """(frames the WAL file has room for, its checkpoint sequence: one more each time it starts again)."""
    data = Path(path + "-wal").read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    return (len(data) - 32) // (24 + page_size), struct.unpack(">I", data[12:16])[0]


def test_a_wal_written_without_pause_is_copied_back_and_started_again(db: SQLiteDB) -> None:
    db.checkpoint_in_background(every=0.01)
    (backstop,) = db.query("PRAGMA wal_autocheckpoint")
    assert list(backstop.values()) == [4 * PAGES]  # the writes' own connection leaves it to the background
    rng = random.Random(5)
    most, restarts, keys = 0, set(), []
    for _ in range(4000):  # one transaction after another, none waiting, as a busy daemon's writer
        key = f"{rng.getrandbits(64):016x}"
        keys.append(key)
        with db.transaction():
            db.execute("INSERT INTO t VALUES (?, ?)", (key, f"{rng.getrandbits(64):016x}" * 8))
        frames, sequence = _wal(db.path)
        most = max(most, frames)
        restarts.add(sequence)
        gevent.sleep(0)
    other = sqlite3.connect(db.path)
    kept = {k for (k,) in other.execute("SELECT k FROM t")}
    other.close()
    assert kept == set(keys)
    # SQLite's own checkpoint lets it reach 4 x PAGES before starting it again; copied back in the
    # background but never started again (no pause between two transactions), it got there too
    assert most < 3 * PAGES and len(restarts) >= 3, (most, len(restarts))


def test_the_daemon_leaves_sqlite_s_own_checkpoint_as_a_backstop(make_config: Any, daemon: StartDaemon) -> None:
    """The daemon copies the WAL back itself: SQLite's checkpoint at a commit waits for four WALs' worth."""
    d = daemon(make_config(balance_flow()))
    (row,) = d.store.db.query("PRAGMA wal_autocheckpoint")
    assert list(row.values()) == [4 * sqlitemod.WAL_PAGES]
