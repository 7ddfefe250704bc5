"""SQLite group commit: writes closer together than ``[storage] group_commit_ms`` commit as one transaction.

A write that returns is committed (another connection sees it); a statement that fails
fails alone; a commit that fails fails every write of its group; a database another
process holds is waited for; a quiet database takes each write straight in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from fsapp import config as configmod
from fsapp.config import Config, ConfigError
from fsapp.fakefs import Script, run_call
from fsapp.simulate import wait_idle
from fsapp.store import StorageError
from fsapp.store.sqlite import SQLiteDB
from tests.helpers import SARA, StartDaemon, balance_flow, seed, write_config


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SQLiteDB]:
    d = SQLiteDB(str(tmp_path / "g.db"))
    d.conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    yield d
    d.close()


def traced(d: SQLiteDB) -> list[str]:
    seen: list[str] = []
    d.conn.set_trace_callback(lambda sql: seen.append(sql.split(" ", 1)[0] if sql.startswith("INSERT") else sql))
    return seen


def rows(path: str) -> dict[str, int]:
    """What another connection (another process) sees."""
    other = sqlite3.connect(path)
    try:
        return dict(other.execute("SELECT k, v FROM t ORDER BY k").fetchall())
    finally:
        other.close()


def test_writes_close_together_commit_as_one_transaction(db: SQLiteDB) -> None:
    db.group_window = 0.5  # wide, so a slow machine still starts the writers inside it
    seen = traced(db)
    assert db.execute("INSERT INTO t VALUES ('first', 0)") == 1
    assert seen == ["INSERT"]  # a quiet database: straight in, no transaction of its own
    seen.clear()
    writers = [gevent.spawn(db.execute, "INSERT INTO t VALUES (?, ?)", (f"k{i}", i)) for i in range(10)]
    gevent.joinall(writers, raise_error=True)
    assert [w.value for w in writers] == [1] * 10
    assert seen == ["BEGIN IMMEDIATE", *["INSERT"] * 10, "COMMIT"]
    assert rows(db.path) == {"first": 0, **{f"k{i}": i for i in range(10)}}


def test_a_grouped_write_returns_only_once_committed(db: SQLiteDB) -> None:
    db.group_window = 0.3
    db.execute("INSERT INTO t VALUES ('a', 1)")  # starts the busy spell
    writer = gevent.spawn(db.execute, "INSERT INTO t VALUES ('b', 2)")
    gevent.sleep(0.1)
    assert not writer.ready() and rows(db.path) == {"a": 1}  # still in its window: not returned, not visible
    assert writer.get(timeout=5) == 1
    assert rows(db.path) == {"a": 1, "b": 2}


def test_a_failing_statement_fails_alone(db: SQLiteDB) -> None:
    db.group_window = 0.05
    db.execute("INSERT INTO t VALUES ('dup', 0)")
    good = [gevent.spawn(db.execute, "INSERT INTO t VALUES (?, 1)", (f"g{i}",)) for i in range(3)]
    bad = gevent.spawn(db.execute, "INSERT INTO t VALUES ('dup', 9)")
    more = gevent.spawn(db.execute, "UPDATE t SET v = 5 WHERE k = 'dup'")
    gevent.joinall([*good, bad, more])
    assert isinstance(bad.exception, StorageError) and "UNIQUE" in str(bad.exception)
    assert [g.value for g in good] == [1, 1, 1] and more.value == 1
    assert rows(db.path) == {"dup": 5, "g0": 1, "g1": 1, "g2": 1}


def test_a_commit_that_fails_fails_every_write_of_its_group(db: SQLiteDB) -> None:
    db.conn.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
    db.conn.execute("CREATE TABLE child (pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    db.group_window = 0.5
    db.execute("INSERT INTO t VALUES ('before', 0)")
    ok = gevent.spawn(db.execute, "INSERT INTO t VALUES ('lost', 1)")
    orphan = gevent.spawn(db.execute, "INSERT INTO child VALUES ('nobody')")  # refused only at COMMIT
    gevent.joinall([ok, orphan])
    for g in (ok, orphan):
        assert isinstance(g.exception, StorageError) and "FOREIGN KEY" in str(g.exception)
    assert rows(db.path) == {"before": 0}
    assert db.execute("INSERT INTO t VALUES ('after', 2)") == 1  # the connection is usable again
    assert rows(db.path) == {"after": 2, "before": 0}


def test_a_group_waits_for_a_database_another_process_holds(db: SQLiteDB) -> None:
    db.group_window = 0.02
    db.execute("INSERT INTO t VALUES ('a', 1)")
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writers = [gevent.spawn(db.execute, "INSERT INTO t VALUES (?, 2)", (f"w{i}",)) for i in range(4)]
    gevent.sleep(0.3)
    assert not any(w.ready() for w in writers)
    other.execute("COMMIT")
    other.close()
    gevent.joinall(writers, timeout=5, raise_error=True)
    assert rows(db.path) == {"a": 1, "w0": 2, "w1": 2, "w2": 2, "w3": 2}


def test_close_commits_a_group_still_in_its_window(tmp_path: Path) -> None:
    d = SQLiteDB(str(tmp_path / "c.db"))
    d.conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    d.group_window = 30.0
    d.execute("INSERT INTO t VALUES ('a', 1)")
    writer = gevent.spawn(d.execute, "INSERT INTO t VALUES ('b', 2)")
    gevent.sleep(0.05)
    d.close()
    assert writer.get(timeout=1) == 1
    assert rows(str(tmp_path / "c.db")) == {"a": 1, "b": 2}


def test_a_group_flushed_early_is_not_run_again_when_its_window_ends(db: SQLiteDB) -> None:
    """App.stop flushes a pending group; its timer, firing later, must not run the writes a second time."""
    db.conn.execute("CREATE TABLE n (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    db.conn.execute("INSERT INTO n VALUES ('count', 0)")
    db.group_window = 0.2
    db.execute("UPDATE n SET v = v + 1 WHERE k = 'count'")  # quiet: straight in
    adder = gevent.spawn(db.execute, "UPDATE n SET v = v + 1 WHERE k = 'count'")  # grouped
    gevent.sleep(0.02)
    db.flush()
    assert adder.get(timeout=1) == 1
    gevent.sleep(0.4)  # past the group's window
    assert db.query("SELECT v FROM n") == [{"v": 2}]


def test_flush_waits_for_a_group_still_committing(db: SQLiteDB) -> None:
    """A group whose commit waits on another process's lock is finished, not cut off, by flush."""
    db.group_window = 0.02
    db.execute("INSERT INTO t VALUES ('a', 1)")
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer = gevent.spawn(db.execute, "INSERT INTO t VALUES ('b', 2)")
    gevent.sleep(0.1)  # the group's window is over; its BEGIN waits for the other process
    gevent.spawn_later(0.2, lambda: (other.execute("COMMIT"), other.close()))
    db.flush()
    assert writer.ready() and writer.value == 1
    assert rows(db.path) == {"a": 1, "b": 2}


def test_zero_turns_grouping_off(db: SQLiteDB) -> None:
    db.group_window = 0.0
    seen = traced(db)
    writers = [gevent.spawn(db.execute, "INSERT INTO t VALUES (?, 0)", (f"k{i}",)) for i in range(5)]
    gevent.joinall(writers, raise_error=True)
    assert seen == ["INSERT"] * 5


def config_with(tmp_path: Path, group_commit_ms: str) -> Config:
    path = write_config(tmp_path, balance_flow())
    text = path.read_text(encoding="utf-8").replace("[storage]\n", f"[storage]\ngroup_commit_ms = {group_commit_ms}\n")
    path.write_text(text, encoding="utf-8")
    return configmod.load(path, check_files=False)


@pytest.mark.parametrize(("value", "message"), [("-1", "at least 0"), ("250", "at most 100"), ('"2"', "must be float")])
def test_group_commit_ms_is_checked(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_with(tmp_path, value)
    assert any("storage.group_commit_ms" in p and message in p for p in err.value.problems), err.value.problems


def test_the_daemon_groups_the_journal_writes_of_calls_that_overlap(tmp_path: Path, daemon: StartDaemon) -> None:
    """40 calls at once: every journal row is written, in fewer commits than writes."""
    d = daemon(config_with(tmp_path, "5"))
    seed(d.store, SARA.format(debt=0))
    assert d.store.db.group_window == 0.005
    seen: list[str] = []
    d.store.db.conn.set_trace_callback(seen.append)
    calls = [gevent.spawn(run_call, d.address, Script(caller="09121234567")) for _ in range(40)]
    gevent.joinall(calls, timeout=60, raise_error=True)
    wait_idle(d.server, timeout=30)
    journal_writes = 0
    commits = 0  # an explicit COMMIT, or a write outside a transaction (committed on its own)
    in_transaction = False
    # Python's trace reports a statement again as each trigger it fires starts (the number search's index,
    # migration 14), among FTS5's own statements ("-- ..."): one write, however many times it is reported.
    top = [sql for sql in seen if not sql.startswith("-- ")]
    for sql in (s for i, s in enumerate(top) if not i or s != top[i - 1]):
        if sql == "BEGIN IMMEDIATE":
            in_transaction = True
        elif sql == "COMMIT":
            in_transaction = False
            commits += 1
        elif sql.startswith("INSERT INTO calls"):
            journal_writes += 1
            commits += not in_transaction
    assert journal_writes == 80  # each call's start and end
    assert commits < journal_writes / 2
    finished = {r["uuid"]: r for r in d.store.list_calls()}
    assert {c.value.uuid for c in calls} == set(finished)
    assert all(r["status"] == "completed" and r["customer_id"] == "C-1001" for r in finished.values())
