"""The console's statistics page through Flask's test client, on SQLite and PostgreSQL, in Tehran's zone.

Calls are written as the daemon writes them: a CDR's legs through ``Store.cdr_add`` (the
merge FreeSWITCH's posts go through), a socket-only call through ``Store.call_finished``,
and two real captured CDRs through the CDR writer.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fsapp import instants
from fsapp.cdr import legs as legsmod
from fsapp.cdr.writer import CDRWriter
from fsapp.store import Store, open_store
from fsapp.store.cdr import MERGED
from fsapp.web.app import create_app
from fsapp.web.auth import hash_password
from tests.cdrkit import leg_body
from tests.helpers import HANGUP_MENU
from tests.webconsole import PASSWORD, login, row_uuids

TEHRAN = '[journal]\ntimezone = "Asia/Tehran"\ntoo_long_seconds = 300\n'
PERIOD = {"from": "2026-11-29", "to": "2026-12-01", "search": "1"}


@pytest.fixture
def site(store_url: str, make_config: Callable[..., Any]) -> Iterator[tuple[Flask, Store]]:
    store = open_store(store_url)
    store.web_user_set("viewer", "viewer", hash_password(PASSWORD))
    app = create_app(make_config(HANGUP_MENU, extra=TEHRAN), store)
    yield app, store
    store.close()


def viewer(app: Flask, lang: str = "en") -> FlaskClient:
    c = app.test_client()
    c.get(f"/login?lang={lang}")
    assert login(c, "viewer").status_code == 302
    return c


def cdr_call(store: Store, uuid: str, started_at: str, status: str, extension: str = "", talk: int = 0,
             wait: int = 0, too_long: bool = False) -> None:
    """A call whose A leg's CDR came in: its row merged by the store as a posted leg's is."""
    row: dict[str, Any] = dict.fromkeys(MERGED, "")
    row.update({c: None for c in MERGED if c.endswith(("_mos", "_quality", "_flaws", "_jitter"))})
    row.update(uuid=uuid, started_at=started_at, answered_at=None, ended_at=None, direction="inbound",
               status=status, extension=extension, talk_seconds=talk, total_seconds=talk + wait, too_long=too_long,
               wait_seconds=wait, ring_seconds=0, hold_seconds=0, cdr_legs=1, cdr_a_leg=True)
    leg = {"uuid": uuid, "call_uuid": uuid, "a_leg": True}
    assert store.cdr_add([(leg, b"{}")], lambda _legs: row, instants.utc_iso()) == [True]


def socket_call(store: Store, uuid: str, started_at: str, status: str, extension: str = "", talk: int = 0) -> None:
    """A call only the socket journaled (no CDR: no wait measured)."""
    store.call_finished(uuid, {"started_at": started_at, "status": status, "extension": extension,
                               "talk_seconds": talk, "direction": "inbound", "caller": "09121234567"})


def known_calls(store: Store) -> None:
    """Seven calls in Tehran's 2026-11-29..12-01, two just outside it."""
    cdr_call(store, "c1", "2026-11-29T06:00:00Z", "answered", "1001", talk=120, wait=10)  # 09:30
    cdr_call(store, "c2", "2026-11-29T06:20:00Z", "answered", "1001", talk=60, wait=20)  # 09:50
    cdr_call(store, "c3", "2026-11-29T07:00:00Z", "missed", "1002", wait=30)  # 10:30
    cdr_call(store, "c4", "2026-11-30T22:00:00Z", "answered", "1002", talk=400, wait=5, too_long=True)  # 12-01 01:30
    cdr_call(store, "c5", "2026-11-30T20:29:00Z", "abandoned", wait=15)  # 11-30 23:59
    socket_call(store, "c6", "2026-11-30T10:00:00Z", "answered", "1001", talk=32)  # 13:30
    socket_call(store, "c7", "2026-11-30T11:00:00Z", "completed")  # 14:30
    cdr_call(store, "before", "2026-11-28T20:00:00Z", "answered", "1001", talk=5)  # 11-28 23:30
    cdr_call(store, "after", "2026-12-01T20:30:00Z", "answered", "1001", talk=5)  # 12-02 00:00


def totals(html: str) -> dict[str, str]:
    return {k: htmllib.unescape(re.sub(r"<[^>]+>", "", v)).strip()
            for k, v in re.findall(r'<dd id="total-(\w+)">(.*?)</dd>', html, re.S)}


def bars(html: str, chart: str) -> dict[str, dict[str, int]]:
    """The bars of one chart: key -> its numbers (total, answered, missed, abandoned, other)."""
    svg = html.split(f'id="{chart}"', 1)[1].split("</svg>", 1)[0]
    return {m[0]: {k: int(v) for k, v in re.findall(r'data-(\w+)="(\d+)"', m[1])}
            for m in re.findall(r'<g class="bar" data-key="([^"]+)"([^>]*)>', svg)}


def extension_rows(html: str) -> dict[str, list[str]]:
    table = html.split('id="extensions"', 1)[1].split("</table>", 1)[0]
    return {ext: [htmllib.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
            for ext, row in re.findall(r'<tr data-extension="([^"]*)">(.*?)</tr>', table, re.S)}


def test_the_figures_of_a_known_period(site: tuple[Flask, Store]) -> None:
    app, store = site
    known_calls(store)
    r = viewer(app).get("/stats", query_string=PERIOD)
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert totals(html) == {"calls": "7", "answered": "4", "missed": "1", "abandoned": "1", "other": "1",
                            "answer_rate": "66.7%",  # 4 / (4 + 1 + 1)
                            "avg_talk": "2:33",  # (120 + 60 + 400 + 32) / 4 = 153 s
                            "avg_wait": "0:12",  # (10 + 20 + 5) / 3: answered with a CDR only
                            "talk_seconds": "10:12", "too_long": "1"}
    assert "answered ÷ (answered + missed + abandoned)" in html
    days = bars(html, "per-day")
    assert list(days) == ["2026-11-29", "2026-11-30", "2026-12-01"]
    assert days["2026-11-29"] == {"total": 3, "answered": 2, "missed": 1, "abandoned": 0, "other": 0}
    assert days["2026-11-30"] == {"total": 3, "answered": 1, "missed": 0, "abandoned": 1, "other": 1}
    assert days["2026-12-01"] == {"total": 1, "answered": 1, "missed": 0, "abandoned": 0, "other": 0}
    hours = bars(html, "per-hour")
    assert list(hours) == [f"{h:02}" for h in range(24)]
    assert {h: b["total"] for h, b in hours.items() if b["total"]} == {"01": 1, "09": 2, "10": 1, "13": 1, "14": 1,
                                                                       "23": 1}
    assert hours["10"]["missed"] == 1 and hours["23"]["abandoned"] == 1 and hours["14"]["other"] == 1
    # extension, calls, answered, missed, answer rate, talk, average talk, average wait, too long
    assert extension_rows(html) == {
        "1001": ["1001", "3", "3", "0", "100.0%", "3:32", "1:11", "0:15", "0"],
        "1002": ["1002", "2", "1", "1", "50.0%", "6:40", "6:40", "0:05", "1"],
        "": ["(none)", "2", "0", "0", "0.0%", "0:00", "—", "—", "0"],
    }
    assert store.call_stats_extensions(flag="long_silence", date_from="2026-11-29T00:00:00Z") == []  # the join


def one_day(c: FlaskClient, day: str) -> str:
    return c.get("/stats", query_string={"from": day, "to": day, "search": "1"}).get_data(as_text=True)


def test_a_call_at_22_utc_is_on_the_next_local_day_in_tehran(site: tuple[Flask, Store]) -> None:
    app, store = site
    known_calls(store)
    c = viewer(app)
    html = one_day(c, "2026-12-01")
    assert totals(html)["calls"] == "1" and list(bars(html, "per-day")) == ["2026-12-01"]
    assert bars(html, "per-hour")["01"]["answered"] == 1  # 22:00 UTC is 01:30 in Tehran
    assert list(extension_rows(html)) == ["1002"]
    html = one_day(c, "2026-11-30")
    assert totals(html)["calls"] == "3"  # c5 (20:29 UTC, 23:59 in Tehran), c6, c7; not c4
    assert bars(html, "per-hour")["23"]["abandoned"] == 1 and bars(html, "per-hour")["01"]["total"] == 0


def test_the_sums_are_those_of_the_database_not_of_a_page(site: tuple[Flask, Store]) -> None:
    """Quarter hours and extensions are summed in SQL; the page folds only the quarters."""
    _app, store = site
    known_calls(store)
    quarters = store.call_stats_quarters(date_from="2026-11-28T20:30:00Z", date_to="2026-12-01T20:30:00Z")
    assert [(q["hour"], q["quarter"], q["calls"]) for q in quarters] == [
        ("2026-11-29T06", 0, 1), ("2026-11-29T06", 1, 1), ("2026-11-29T07", 0, 1), ("2026-11-30T10", 0, 1),
        ("2026-11-30T11", 0, 1), ("2026-11-30T20", 1, 1), ("2026-11-30T22", 0, 1)]
    assert sum(q["wait_seconds"] for q in quarters) == 35 and sum(q["waited"] for q in quarters) == 3


def test_real_cdrs_count_their_agent_and_wait(site: tuple[Flask, Store]) -> None:
    """Two captured mod_json_cdr calls (answered by 'agent', missed at 'noanswer') through the CDR writer."""
    app, store = site
    writer = CDRWriter(store, lambda: 300)
    for scenario in "ab":
        for leg in ("a", "b"):
            assert writer.add(legsmod.parse(leg_body(scenario, leg)), leg_body(scenario, leg))
    rows = [r for r in store.list_calls() if r["extension"] in ("agent", "noanswer")]
    assert sorted((r["extension"], r["status"]) for r in rows) == [("agent", "answered"), ("noanswer", "missed")]
    answered = next(r for r in rows if r["status"] == "answered")
    day = instants.local(answered["started_at"], instants.zone("Asia/Tehran")).date().isoformat()
    html = viewer(app).get("/stats", query_string={"from": day, "to": day, "search": "1"}).get_data(as_text=True)
    ext = extension_rows(html)
    assert ext["agent"][:5] == ["agent", "1", "1", "0", "100.0%"]
    assert ext["agent"][7] == f"0:{answered['wait_seconds']:02}" and answered["wait_seconds"] > 0
    assert ext["noanswer"][:5] == ["noanswer", "1", "0", "1", "0.0%"] and ext["noanswer"][7] == "—"


def test_an_empty_period(site: tuple[Flask, Store]) -> None:
    app, _store = site
    r = viewer(app).get("/stats", query_string=PERIOD)
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert totals(html) == {"calls": "0", "answered": "0", "missed": "0", "abandoned": "0", "other": "0",
                            "answer_rate": "—", "avg_talk": "—", "avg_wait": "—", "talk_seconds": "0:00",
                            "too_long": "0"}
    assert all(b["total"] == 0 for b in bars(html, "per-day").values()) and len(bars(html, "per-day")) == 3
    assert extension_rows(html) == {} and "No calls." in html


@pytest.mark.parametrize(("query", "named"), [
    ({"from": "2026-13-45"}, "from: not a date"),
    ({"to": "yesterday"}, "to: not a date"),
    ({"from": "2026-12-02", "to": "2026-12-01"}, "to: the period ends (2026-12-01) before it starts (2026-12-02)"),
    ({"from": "1990-01-01", "to": "2026-12-01"}, "from: a period is at most 3660 days"),
    ({"from": "2026-12-01", "ext_sort": "charge"}, "ext_sort: cannot sort the extensions by 'charge'"),
    ({"from": "2026-12-01", "status": "busy"}, "status: unknown status 'busy'"),
])
def test_bad_input_is_a_400_naming_the_field(site: tuple[Flask, Store], query: dict[str, str], named: str) -> None:
    app, _store = site
    r = viewer(app).get("/stats", query_string={**query, "search": "1"})
    assert r.status_code == 400
    html = htmllib.unescape(r.get_data(as_text=True))
    assert f'<p class="error" role="alert">{named}' in html
    assert 'id="totals"' not in html and 'name="from"' in html  # nothing counted; the form to fix it


def test_the_journal_search_carries_over_and_too_long_links_to_the_journal(site: tuple[Flask, Store]) -> None:
    app, store = site
    known_calls(store)
    c = viewer(app)
    c.get("/", query_string={**PERIOD, "status": "answered"})
    html = c.get("/stats").get_data(as_text=True)
    assert totals(html)["calls"] == "4" and 'id="also-filtered"' in html
    assert 'name="status" value="answered"' in html and 'name="from" value="2026-11-29"' in html
    link = htmllib.unescape(re.search(r'id="too-long-link" href="([^"]+)"', html)[1])
    journal = c.get(link).get_data(as_text=True)
    assert row_uuids(journal) == ["c4"]
    c.get("/", query_string={**PERIOD, "recording": "0", "group": "day"})  # a display choice is no filter
    chips = re.search(r'<p id="also-filtered">(.*?)</p>', c.get("/stats").get_data(as_text=True), re.S)[1]
    assert re.findall(r'<span class="filter">([^<]*)</span>', chips) == ["Recording: without a recording"]
    html = c.get("/stats?reset=1").get_data(as_text=True)
    assert 'id="also-filtered"' not in html


def test_the_default_period_is_the_last_seven_days(site: tuple[Flask, Store]) -> None:
    import time

    app, store = site
    socket_call(store, "now", instants.utc_iso(), "answered", "1001", talk=10)
    socket_call(store, "old", instants.utc_iso(time.time() - 8 * 86400), "answered", "1001", talk=10)
    html = viewer(app).get("/stats").get_data(as_text=True)
    assert totals(html)["calls"] == "1" and len(bars(html, "per-day")) == 7
    today = instants.local(instants.utc_iso(), instants.zone("Asia/Tehran")).date().isoformat()
    assert f'name="to" value="{today}"' in html and list(bars(html, "per-day"))[-1] == today


def test_persian_first_right_to_left_and_no_inline_script_or_style(site: tuple[Flask, Store]) -> None:
    app, store = site
    known_calls(store)
    c = app.test_client()
    assert c.get("/stats").status_code == 302  # a login first
    html = viewer(app, "fa").get("/stats", query_string={"from": "۱۴۰۵/۰۹/۰۸", "to": "1405/09/10",
                                                         "search": "1"}).get_data(as_text=True)
    assert '<html lang="fa" dir="rtl">' in html and "آمار" in html and "نرخ پاسخ" in html
    assert totals(html)["calls"] == "۷" and totals(html)["answer_rate"] == "۶۶٫۷٪"
    assert 'name="from" value="۱۴۰۵/۰۹/۰۸"' in html and 'name="to" value="۱۴۰۵/۰۹/۱۰"' in html
    assert list(bars(html, "per-day")) == ["2026-11-29", "2026-11-30", "2026-12-01"]  # 1405/09/08..10
    day_chart = html.split('id="per-day"', 1)[1].split("</svg>", 1)[0]
    assert "<title>۱۴۰۵/۰۹/۰۸\nتماس‌ها: ۳\n" in day_chart and ">۰۹/۰۸</text>" in day_chart
    xs = [float(x) for x in re.findall(r'<rect class="hover" x="([\d.]+)"', day_chart)]
    assert xs == sorted(xs, reverse=True)  # right to left: the first day on the right
    assert "<script" not in html and " style=" not in html
    assert extension_rows(html)["1001"][0] == "۱۰۰۱"


def test_the_extension_table_sorts_by_its_columns(site: tuple[Flask, Store]) -> None:
    app, store = site
    known_calls(store)
    c = viewer(app)

    def order(**sort: str) -> list[str]:
        return list(extension_rows(c.get("/stats", query_string={**PERIOD, **sort}).get_data(as_text=True)))

    assert order() == ["1001", "1002", ""]  # calls: 3, then 2 and 2 by extension
    assert order(ext_sort="answer_rate") == ["1001", "1002", ""]  # 100 %, 50 %, 0 %
    assert order(ext_sort="answer_rate", ext_desc="") == ["", "1002", "1001"]
    assert order(ext_sort="avg_talk") == ["1002", "1001", ""]  # 6:40, 1:11, none last
    assert order(ext_sort="extension", ext_desc="") == ["", "1001", "1002"]
    html = c.get("/stats", query_string={**PERIOD, "ext_sort": "talk_seconds"}).get_data(as_text=True)
    assert 'ext_sort=talk_seconds&amp;ext_desc=">Talk ▼</a>' in html  # its link sorts the other way
