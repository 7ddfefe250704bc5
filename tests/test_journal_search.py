"""The journal's number search and flag filter through their indexes (migrations 14 and 15) find
exactly the calls the scans they replace found, on SQLite and PostgreSQL: over a journal with
numbers in every written form, Persian digits and extensions, written by bulk loads, by the
daemon's two journal writes, by a later write that changes the number, and over analysis flags
written by a bulk load, by the worker, and rewritten by a second analysis. Pages, whether read
through the indexes or walking the sort column's index, hold the same rows."""

from __future__ import annotations

import random
from typing import Any

import pytest

import fsapp.store as storemod
from fsapp import digits, phones
from fsapp.store import Store, _number_match, open_store

FORMS = ("0{n}", "+98{n}", "{n}", "0098{n}", "98{n}")
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
FLAGS = ("long_silence", "overtalk", "agent_share", "low_mos", "long_hold")
COLUMNS = ("uuid", "started_at", "direction", "caller", "called", "extension", "status")


def _number(rng: random.Random, i: int) -> str:
    national = f"91{rng.randrange(10)}{rng.randrange(10**7):07}" if i % 9 else "9123456789"
    written = rng.choice(FORMS).format(n=national)
    return written.translate(PERSIAN) if i % 13 == 0 else written


def _journal(store: Store, n: int = 1500) -> dict[str, str]:
    """``n`` calls through the bulk load, 40 through the daemon's writes (the last 10 finishing with
    another caller than they started with); flags by the bulk load. The uuid of each flagged call, its flags."""
    rng = random.Random(14)
    rows, analysed, flagged = [], [], {}
    for i in range(n):
        uuid = f"c{i:05}"
        local = i % 10 == 0
        rows.append((uuid, f"2026-0{1 + i % 9}-{1 + i % 28:02}T10:00:00Z", "local" if local else "inbound",
                     f"10{i % 30:02}" if local else _number(rng, i),
                     f"10{(i + 7) % 30:02}" if local else rng.choice(["1000", "+982100000000", "02100000000"]),
                     f"10{i % 30:02}", rng.choice(["answered", "missed"])))
        if i % 3 == 0:
            flags = ",".join(rng.sample(FLAGS, rng.randrange(0, 3)))
            analysed.append((uuid, "done", f"/rec/{uuid}.wav", "left", 0.0, flags))
            flagged[uuid] = flags
    store.load_calls(COLUMNS, rows)
    store.load_analysis(("call_uuid", "state", "recording", "customer_channel", "queued_at", "flags"), analysed)
    for i in range(40):
        uuid = f"d{i:05}"
        store.call_started({"uuid": uuid, "started_at": f"2026-10-01T10:{i:02}:00Z", "direction": "inbound",
                            "caller": _number(rng, i), "called": "1000", "status": "active"})
        store.call_finished(uuid, {"status": "answered", "talk_seconds": 30, "extension": "1010",
                                   **({"caller": "+989123456789"} if i >= 30 else {})})
    store.refresh_statistics()
    return flagged


def _old_number(store: Store, number: str) -> set[str]:
    """What the search found before its indexes: the scan of caller, called and extension."""
    params: list[Any] = []
    sql = _number_match(number, params)
    return {r["uuid"] for r in store.db.query(f"SELECT uuid FROM calls WHERE {sql}", params)}


def _old_flag(store: Store, flag: str) -> set[str]:
    return {r["call_uuid"] for r in store.db.query(
        "SELECT call_uuid FROM call_analysis WHERE (',' || flags || ',') LIKE ?", (f"%,{flag},%",))}


def _paged(store: Store, order: str, descending: bool, **filters: Any) -> list[str]:
    seen, after = [], ""
    while True:
        page = store.page_calls(order=order, descending=descending, after=after, limit=40, **filters)
        seen += [r["uuid"] for r in page]
        if len(page) < 40:
            return seen
        after = page[-1]["uuid"]


@pytest.fixture
def journal(store_url: str) -> Any:
    store = open_store(store_url)
    flagged = _journal(store)
    yield store, flagged
    store.close()


SEARCHES = ("09123456789", "+989123456789", "00989123456789", "۰۹۱۲۳۴۵۶۷۸۹", "3456789", "۳۴۵۶۷۸۹", "8912",
            "1015", "۱۰۱۵", "021", "0912", "12", "9", "abc", "1%5", "10_5", "+98", 'a"b', "\x00\x07101")


@pytest.mark.parametrize("typed", SEARCHES)
def test_the_number_search_finds_what_the_scan_found(journal: Any, monkeypatch: pytest.MonkeyPatch,
                                                      typed: str) -> None:
    store, _ = journal
    if "\x00" in typed and store.db.dialect == "postgresql":
        pytest.skip("PostgreSQL's text holds no NUL: the search cannot be asked there (before or now)")
    # what the console and `fsapp calls --number` search for, and the text as typed
    for number in dict.fromkeys((phones.search_key(typed), typed)):
        expected = _old_number(store, number)
        assert {r["uuid"] for r in store.list_calls(number=number)} == expected
        reference = sorted(expected)
        for walk in (1, 10**9):  # pages walking the sort column's index, and read through the trigrams
            monkeypatch.setattr(storemod, "WALK_AFTER", walk)
            for order in ("started_at", "caller"):
                assert sorted(_paged(store, order, walk == 1, number=number)) == reference, (number, order, walk)


def test_the_searches_find_calls_in_every_written_form(journal: Any) -> None:
    store, _ = journal
    found = _old_number(store, phones.search_key("09123456789"))
    callers = {r["caller"] for r in store.list_calls(number=phones.search_key("09123456789"))}
    assert {"09123456789", "+989123456789", "00989123456789", "9123456789"} <= callers
    persian = {r["caller"] for r in store.list_calls(number="۳۴۵۶۷۸۹")}  # the store reads both digits
    assert any(digits.to_ascii(c) != c for c in persian), "no Persian-digit caller found: proves less"
    assert {f"d{i:05}" for i in range(30, 40)} <= found  # finished with that caller, started with another
    assert store.list_calls(number="1015") and all(
        r["extension"] == "1015" or "1015" in r["caller"] + r["called"] for r in store.list_calls(number="1015"))
    if store.db.dialect == "sqlite":
        assert store.number_search_indexed()


def test_a_changed_number_is_found_by_its_new_form_only(journal: Any) -> None:
    store, _ = journal
    store.call_finished("c00001", {"caller": "+989350000001", "status": "answered"})
    assert [r["uuid"] for r in store.list_calls(number="9350000001")] == ["c00001"]
    assert store.page_calls(number="9350000001")[0]["uuid"] == "c00001"
    old = store.db.one("SELECT caller FROM calls WHERE uuid = 'c00002'")
    store.call_finished("c00002", {"caller": "1099", "status": "answered"})
    assert "c00002" not in {r["uuid"] for r in store.page_calls(number=digits.to_ascii(old["caller"])[-7:])}


@pytest.mark.parametrize("flag", FLAGS)
def test_the_flag_filter_finds_what_the_scan_found(journal: Any, monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    store, _ = journal
    expected = _old_flag(store, flag)
    assert expected, f"no call flagged {flag}: the test would prove nothing"
    assert {r["uuid"] for r in store.list_calls(flag=flag)} == expected
    for walk in (1, 10**9):
        monkeypatch.setattr(storemod, "WALK_AFTER", walk)
        for order in ("started_at", "talk_seconds"):
            assert sorted(_paged(store, order, walk == 1, flag=flag)) == sorted(expected), (flag, order, walk)


def test_flags_the_worker_writes_and_rewrites_are_filtered(journal: Any) -> None:
    store, _ = journal
    store.analysis_enqueue("d00001", "/rec/d00001.wav", "left", {}, 1.0)
    assert store.analysis_claim("w1", 2.0, 60, 3, uuid="d00001")
    assert store.analysis_finish("d00001", "w1", "done", {"flags": "low_mos,overtalk"}, 3.0)
    assert "d00001" in {r["uuid"] for r in store.page_calls(flag="overtalk", limit=1000)}
    store.analysis_requeue("d00001", "/rec/d00001.wav", "left", 4.0)
    assert store.analysis_claim("w2", 5.0, 60, 3, uuid="d00001")
    assert not store.analysis_finish("d00001", "w1", "done", {"flags": "long_hold"}, 6.0)  # no longer w1's
    assert store.analysis_finish("d00001", "w2", "done", {"flags": "long_hold"}, 6.0)
    for flag in FLAGS:
        assert ("d00001" in {r["uuid"] for r in store.list_calls(flag=flag)}) == (flag == "long_hold"), flag
        assert {r["uuid"] for r in store.list_calls(flag=flag)} == _old_flag(store, flag), flag


def test_the_migrations_index_a_journal_written_before_them(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cut = next(i for i, m in enumerate(storemod.MIGRATIONS) if getattr(m, "__name__", "") == "_number_search_table")
    monkeypatch.setattr(storemod, "MIGRATIONS", storemod.MIGRATIONS[:cut])
    store = open_store(store_url)
    _journal(store, 600)
    before = {typed: _old_number(store, phones.search_key(typed)) for typed in SEARCHES
              if "\x00" not in typed or store.db.dialect == "sqlite"}
    flags_before = {flag: _old_flag(store, flag) for flag in FLAGS}
    monkeypatch.undo()
    store.migrate()
    store._numbers_indexed = None  # the store asks again (it was opened before the index)
    for typed, expected in before.items():
        number = phones.search_key(typed)
        assert {r["uuid"] for r in store.list_calls(number=number)} == expected, typed
    for flag, expected in flags_before.items():
        assert expected and {r["uuid"] for r in store.page_calls(flag=flag, limit=10_000)} == expected, flag
    store.close()


def test_a_sqlite_without_trigrams_drops_the_triggers_and_one_with_them_rebuilds(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal file moved to a system whose SQLite has no FTS5 trigrams: its writes must not
    fail on the index's triggers, the search scans; back where trigrams work, the index is built
    again with the calls written meanwhile."""
    url = f"sqlite:///{tmp_path / 'moved.db'}"
    store = open_store(url)
    _journal(store, n=200)
    store.close()
    monkeypatch.setattr(storemod, "sqlite_trigrams", lambda db: False)
    older = open_store(url)
    assert not older.number_search_indexed()
    assert older.db.one("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'trigger'"
                        " AND name LIKE 'call_numbers_%'")["n"] == 0
    older.call_started({"uuid": "moved-1", "started_at": "2026-11-01T10:00:00Z", "direction": "inbound",
                        "caller": "09357654321", "called": "1000", "status": "active"})
    assert [r["uuid"] for r in older.list_calls(number="7654321")] == ["moved-1"]  # by the scan
    older.close()
    monkeypatch.undo()
    back = open_store(url)
    assert back.number_search_indexed()
    assert [r["uuid"] for r in back.page_calls(number="7654321")] == ["moved-1"]
    indexed = {r["uuid"] for r in back.db.query(
        "SELECT i.uuid FROM call_numbers JOIN call_number_ids i ON i.id = call_numbers.rowid"
        " WHERE call_numbers MATCH ?", ('"7654321"',))}
    assert indexed == {"moved-1"}  # in the rebuilt index itself, not only found by a scan
    for number in ("3456789", "0912"):
        assert {r["uuid"] for r in back.list_calls(number=number)} == _old_number(back, number)
    back.close()
