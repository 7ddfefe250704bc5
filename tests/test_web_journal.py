"""The console's journal and call page over what the CDRs and the analysis know, on SQLite and PostgreSQL:
FreeSWITCH's captured CDRs posted to a real ``fsapp serve``, calls over its socket, one of them
recorded, analysed and transcribed by the daemon's own worker."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fsapp import config as configmod
from fsapp.fakefs import Script, run_call
from fsapp.store import Store, open_store
from fsapp.web.app import create_app
from tests.cdrkit import SCENARIOS, ServeProcess, leg_body, leg_uuid
from tests.helpers import SHARED
from tests.webconsole import add_users, login, row_uuids

SHARED_WAV = SHARED / "recordings" / "a-inbound-answered.stereo.wav"
LOW_MOS = {"rtp_audio_in_mos": "2.90", "rtp_audio_in_quality_percentage": "61.50", "rtp_audio_in_flaw_total": "17",
           "rtp_audio_in_jitter_max_variance": "16.00"}
QUEUE_SALES = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
register_unknown = true
unknown = "queue:sales"
next = "queue:sales"
error = "hangup"
"""
pytestmark = pytest.mark.skipif(not SHARED_WAV.exists(), reason="shared recordings not present")
CDR_UUID = {s: leg_uuid(leg_body(s, "a")) for s in SCENARIOS}


@dataclass
class Site:
    serve: ServeProcess
    app: Flask
    store: Store
    uuids: dict[str, str]

    def client(self, lang: str = "en") -> FlaskClient:
        c = self.app.test_client()
        c.get(f"/login?lang={lang}")
        assert login(c, "viewer").status_code == 302
        return c

    def names(self, html: str) -> list[str]:
        by_uuid = {u: n for n, u in self.uuids.items()}
        return sorted(by_uuid[u] for u in row_uuids(html))


def _engine(tmp: Path) -> Path:
    engine = tmp / "stt.py"
    engine.write_text("import json\nprint(json.dumps([{'start': 0.6, 'end': 2.5, 'channel': 'customer',"
                      " 'text': 'my invoice is wrong'}]))\n")
    return engine


def _wait_final(store: Store, uuid: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        row = store.analysis_get(uuid)
        if row is not None and row["state"] not in ("pending", "running"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the call's analysis did not end: {store.analysis_get(uuid)}")


def _wait_analysed(store: Store, uuid: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        row = store.analysis_get(uuid)
        if row is not None and row["state"] == "done" and row["transcript_state"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the call was not analysed: {store.analysis_get(uuid)}")


@pytest.fixture
def site(tmp_path: Path, store_url: str) -> Iterator[Site]:
    """The seven captured calls (c's caller side with a poor MOS), two socket calls to queue sales
    (one recorded with a poor line, analysed and transcribed), seen through the console."""
    rec = tmp_path / "rec"
    body = (f'[journal]\nrecord = true\nrecord_dir = "{rec}"\n\n[analysis]\npoll_seconds = 0.1\n'
            f'transcribe_command = "{sys.executable} {_engine(tmp_path)}"\n' + QUEUE_SALES)
    serve = ServeProcess(tmp_path / "serve", body, db_url=store_url)
    try:
        for s in SCENARIOS:
            if s == "c":
                doc = json.loads(leg_body("c", "a"))
                doc["variables"]["rtp_audio_in_mos"] = "2.10"
                serve.post(leg_body("c", "b"))
                assert serve.post(json.dumps(doc).encode())[0] == 200
            else:
                serve.post_scenario(s)
        uuids = {f"cdr_{s}": u for s, u in CDR_UUID.items()}
        uuids["sales"] = run_call(serve.esl_address, Script(caller="09121234567", bridges=["answer:5"])).uuid
        uuids["recorded"] = run_call(serve.esl_address, Script(
            caller="09127654321", bridges=["answer:10"], variables=LOW_MOS, recording=str(SHARED_WAV))).uuid
        store = open_store(store_url)
        add_users(store)
        _wait_analysed(store, uuids["recorded"])
        for s in SCENARIOS:  # a CDR-only call is queued too: its recording (not there: missing) or its line
            _wait_final(store, uuids[f"cdr_{s}"])
        app = create_app(configmod.load(serve.config))
        yield Site(serve, app, store, uuids)
        app.config["FSAPP_STORE"].close()
        store.close()
    finally:
        serve.stop()


SOCKET = ["recorded", "sales"]
WITH_RECORDING = ["cdr_a", "cdr_f", "cdr_g", *SOCKET]
CALLS_0912 = ["cdr_a", "cdr_b", "cdr_c", "cdr_d", "cdr_e", "cdr_f", "sales"]
FILTERS = [
    ("missed_cause=busy", ["cdr_c"]),
    ("missed_cause=cancelled", ["cdr_d"]),
    ("status=missed&missed_cause=no_answer", ["cdr_b"]),
    ("extension=1001", ["cdr_f", "cdr_g"]),
    ("extension=1002", ["cdr_g"]),  # the extension a local call rang
    ("extension=%DB%B1%DB%B0%DB%B0%DB%B1", ["cdr_f", "cdr_g"]),  # ۱۰۰۱ in Persian digits
    ("queue=support", ["cdr_e"]),
    ("queue=sales", SOCKET),
    ("queue=sup", []),
    ("recording=1", WITH_RECORDING),
    ("recording=0", ["cdr_b", "cdr_c", "cdr_d", "cdr_e"]),
    ("max_mos=3", ["cdr_c"]),
    ("min_mos=4&direction=inbound", ["cdr_a", "cdr_b", "cdr_d", "cdr_e"]),
    ("flag=low_mos", ["cdr_c", "recorded"]),  # c's caller side scored 2.1
    ("flag=overtalk", []),
    ("text=INVOICE+wrong", ["recorded"]),
    ("text=refund", []),
    ("number=%2B989127654321", ["recorded"]),  # the number in another written form
    ("number=00989121234567", CALLS_0912),  # the CDRs' callers and called, a socket call's caller
    ("number=%DB%B1%DB%B2%DB%B3%DB%B4%DB%B5%DB%B6%DB%B7", CALLS_0912),  # its last 7 digits in Persian digits
    ("direction=local", ["cdr_g"]),
]


def test_every_filter_finds_its_calls_and_the_csv_is_exactly_them(site: Site) -> None:
    c = site.client()
    assert len(row_uuids(c.get("/?reset=1").get_data(as_text=True))) == 9
    for query, names in FILTERS:
        page = c.get(f"/?{query}&search=1")
        assert page.status_code == 200, query
        assert site.names(page.get_data(as_text=True)) == sorted(names), query
        rows = list(csv.DictReader(io.StringIO(c.get(f"/calls.csv?{query}").get_data(as_text=True))))
        assert sorted(r["uuid"] for r in rows) == sorted(site.uuids[n] for n in names), query
    assert site.names(c.get("/").get_data(as_text=True)) == ["cdr_g"]  # the last search is remembered

    rows = {r["uuid"]: r for r in csv.DictReader(io.StringIO(c.get("/calls.csv").get_data(as_text=True)))}
    assert len(rows) == 9
    busy, queued, recorded = (rows[site.uuids[n]] for n in ("cdr_c", "cdr_e", "recorded"))
    assert (busy["missed_cause"], busy["caller_mos"], busy["hangup_by"]) == ("busy", "2.1", "system")
    assert (queued["queue"], queued["extension"], queued["callee_jitter"]) == ("support", "agent@default", "8.04")
    assert (recorded["queue"], recorded["analysis_flags"], recorded["analysis_mos"]) == ("sales", "low_mos", "2.9")
    assert rows[site.uuids["cdr_d"]]["ring_seconds"] == "4"


def test_new_columns_show_and_sort(site: Site) -> None:
    c = site.client()
    html = c.get("/?reset=1").get_data(as_text=True)
    row = _row(html, site.uuids["cdr_c"])
    assert '<td class="c-missed_cause">busy</td>' in row and '<td class="c-hangup_by">system</td>' in row
    assert '<td class="c-mos poor">2.1' in row and '<use href="#i-poor"/>' in row
    assert '<use href="#i-missed"/>' in row and '<use href="#i-recording"/>' not in row
    recorded = _row(html, site.uuids["recorded"])
    assert '<span class="flag" data-flag="low_mos">' in recorded and '<td class="c-queue">sales</td>' in recorded
    assert '<use href="#i-recording"/>' in recorded
    assert '<td class="c-mos poor">2.9' in recorded  # the analysis's line MOS
    assert '<td class="c-ring_seconds">0:04</td>' in _row(html, site.uuids["cdr_d"])
    ring = [site.store.get_call(u)["ring_seconds"] for u in row_uuids(
        c.get("/?sort=ring_seconds&desc=1&search=1").get_data(as_text=True))]
    assert ring == sorted(ring, reverse=True) and ring[0] == 6
    causes = [site.store.get_call(u)["missed_cause"] for u in row_uuids(
        c.get("/?sort=missed_cause&search=1").get_data(as_text=True))]
    assert causes == sorted(causes) and causes[-1] == "no_answer"


def _row(html: str, uuid: str) -> str:
    start = html.index(f'data-uuid="{uuid}"')
    return html[start:html.index("</tr>", start)]


def test_the_call_page_shows_quality_legs_and_the_analysis(site: Site) -> None:
    c = site.client()
    html = c.get(f"/call/{site.uuids['cdr_a']}").get_data(as_text=True)
    quality = html[html.index('id="quality"'):]
    assert '<tr data-leg="caller"><td>caller&#39;s side</td><td class="c-mos">4.5</td>' in quality
    assert "<td>106.42</td>" in quality  # the callee leg's jitter
    assert 'id="hangup-by">callee<' in html
    legs = html[html.index('id="legs"'):]
    assert '<tr data-outcome="answered"><td class="ltr">sofia/external/agent@127.0.0.1:5090</td>' in legs
    missed = c.get(f"/call/{site.uuids['cdr_c']}").get_data(as_text=True)
    assert 'id="missed-cause">busy<' in missed and '<tr data-outcome="busy">' in missed
    assert '<td class="c-mos poor">2.1' in missed
    # a CDR-only call is analysed as a socket call is: here its recording is not on this host
    assert '<section id="analysis" data-state="missing">' in html

    page = c.get(f"/call/{site.uuids['recorded']}").get_data(as_text=True)
    assert " style=" not in page and "<script" not in page
    assert 'id="queue">sales<' in page
    assert '<li class="attempt" data-outcome="answered">Target <span class="ltr">queue:sales</span>: answered' in page
    assert 'id="modules">main<' in page
    section = page[page.index('id="analysis"'):]
    assert 'data-state="done"' in section and 'data-flag="low_mos"' in section
    assert 'id="transcript">my invoice is wrong<' in section
    figures = site.store.analysis_get(site.uuids["recorded"])
    assert f'id="customer-share">{round(figures["customer_share"] * 100)}%' in section
    svg = section[section.index("<svg"):section.index("</svg>") + 6]
    rects = ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}rect")
    spans = sorted((float(r.get("data-start")), float(r.get("data-end"))) for r in rects
                   if r.get("class") == "speech customer")
    assert spans == sorted((s["start"], s["end"]) for s in figures["segments"] if s["channel"] == "customer")
    assert len(spans) == 2  # the recording's two customer turns
