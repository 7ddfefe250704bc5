"""The statistics' kept sums (migration 13) against the calls themselves, on SQLite and PostgreSQL.

Every way a call's row is written: CDR legs merged (``Store.cdr_add``, one executemany
per batch), replays, the daemon's start and finish, a captured CDR through the CDR writer,
bulk loads, a reviewer's UPDATE, the daemon's clean-ups, a DELETE. After each, the
statistics page over HTTP is the page the straight count of the calls draws, and the
sums read back are the scan's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from fsapp import instants
from fsapp.cdr import legs as legsmod
from fsapp.cdr.writer import CDRWriter
from fsapp.store import Store, open_store
from fsapp.store.cdr import MERGED
from fsapp.web.app import create_app
from fsapp.web.auth import hash_password
from tests import test_web_stats
from tests.cdrkit import leg_body
from tests.helpers import HANGUP_MENU
from tests.test_web_stats import TEHRAN, known_calls, socket_call, totals, viewer
from tests.webconsole import PASSWORD

site = test_web_stats.site  # the same fixture: the console in Tehran's zone with a viewer, on each backend
PERIODS = [{"from": "2026-11-29", "to": "2026-12-01"}, {"from": "2026-11-30", "to": "2026-11-30"},
           {"from": "2026-11-01", "to": "2026-12-31"}]
FILTERS = [{"date_from": "2026-11-28T20:30:00Z", "date_to": "2026-12-01T20:30:00Z"},
           {"date_from": "2026-11-30T06:07:08Z", "date_to": "2026-11-30T06:59:59Z"},
           {"date_from": "2026-11-30T06:07:08Z"}, {"date_to": "2026-11-30"},
           {"date_from": "2026-11-30", "date_to": "2026-11-30T22:00:00Z"}, {"date_from": "2026-11-29"}, {}]


def merge(store: Store, legs: list[tuple[str, str, bool]], **row: Any) -> list[bool]:
    """CDR legs (leg uuid, call uuid, A leg?) merged in one batch, each call's row as ``row`` says."""
    def compute(call_legs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(MERGED, "")
        out.update({c: None for c in MERGED if c.endswith(("_mos", "_quality", "_flaws", "_jitter"))})
        out.update(answered_at=None, ended_at=None, direction="inbound", status="answered", talk_seconds=60,
                   total_seconds=70, too_long=False, wait_seconds=10, ring_seconds=0, hold_seconds=0,
                   cdr_legs=len(call_legs), cdr_a_leg=True, started_at="2026-11-30T06:00:00Z", extension="1001")
        out.update(row)
        out["uuid"] = call_legs[0]["call_uuid"]
        return out

    entries = [({"uuid": leg, "call_uuid": call, "a_leg": a}, b"{}") for leg, call, a in legs]
    return store.cdr_add(entries, compute, instants.utc_iso())


def scanned_page(c: FlaskClient, store: Store, query: dict[str, str]) -> str:
    """The page drawn from the straight count of the calls (the kept sums set aside)."""
    store._kept = lambda *_a, **_k: None  # type: ignore[method-assign]
    try:
        return page(c, query)
    finally:
        del store._kept


def page(c: Flask | FlaskClient, query: dict[str, str]) -> str:
    """The statistics page of ``query``'s period (from a new viewer's login when given the app)."""
    r = (viewer(c) if isinstance(c, Flask) else c).get("/stats", query_string={**query, "search": "1"})
    assert r.status_code == 200
    return r.get_data(as_text=True)


def assert_exact(app: Flask, store: Store) -> None:
    """The pages and the sums read from the kept tables are the scan's."""
    for f in FILTERS:
        for grouping in ("quarters", "extensions"):
            kept = getattr(store, f"call_stats_{grouping}")(**f)
            assert kept == store.call_stats_scanned(grouping, **f), (grouping, f)
    c = viewer(app)
    for query in PERIODS:
        assert page(c, query) == scanned_page(c, store, query), query


def test_merges_replays_and_the_daemons_writes_keep_the_sums_exact(site: tuple[Flask, Store]) -> None:
    app, store = site
    known_calls(store)
    assert_exact(app, store)
    busy = page(app, PERIODS[0])
    assert totals(busy)["calls"] == "7"  # the known calls, read from the kept sums
    # one batch of several calls over several quarters; then legs that move them
    calls = [(f"m{i}-a", f"m{i}", True) for i in range(6)]
    assert merge(store, calls, started_at="2026-11-30T06:14:59Z") == [True] * 6
    assert_exact(app, store)
    assert merge(store, [("m1-b", "m1", False)], status="missed", extension="", talk_seconds=0) == [True]
    assert merge(store, [("m2-b", "m2", False)], started_at="2026-11-30T22:45:00Z", extension="1002") == [True]
    assert merge(store, [("m3-b", "m3", False)], started_at="2026-12-05T01:00:00Z") == [True]  # out of the period
    assert merge(store, [("m4-b", "m4", False)], too_long=True, talk_seconds=900) == [True]
    assert merge(store, [("m0-a", "m0", True)], status="abandoned") == [False]  # a replay: nothing written
    assert_exact(app, store)
    # the daemon's two writes, and a CDR coming after them onto the socket's row
    row = {"uuid": "s1", "started_at": "2026-11-29T10:10:00Z", "status": "active", "direction": "inbound",
           "caller": "09121234567", "daemon": "d1", "modules": []}
    assert store.call_started(row)
    assert_exact(app, store)
    store.call_finished("s1", {**row, "status": "answered", "extension": "1003", "talk_seconds": 44})
    assert merge(store, [("s1-a", "s1", True)], started_at="2026-11-29T10:09:58Z", wait_seconds=7) == [True]
    socket_call(store, "s2", "2026-11-30T13:00:00Z", "missed", "1003")
    assert_exact(app, store)
    writer = CDRWriter(store, lambda: 300)
    for scenario in "ab":
        for leg in ("a", "b"):
            writer.add(legsmod.parse(leg_body(scenario, leg)), leg_body(scenario, leg))
    assert_exact(app, store)
    assert page(app, PERIODS[0]) != busy


def test_a_reviewer_clearing_too_long_the_clean_ups_and_a_deletion(site: tuple[Flask, Store]) -> None:
    """Writes no store method of the statistics knows: a raw UPDATE, the daemon's clean-ups, a DELETE."""
    app, store = site
    known_calls(store)
    before = page(app, PERIODS[0])
    assert totals(before)["too_long"] == "1"
    store.db.execute("UPDATE calls SET too_long = 0 WHERE uuid = ?", ("c4",))  # a reviewer clears the mark
    after = page(app, PERIODS[0])
    assert totals(after)["too_long"] == "0"
    assert_exact(app, store)
    store.call_started({"uuid": "a1", "started_at": "2026-11-29T08:00:00Z", "status": "active", "daemon": "gone"})
    store.call_started({"uuid": "a2", "started_at": "2026-11-29T08:20:00Z", "status": "active", "daemon": "d2"})
    assert store.close_stale_calls("gone") == 1 and store.fail_calls_started_before("2026-11-30") == 1
    store.db.execute("UPDATE calls SET talk_seconds = talk_seconds + 5, extension = '1009'")  # every row
    assert_exact(app, store)
    store.db.execute("DELETE FROM calls WHERE started_at < ?", ("2026-11-30",))  # retention
    assert_exact(app, store)
    assert totals(page(app, PERIODS[0]))["calls"] == "4"


def test_a_bulk_load_is_counted(site: tuple[Flask, Store]) -> None:
    app, store = site
    cols = ("uuid", "started_at", "status", "extension", "talk_seconds", "cdr_legs", "wait_seconds", "too_long")
    rows = [(f"l{i}", f"2026-11-{29 + i % 3}T{i % 24:02}:{i % 60:02}:00Z", ("answered", "missed", "failed")[i % 3],
             f"10{i % 7}", i % 400, i % 2, i % 30, int(i % 11 == 0)) for i in range(500)]
    assert store.load_calls(cols, rows) == 500
    assert_exact(app, store)
    assert totals(page(app, PERIODS[2]))["calls"] == str(sum(r[1] < "2026-12-01T20:30" for r in rows))


def test_other_filters_count_the_calls(site: tuple[Flask, Store]) -> None:
    """A filter the sums cannot answer (status, extension, recording) is counted from the calls."""
    app, store = site
    known_calls(store)
    for f in ({"status": "answered"}, {"extension": "1001"}, {"has_recording": False}, {"too_long": True}):
        quarters = store.call_stats_quarters(**FILTERS[0], **f)
        assert quarters == store.call_stats_scanned("quarters", **FILTERS[0], **f)
    assert sum(q["calls"] for q in store.call_stats_quarters(**FILTERS[0], status="answered")) == 4
    assert sum(q["calls"] for q in store.call_stats_quarters(**FILTERS[0])) == 7


def test_the_migration_fills_the_sums_from_an_existing_journal(store_url: str,
                                                               make_config: Callable[..., Any]) -> None:
    """A site upgrading: its journal written before migration 13, then the store opened again."""
    import fsapp.store as storemod

    full = storemod.MIGRATIONS
    storemod.MIGRATIONS = full[:full.index(storemod.kept_sums)]  # the schema as it was before it
    try:
        old = open_store(store_url)
        known_calls(old)
        merge(old, [(f"o{i}", f"o{i}", True) for i in range(20)], started_at="2026-11-30T21:31:00Z")
        old.close()
    finally:
        storemod.MIGRATIONS = full
    store = open_store(store_url)
    try:
        assert store.db.one("SELECT COUNT(*) AS n FROM call_quarters")["n"] == 10  # nine calls, and twenty in one
        store.web_user_set("viewer", "viewer", hash_password(PASSWORD))
        app = create_app(make_config(HANGUP_MENU, extra=TEHRAN), store)
        assert totals(page(app, PERIODS[0]))["calls"] == "27"
        assert_exact(app, store)
    finally:
        store.close()


def test_two_writers_batching_the_same_quarters_in_opposite_orders(store_url: str) -> None:
    """Two daemons' stores merging batches over the same quarters, one ascending, one descending:
    no deadlock, no lost sum (on PostgreSQL the triggers append, nothing waits for a sums row)."""
    stores = [open_store(store_url) for _ in range(2)]
    errors: list[BaseException] = []

    def write(store: Store, n: int, backwards: bool) -> None:
        try:
            for round_ in range(15):
                legs = [(f"w{n}-{round_}-{q}", f"w{n}-{round_}-{q}", True) for q in range(8)]
                for leg, call, a in (reversed(legs) if backwards else legs):
                    q = int(leg.rsplit("-", 1)[1])
                    merge(store, [(leg, call, a)], started_at=f"2026-11-30T0{q}:{15 * (q % 4):02}:00Z")
                merge(store, legs if not backwards else legs[::-1], status="missed")  # the batch, all at once
        except BaseException as exc:  # noqa: BLE001  (raised again below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, n, n == 1)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors
        total = stores[0].call_stats_quarters()
        assert total == stores[0].call_stats_scanned("quarters")
        assert sum(q["calls"] for q in total) == 2 * 15 * 8
    finally:
        for s in stores:
            s.close()


def test_the_deltas_are_folded_into_the_sums(site: tuple[Flask, Store]) -> None:
    """PostgreSQL's triggers append; a fold (the page's, the daemon's now and then) moves them into the sums."""
    app, store = site
    known_calls(store)
    if store.db.dialect != "postgresql":
        assert store.fold_call_stats() is False  # SQLite adds to the sums at once
        assert store.db.one("SELECT SUM(calls) AS n FROM call_quarters")["n"] == 9
        return
    assert store.db.one("SELECT COUNT(*) AS n FROM call_stat_deltas")["n"] >= 9  # a row each new call at least
    assert store.db.one("SELECT COUNT(*) AS n FROM call_quarters")["n"] == 0
    assert store.fold_call_stats() is True
    assert store.db.one("SELECT COUNT(*) AS n FROM call_stat_deltas")["n"] == 0
    assert store.db.one("SELECT SUM(calls) AS n FROM call_quarters")["n"] == 9
    assert_exact(app, store)
