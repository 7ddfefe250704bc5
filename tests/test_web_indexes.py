"""The journal's filtered pages are served by indexes on SQLite and PostgreSQL (migration 11; 12 and 14 for
the number search on PostgreSQL and SQLite, 15 for the flag filter).

Each single filter x each sort column x both directions x the first and a deep keyset page:
the plan the database chooses reads ``calls`` through an index, never the whole table.
PostgreSQL plans with sequential scans priced out (``enable_seqscan = off``), so a small
table shows what a large one would get when an index can serve; where none can, the plan
still shows ``Seq Scan on calls`` and the test fails. Pages read by walking the sort column's
index (SQLite's choice when a filter matches many rows, ``WALK_AFTER``) hold the same rows
as pages read through the filter's index.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import gevent
import pytest

import fsapp.store as storemod
from fsapp.store import SORTABLE_CALL_FIELDS, SORTED_BY_COVERING, Store, open_store, sort_index, tie
from tests.helpers import paid_line

COLUMNS = ("uuid started_at direction caller called extension status total_seconds talk_seconds too_long "
           "customer_id customer_name charge missed_cause caller_mos callee_mos recording").split()
FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("period", {"date_from": "2026-03-01T00:00:00Z", "date_to": "2026-03-31"}),
    ("status", {"status": "missed"}),
    ("direction", {"direction": "local"}),
    ("customer", {"customer": "C003"}),
    ("too_long", {"too_long": True}),
    ("extension", {"extension": "1004"}),
    ("missed_cause", {"missed_cause": "busy"}),
    ("min_mos", {"min_mos": 4.0}),
    ("flag", {"flag": "long_silence"}),
    ("number", {"number": "9120000003"}),
]


def _fill(store: Store, n: int = 20_000) -> None:
    """``n`` calls over half a year, then the planner's statistics: big enough that a planner
    would rather not read a whole table for one page."""
    rng = random.Random(3)
    rows, analysed = [], []
    for i in range(n):
        status = rng.choice(["answered", "answered", "missed", "abandoned"])
        direction = rng.choice(["inbound", "inbound", "outbound", "local"])
        talk = rng.randrange(1, 900) if status == "answered" else 0
        number = f"0912{i % 5000:07}"
        uuid = f"{rng.getrandbits(64):016x}-{i:04}"
        rows.append((uuid, f"2026-{1 + i % 6:02}-{1 + i % 28:02}T{8 + i % 10:02}:00:00Z", direction,
                     number if direction == "inbound" else "1004", "1001" if direction == "local" else number,
                     f"10{i % 8:02}", status, talk + 20, talk, int(talk > 600), f"C{i % 12:03}", f"Customer {i % 12}",
                     talk * 10, rng.choice(["busy", "no_answer"]) if status == "missed" else "",
                     4.2 if talk else None, 3.9 if talk and i % 3 == 0 else 4.3 if talk else None,
                     f"/rec/{uuid}.wav" if talk else ""))
        if talk:
            analysed.append((uuid, "done", f"/rec/{uuid}.wav", "left", 0.0, "long_silence" if i % 5 == 0 else ""))
    assert store.load_calls(COLUMNS, rows) == n
    store.load_analysis(("call_uuid", "state", "recording", "customer_channel", "queued_at", "flags"), analysed)
    store.refresh_statistics()


def _pg_sorted_matches(plan: list[str]) -> bool:
    """Whether PostgreSQL's plan takes a page's matches first and sorts them (Store._covered_sql):
    a Sort over the subquery behind OFFSET 0 that holds them (a walk's subquery, of an index's
    first entries, is under a Limit instead)."""
    return any(re.search(r"Subquery Scan on calls(_\d+)?\b", line) and _parent(plan, i).startswith("Sort ")
               for i, line in enumerate(plan))
# Indexes over every call (the partial ones, calls_too_long_by_*, calls_recorded_covering and
# calls_scored_covering, hold only some).
WHOLE = re.compile(r"\b(sqlite_autoindex_calls_1|calls_pkey|calls_by_\w+"
                   r"|calls_(status|direction|customer|extension|missed|queue)_covering)\b")


def _reads_calls_by_index(plan: list[str], dialect: str) -> bool:
    """No read of ``calls`` in the plans of a page's queries (an empty line between two) is a
    whole-table one: each is a search through an index, or a walk of an index in the page's
    order (which stops at the page's end or after a bounded number of entries). A scan, or a
    walk whose rows are sorted afterwards (all of them read first), is a read of the whole journal."""
    steps: list[list[str]] = [[]]
    for line in plan:
        if line:
            steps[-1].append(line)
        else:
            steps.append([])
    return all(_query_reads_calls_by_index(step, dialect) for step in steps)


def _query_reads_calls_by_index(plan: list[str], dialect: str) -> bool:
    if dialect == "sqlite":
        sorted_after = any(line.startswith("USE TEMP B-TREE FOR") and "ORDER BY" in line for line in plan)
        reads = [line for line in plan if line.startswith(("SCAN calls", "SEARCH calls"))]
        return bool(reads) and not any(
            line.startswith("SCAN calls") and (" USING " not in line or sorted_after and WHOLE.search(line))
            for line in reads)
    sorted_after = any(line.strip().startswith(("Sort  (", "->  Sort  (")) for line in plan)
    reads = 0
    for i, line in enumerate(plan):
        if "Seq Scan on calls " in line:
            return False
        if re.search(r"Index (Only )?Scan (Backward )?using \w+ on calls ", line):
            reads += 1
            depth = len(line) - len(line.lstrip())
            details = []
            for nxt in plan[i + 1:]:
                if len(nxt) - len(nxt.lstrip()) <= depth or "->" in nxt:
                    break
                details.append(nxt.strip())
            if (sorted_after and WHOLE.search(line) and not any(d.startswith("Index Cond:") for d in details)
                    and not _parent(plan, i).startswith("Limit ")):  # a walk of its first entries
                return False
        elif "Bitmap Heap Scan on calls " in line:
            reads += 1
    return reads > 0


def _parent(plan: list[str], i: int) -> str:
    """The node (PostgreSQL's EXPLAIN) that the node at ``plan[i]`` feeds, as its line reads
    without the arrow ("" for the top one)."""
    depth = len(plan[i]) - len(plan[i].lstrip())
    for line in reversed(plan[:i]):
        if len(line) - len(line.lstrip()) < depth and (line.lstrip().startswith("->") or not line.startswith(" ")):
            return line.strip().removeprefix("->").strip()
    return ""


@pytest.fixture
def journal(store_url: str, journal_copies: Any) -> Any:
    store = journal_copies(store_url, "indexes", _fill)
    yield store
    store.close()


@pytest.fixture
def small_journal(store_url: str, journal_copies: Any) -> Any:
    """Fewer calls, for comparing pages: the walk is forced by WALK_AFTER, not by the journal's size."""
    # the number filter's caller (i % 5000 == 3) is called twice in 6000
    store = journal_copies(store_url, "indexes_small", lambda s: _fill(s, 6000))
    yield store
    store.close()


@pytest.mark.parametrize("walk", [False, True], ids=["through-filter", "walking-sort"])
def test_every_filtered_page_reads_calls_through_an_index(journal: Store, monkeypatch: pytest.MonkeyPatch,
                                                          walk: bool) -> None:
    monkeypatch.setattr(storemod, "WALK_AFTER", 1 if walk else 10**9)
    dialect = journal.db.dialect
    deep = {label: journal.page_calls(limit=3, **f)[-1]["uuid"] for label, f in FILTERS}
    bad = []
    for label, filters in FILTERS:
        for order in SORTABLE_CALL_FIELDS:
            for descending in (False, True):
                for after in ("", deep[label]):
                    plan = journal.explain_page_calls(order=order, descending=descending, after=after, limit=51,
                                                      scans_last=True, **filters)
                    if not _reads_calls_by_index(plan, dialect):
                        bad.append(f"{label} by {order} {'desc' if descending else 'asc'}"
                                   f"{' after' if after else ''}: {' | '.join(plan)}")
    assert not bad, f"{len(bad)} plans read the whole of calls:\n" + "\n".join(bad[:10])


def test_without_the_indexes_the_check_fails(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: on the schema before the journal's indexes, sorting by a column with no
    index (or a filter none serves) is planned as a scan of the whole journal."""
    cut = next(i for i, m in enumerate(storemod.MIGRATIONS) if isinstance(m, str) and "calls_by_started_at" in m)
    monkeypatch.setattr(storemod, "MIGRATIONS", storemod.MIGRATIONS[:cut])
    store = open_store(store_url)
    _fill(store, 2000)
    dialect = store.db.dialect
    for order, filters in (("charge", {}), ("total_seconds", {"direction": "local"})):
        plan = store.explain_page_calls(order=order, scans_last=True, **filters)
        assert not _reads_calls_by_index(plan, dialect), plan
    store.close()


# Pages of 7 compared per order: ties in the sort column, page joins and the last page all come up in a few
# pages; paging through every match made this one test take minutes of the suite.
PAGES_COMPARED = 6


@pytest.mark.parametrize("label,filters", FILTERS, ids=[label for label, _ in FILTERS])
def test_walking_the_sort_index_gives_the_same_pages(small_journal: Store, monkeypatch: pytest.MonkeyPatch,
                                                     label: str, filters: dict[str, Any]) -> None:
    for order in ("charge", "talk_seconds", "caller", "status"):
        for descending in (False, True):
            pages = {}
            for walk in (False, True):
                monkeypatch.setattr(storemod, "WALK_AFTER", 1 if walk else 10**9)
                seen, after = [], ""
                for _ in range(PAGES_COMPARED):
                    page = small_journal.page_calls(order=order, descending=descending, after=after, limit=7,
                                                    **filters)
                    seen += [r["uuid"] for r in page]
                    if len(page) < 7:
                        break
                    after = page[-1]["uuid"]
                pages[walk] = seen
            assert pages[True] == pages[False], (label, order, descending)
            assert pages[True], f"{label}: the filter matches no call: the test would prove nothing"


def test_number_search_uses_trigrams_on_postgresql(pg_url: str, journal_copies: Any) -> None:
    store = journal_copies(pg_url, "indexes", _fill)
    if not store.number_search_indexed():
        pytest.skip("this PostgreSQL server has no pg_trgm extension")
    plan = " | ".join(store.explain_page_calls(number="9120000003", order="charge", scans_last=True))
    assert "calls_caller_trigrams" in plan and "calls_called_trigrams" in plan, plan
    found = store.page_calls(number="0000003", limit=1000)
    assert found and all("0000003" in r["caller"] + r["called"] for r in found)
    assert len(found) == len(store.list_calls(number="0000003"))
    store.close()


BUSY_NUMBER = "09121110000"


def _fill_correlated(store: Store, n: int = 1200) -> None:
    """Calls whose filters line up with the sort columns, as a call centre's do: a missed or
    rejected call has no talk, no charge and no hangup side, a local call's caller and called are
    extensions and it has no queue or customer, one customer makes a fifth of the calls (one name,
    one type, one number), recordings and MOS figures only on answered calls; ties in every sort column."""
    rng = random.Random(11)
    rows = []
    for i in range(n):
        direction = rng.choice(["inbound"] * 6 + ["outbound"] * 2 + ["local"])
        status = rng.choice(["answered"] * 5 + ["missed"] * 3 + ["rejected"])
        answered = status == "answered"
        talk = rng.randrange(1, 900) if answered else 0
        ext = f"10{rng.randrange(10):02}"
        busy = i % 5 == 0
        customer = ("C001" if busy else f"C{rng.randrange(2, 300):03}") if direction != "local" else ""
        number = BUSY_NUMBER if busy else f"0912{rng.randrange(10**7):07}"
        uuid = f"{rng.getrandbits(32):08x}-{i:05}"
        rows.append((uuid, f"2026-{1 + i % 12:02}-{1 + i % 28:02}T{8 + i % 10:02}:{i % 60:02}:00Z", direction,
                     ext if direction != "inbound" else number, f"10{rng.randrange(10):02}" if direction == "local"
                     else number if direction == "outbound" else "7000", ext if answered or status == "missed" else "",
                     status, talk + rng.randrange(5, 60), talk, int(talk > 600), customer,
                     ("Ali Ahmadi" if busy else f"Customer {customer}") if customer else "",
                     ("vip" if busy else rng.choice(["active", "prospect"])) if customer else "",
                     talk * 10 if answered and i % 3 == 0 else 0,
                     rng.choice(["busy", "no_answer"]) if status == "missed" else "",
                     rng.choice(["caller", "callee"]) if answered else "",
                     round(rng.uniform(3.0, 4.5), 1) if answered else None,
                     round(rng.uniform(3.0, 4.5), 1) if answered and i % 2 else None,
                     f"/rec/{uuid}.wav" if answered and i % 2 == 0 else "",
                     rng.choice(["vip", "support"]) if direction == "inbound" and status != "rejected" else ""))
    columns = ("uuid started_at direction caller called extension status total_seconds talk_seconds too_long "
               "customer_id customer_name customer_type charge missed_cause hangup_by caller_mos callee_mos "
               "recording queue").split()
    assert store.load_calls(columns, rows) == n
    store.refresh_statistics()


CORRELATED: list[tuple[str, dict[str, Any]]] = [
    ("missed", {"status": "missed"}), ("rejected", {"status": "rejected"}), ("busy", {"missed_cause": "busy"}),
    ("local", {"direction": "local"}), ("customer", {"customer": "C001"}), ("extension", {"extension": "1004"}),
    ("queue", {"queue": "vip"}), ("recorded", {"has_recording": True}), ("min_mos", {"min_mos": 4.0}),
    ("too_long", {"too_long": True}), ("missed and month", {"status": "missed", "date_from": "2026-03-01T00:00:00Z",
                                                           "date_to": "2026-03-31"}),
]


@pytest.mark.parametrize("walk_rows", [30, 100_000], ids=["short-walk", "whole-walk"])
def test_pages_of_correlated_filters_are_exactly_the_plain_order(store_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                  walk_rows: int, journal_copies: Any) -> None:
    """Each page (first and keyset pages, both directions) of a filter that lines up with the sort
    holds exactly the rows a plain ORDER BY over all the matches gives: whether the walk of the
    sort index fills the page, stops short and the covering index gives the rest (a short walk),
    or walks to the end."""
    store = journal_copies(store_url, "correlated", _fill_correlated)
    monkeypatch.setattr(storemod, "WALK_ROWS", walk_rows)
    # PostgreSQL: with the short walk, every filter walks first (as a common one does at a million
    # calls); with the whole walk, every one goes straight to its sorted matches (as a rare one does)
    monkeypatch.setattr(storemod, "SORT_MATCHES_BELOW", 0 if walk_rows < 1200 else 10**9)
    assert store.covered
    mismatched = [f"{label} {way}" for label, filters in CORRELATED for way in _unlike_the_plain_order(store, filters)]
    store.close()
    assert not mismatched, mismatched


@pytest.mark.parametrize("walk_rows", [30, 100_000], ids=["short-walk", "whole-walk"])
def test_pages_of_a_common_number_are_exactly_the_plain_order(store_url: str, monkeypatch: pytest.MonkeyPatch,
                                                               walk_rows: int, journal_copies: Any) -> None:
    """The number one customer calls from (a fifth of the calls) counts as common, so its pages
    walk the sort column's index; by the customer's name or type, or by caller, its calls lie
    together, far along. Each page is exactly what a plain ORDER BY gives, whether the walk
    fills it, or stops short and the number's own index gives the rest (SQLite: the plan
    shows that second query)."""
    store = journal_copies(store_url, "correlated", _fill_correlated)
    monkeypatch.setattr(storemod, "WALK_AFTER", 1)
    monkeypatch.setitem(storemod.SEARCH_WALK_ROWS, store.db.dialect, walk_rows)
    filters = {"number": BUSY_NUMBER[1:]}
    mismatched = _unlike_the_plain_order(store, filters, ("customer_name", "customer_type", "caller", "talk_seconds",
                                                          "started_at"))
    plan = store.explain_page_calls(order="customer_name", descending=True, **filters)
    store.close()
    assert not mismatched, mismatched
    if store.db.dialect == "sqlite":
        by_uuid = [line for line in plan if "USING INDEX sqlite_autoindex_calls_1 (uuid=?)" in line]
        assert bool(by_uuid) == (walk_rows < 1200), plan


@pytest.mark.parametrize("order,filters", [("direction", {"direction": "local"}), ("too_long", {"too_long": True}),
                                           ("status", {"status": "missed"})], ids=["local", "too_long", "missed"])
def test_a_filter_fixing_the_sort_column_reads_deep_pages_off_its_index(store_url: str, journal_copies: Any,
                                                                          order: str, filters: dict[str, Any]) -> None:
    """Every row of the local calls has "local" in the direction column: a deep page of them by
    direction compares the tie alone (start time, uuid) and is read off the column's index, nothing
    sorted. SQLite, with the whole key in the range beside the filter's equality, sorted every row
    of the value past the cursor (0.3-0.6 s at a million calls)."""
    store = journal_copies(store_url, "correlated", _fill_correlated)
    for descending in (False, True):
        after = store.page_calls(order=order, descending=descending, limit=5, **filters)[-1]["uuid"]
        plan = store.explain_page_calls(order=order, descending=descending, after=after, scans_last=True, **filters)
        sorted_steps = [line for line in plan if "TEMP B-TREE" in line or re.search(r"\bSort\b", line)]
        assert not sorted_steps, plan
    store.close()


@pytest.mark.parametrize("order,filters", [("talk_seconds", {"status": "missed"}), ("status", {"has_recording": True})],
                         ids=["missed-by-talk", "recorded-by-status"])
def test_matches_far_along_the_sort_are_walked_from_their_value_not_sorted(
        store_url: str, journal_copies: Any, monkeypatch: pytest.MonkeyPatch, order: str,
        filters: dict[str, Any]) -> None:
    """The missed calls by most talk (none has any: they come last) and the recorded calls by
    status, the latest first (all answered, behind the other statuses): the walk of the sort
    column's index stops short of them. The page then walks on from the nearest match's value,
    read from the filter's covering index alone, and the matches are not sorted (at a million
    calls, sorting every missed call for it took 55-110 ms); the pages are still exactly the plain order."""
    store = journal_copies(store_url, "correlated", _fill_correlated)
    # short of the 133 rejected calls (first by status), and of the latest month's answered calls
    # (none recorded: the recorded ones are every other call, and each month every twelfth)
    monkeypatch.setattr(storemod, "WALK_ROWS", 80)
    monkeypatch.setattr(storemod, "SORT_MATCHES_BELOW", 0)  # PostgreSQL: a common filter, as at a million calls
    plan = store.explain_page_calls(order=order, descending=True, limit=10, scans_last=True, **filters)
    mismatched = _unlike_the_plain_order(store, filters, (order,))
    store.close()
    walked_from_value = [line for line in plan if re.search(rf"\({order} ?<=? ?['?]", line)]
    assert walked_from_value, plan
    # the sorted matches: SQLite's temporary b-tree, PostgreSQL's subquery of them (it may plan
    # a walk's few rows with a sort of its own)
    assert not [line for line in plan if "TEMP B-TREE" in line] and not _pg_sorted_matches(plan), plan
    assert not mismatched, mismatched


def test_the_matches_past_a_walk_are_read_by_the_filter_on_postgresql(pg_url: str, journal_copies: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample of the missed calls past a walk by missed cause, and their nearest cause, are
    read by the filter (the missed calls), the walk's range checked on each: PostgreSQL took the
    range for an index bound and read the calls by cause past it, checking each for the status
    (at a million calls, 800,000 passed over for a sample of 64: 240 ms)."""
    store = journal_copies(pg_url, "correlated", _fill_correlated)
    monkeypatch.setattr(storemod, "WALK_ROWS", 30)
    monkeypatch.setattr(storemod, "SORT_MATCHES_BELOW", 0)
    plan = store.explain_page_calls(order="missed_cause", limit=10, scans_last=True, status="missed")
    store.close()
    steps = "\n".join(plan).split("\n\n")  # the bound of the walk, the walk, the sample, the nearest value, ...
    assert len(steps) >= 4, plan
    for step in steps[2:4]:
        assert "status = 'missed'" in step and "Cond: (ROW(" not in step, step


def test_the_mos_filter_searches_its_index_by_each_call_s_worst_mos(store_url: str, journal_copies: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 18: the scored calls' covering index leads with each call's worst MOS, and the
    MOS filter reads it by that: a filter of at least 4.0 searches it for the calls that score
    that, where by the two figures it passed over every scored call (at a million calls, all
    560,000 for the 92,000 that score 4.4: 70 ms of a SQLite page). And it still means what it
    did: every leg with a figure scores at least that."""
    store = journal_copies(store_url, "indexes", _fill)
    monkeypatch.setattr(storemod, "WALK_ROWS", 1)  # the matches past the walk, read through that index
    monkeypatch.setattr(storemod, "SORT_MATCHES_BELOW", 0)
    plan = store.explain_page_calls(order="talk_seconds", min_mos=4.0, scans_last=True)
    found = store.list_calls(min_mos=4.0)
    everyone = store.list_calls()
    store.close()
    if store.db.dialect == "sqlite":
        through = [line for line in plan if "calls_scored_covering" in line]
        assert through and all("(<expr>>?)" in line for line in through), plan
    else:
        conds = [line for line in plan if "Index Cond: ((LEAST(COALESCE(caller_mos" in line]
        assert conds and not [line for line in plan if "Seq Scan" in line], plan
    scored = [r for r in everyone if r["caller_mos"] is not None or r["callee_mos"] is not None]
    expected = {r["uuid"] for r in scored if all(m is None or m >= 4.0 for m in (r["caller_mos"], r["callee_mos"]))}
    assert {r["uuid"] for r in found} == expected and 0 < len(expected) < len(scored)


def test_a_rare_number_s_pages_are_read_from_its_calls_not_along_the_sort(store_url: str,
                                                                         journal_copies: Any) -> None:
    """A number with a call or two: its pages, first and deep, come from the calls its index finds,
    sorted, never from a walk of the sort column's index checking each row. PostgreSQL, given the
    uuids inside the query, walked it: 2-4 s for a deep page at a million calls."""
    store = journal_copies(store_url, "correlated", _fill_correlated)
    rare = next(r["caller"] for r in store.list_calls(direction="inbound") if r["caller"] != BUSY_NUMBER)
    filters = {"number": rare[-7:]}
    deep = store.page_calls(order="started_at", limit=1, **filters)[0]["uuid"]
    walked = []
    for order in ("direction", "charge", "hold_seconds"):
        for descending in (False, True):
            for after in ("", deep):
                plan = store.explain_page_calls(order=order, descending=descending, after=after, **filters)
                if any(sort_index(order) in line for line in plan):
                    walked.append(f"by {order} {'desc' if descending else 'asc'}: {' | '.join(plan)}")
    store.close()
    assert not walked, walked


def test_a_walk_on_postgresql_reads_the_first_entries_of_the_index_not_a_range_to_the_last(
        pg_url: str, journal_copies: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's b-tree stops a scan at a row comparison's first column only. A walk written as
    the range up to its 2,000th entry read every entry with that entry's first value: at a million
    calls, for the missed calls by cause, all 850,000 calls with no missed cause (120-170 ms, for a
    walk that found nothing). The walk is the index's first entries from the page's start, under a
    Limit, with no upper bound; the pages are still exactly the plain order."""
    store = journal_copies(pg_url, "correlated", _fill_correlated)
    monkeypatch.setattr(storemod, "WALK_ROWS", 80)
    monkeypatch.setattr(storemod, "SORT_MATCHES_BELOW", 0)  # a common filter, as at a million calls
    deep = store.page_calls(order="missed_cause", limit=5, status="missed")[-1]["uuid"]
    plans = [store.explain_page_calls(order="missed_cause", after=after, scans_last=True, status="missed")
             for after in ("", deep)]
    mismatched = _unlike_the_plain_order(store, {"status": "missed"}, ("missed_cause", "extension", "status"))
    store.close()
    for plan in plans:
        assert not [line for line in plan if "Index Cond" in line and ") <= ROW(" in line], plan
        assert [i for i, line in enumerate(plan)
                if re.search(r"Index (Only )?Scan using calls_missed_covering on calls calls_\d", line)
                and _parent(plan, i).startswith("Limit ")], plan
    assert not mismatched, mismatched


def test_an_agent_s_calls_are_taken_in_two_halves_on_postgresql(pg_url: str, journal_copies: Any) -> None:
    """PostgreSQL takes the extension filter's matches in two disjoint halves, by UNION ALL, in
    one query: the agent's own calls by the extension alone (at a million calls, from its covering
    index alone), then the local calls that rang it. With the OR, both for the walk and for the
    covering step, it made a bitmap of both and read each match's row: 15,000 for one agent,
    70-180 ms a page. A local call from the agent to itself matches both halves and must come once."""
    store = journal_copies(pg_url, "correlated", _fill_correlated)
    store.load_calls(["uuid", "started_at", "direction", "caller", "called", "extension", "status", "talk_seconds"],
                     [("self-call", "2026-05-05T10:00:00Z", "local", "1004", "1004", "1004", "answered", 20)])
    deep = store.page_calls(order="charge", limit=5, extension="1004")[-1]["uuid"]
    plans = [store.explain_page_calls(order="charge", after=after, scans_last=True, extension="1004")
             for after in ("", deep)]
    mismatched = _unlike_the_plain_order(store, {"extension": "1004"}, ("charge", "started_at", "direction"))
    store.close()
    for plan in plans:  # one query: the halves' matches, sorted; no walk of the sort column's index
        assert "" not in plan and _pg_sorted_matches(plan), plan
        assert any("Append" in line for line in plan) and not any("BitmapOr" in line for line in plan), plan
        assert any(re.search(r"Cond: \(extension = '1004'::text\)$", line) for line in plan), plan
    assert not mismatched, mismatched


def test_a_rare_filter_s_page_is_its_sorted_matches_on_postgresql(pg_url: str, journal_copies: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL reads a page of a filter its planner expects to match few calls as one query,
    its matches sorted, with no walk of the sort column's index first: at a million calls the walk
    read the rows of 2,000 entries for a rare status's page (7,000 calls) and found few of them."""
    store = journal_copies(pg_url, "correlated", _fill_correlated)
    few = store.explain_page_calls(order="charge", scans_last=True, status="rejected")
    monkeypatch.setattr(storemod, "SORT_MATCHES_BELOW", 100)  # the 130-odd rejected calls count as many
    many = store.explain_page_calls(order="charge", scans_last=True, status="rejected")
    store.close()
    assert not any("calls_by_charge" in line for line in few) and _pg_sorted_matches(few), few
    assert any("calls_by_charge" in line for line in many), many


def _unlike_the_plain_order(store: Store, filters: dict[str, Any], orders: tuple[str, ...] = (
        "talk_seconds", "charge", "hangup_by", "caller", "customer_type", "extension", "status", "direction",
        "too_long", "started_at"),
        ) -> list[str]:
    """The orders (each both ways) whose pages, read one after another by keyset, are not exactly
    a plain sort of all of ``filters``' matches."""
    unlike = []
    for order in orders:
        for descending in (False, True):
            everything = sorted(store.list_calls(**filters), key=lambda r: (r[order], *map(r.get, tie(order))),
                                reverse=descending)
            expected = [r["uuid"] for r in everything]
            assert expected, f"{filters}: no call matches: the test would prove nothing"
            seen, after = [], ""
            while True:
                page = store.page_calls(order=order, descending=descending, after=after, limit=17, **filters)
                seen += [r["uuid"] for r in page]
                if len(page) < 17:
                    break
                after = page[-1]["uuid"]
            if seen != expected:
                unlike.append(f"by {order} {'desc' if descending else 'asc'}")
    return unlike


def test_the_columns_leading_a_covering_index_are_sorted_by_it(store_url: str, journal_copies: Any) -> None:
    """Migration 19: status, direction, extension, missed cause and queue have no sort index of
    their own. The journal sorted by one of them, first and deep pages, both ways, walks the
    covering index that column leads, in order and with nothing sorted after, and the pages are
    exactly a plain sort of every call."""
    store = journal_copies(store_url, "correlated", _fill_correlated)
    dialect = store.db.dialect
    names = ({r["name"] for r in store.db.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
             if dialect == "sqlite" else
             {r["indexname"] for r in store.db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'calls'")})
    left = {f"calls_by_{order}" for order in SORTED_BY_COVERING} & names
    unwalked = []
    for order in SORTED_BY_COVERING:
        for descending in (False, True):
            after = store.page_calls(order=order, descending=descending, limit=5)[-1]["uuid"]
            for cursor in ("", after):
                plan = store.explain_page_calls(order=order, descending=descending, after=cursor, scans_last=True)
                walked = any(sort_index(order) in line for line in plan)
                sorted_after = [line for line in plan if "TEMP B-TREE" in line or re.search(r"\bSort\b", line)]
                if not walked or sorted_after:
                    unwalked.append(f"by {order} {'desc' if descending else 'asc'}: {' | '.join(plan)}")
    mismatched = _unlike_the_plain_order(store, {}, tuple(SORTED_BY_COVERING))
    store.close()
    assert len(SORTED_BY_COVERING) == 5 and not left, left
    assert not unwalked, unwalked
    assert not mismatched, mismatched


def test_a_migration_that_remakes_indexes_gathers_their_statistics_again(tmp_path: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 17 drops and makes the sort indexes again, which drops their planner statistics:
    a journal that had statistics has them again for every new index; a new, empty journal gets
    none (they would tell the planner the table is empty long after it is not)."""
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    with monkeypatch.context() as m:
        m.setattr(storemod, "MIGRATIONS", storemod.MIGRATIONS[:16])
        store = open_store(url)
        _fill(store, 400)  # and its statistics
        store.close()
    store = open_store(url)
    analysed = {r["idx"] for r in store.db.query("SELECT idx FROM sqlite_stat1 WHERE tbl = 'calls'")}
    store.close()
    assert {sort_index(order) for order in SORTABLE_CALL_FIELDS} <= analysed
    fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert not fresh.db.query("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
    fresh.close()


def test_the_daemon_gathers_the_journal_planner_statistics(make_config: Any, daemon: Any) -> None:
    """A SQLite journal gets the planner's statistics from the daemon's first maintenance round
    (and then daily), sampled: without them SQLite plans the console's pages blind."""
    d = daemon(make_config(paid_line(), extra="[billing]\nmeter_heartbeat_seconds = 1\n"))
    assert d.store.db.dialect == "sqlite"
    d.store.load_calls(("uuid", "started_at", "status"),
                       [(f"u{i:05}", f"2026-03-{1 + i % 28:02}T10:00:00Z", "answered") for i in range(300)])
    deadline = time.monotonic() + 10
    analysed: list[dict[str, Any]] = []
    while not analysed and time.monotonic() < deadline:
        gevent.sleep(0.1)
        if d.store.db.query("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'"):
            analysed = d.store.db.query("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'calls'")
    assert {r["idx"] for r in analysed} >= {"calls_by_started_at", "calls_status_covering"}, analysed
    assert all(r["stat"].split()[0] == "300" for r in analysed if r["idx"] == "calls_status_covering")
