"""A customer's page over a journal made by real calls: details from the directory or the HTTP
CRM, the whole call history in keyset pages, the ledger's charges and the debt."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from fsapp.store import open_store
from fsapp.web import customer as customer_page
from fsapp.web.app import create_app
from tests import test_web
from tests.webconsole import Journal, row_uuids

journal, app, client_as = test_web.journal, test_web.app, test_web.client_as  # the journal of real calls

TOKEN = "customer-page-token"


def viewer(app: Flask, lang: str = "en") -> FlaskClient:
    return client_as(app, "viewer", lang)


def dd(html: str, key: str) -> str:
    m = re.search(rf'<dd id="{key}"[^>]*>(.*?)</dd>', html, re.S)
    assert m, f"no {key}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", m.group(1))).strip()


def ledger_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="(\d+)">', html)


def test_the_customers_page_has_details_history_charges_and_debt(app: Flask, journal: Journal) -> None:
    html = viewer(app).get("/customer/C-1001").get_data(as_text=True)
    assert "Sara Ahmadi" in html and dd(html, "source") == "the local directory"
    assert dd(html, "phones") == "+989121234567"
    u = journal.uuids
    assert sorted(row_uuids(html)) == sorted([u["answered"], u["short"], u["missed"]])  # not the stranger's
    charges = journal.store.charges("C-1001")
    assert [c["amount"] for c in charges] == [100_000, 50_000]  # 61 s: two started minutes; 20 s: one
    assert ledger_ids(html) == [str(c["id"]) for c in reversed(charges)]  # newest first
    assert dd(html, "debt") == "150,000 rial"
    assert dd(html, "charged") == "150,000 rial — 2 charges, 1:21"
    fa = viewer(app, "fa").get("/customer/C-1001").get_data(as_text=True)
    assert dd(fa, "debt") == "۱۵۰٬۰۰۰ ریال" and "فهرست محلی" in fa
    assert "<script" not in fa and " style=" not in fa


def _cells(html: str, uuid: str) -> dict[str, str]:
    """A journal row's cells that name their column (class c-...), by column."""
    m = re.search(rf'<tr [^>]*data-uuid="{uuid}">(.*?)</tr>', html, re.S)
    assert m, f"no row {uuid}"
    return dict(re.findall(r'<td class="c-([a-z_]+)[^"]*">(.*?)</td>', m.group(1), re.S))


def test_a_customers_history_row_reads_as_the_journals(app: Flask, journal: Journal) -> None:
    """Status and direction icons, extension, missed cause, marks, charge: the same cells as the journal's."""
    c = viewer(app)
    mine = c.get("/customer/C-1001").get_data(as_text=True)
    whole = c.get("/?search=1").get_data(as_text=True)
    assert 'id="i-answered"' in mine  # the icons' sprite is on the page
    for name in ("answered", "short", "missed"):
        cells, theirs = _cells(mine, journal.uuids[name]), _cells(whole, journal.uuids[name])
        named = [col for col in customer_page.COLUMNS if col in theirs]
        assert {"status", "direction", "extension", "talk_seconds", "missed_cause", "charge"} <= set(named)
        assert cells == {col: theirs[col] for col in named}, name
    answered, missed = _cells(mine, journal.uuids["answered"]), _cells(mine, journal.uuids["missed"])
    assert '<use href="#i-answered"' in answered["status"] and answered["charge"] == "100,000"
    assert '<use href="#i-missed"' in missed["status"]


def test_history_and_charges_page_by_keyset(app: Flask, journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(customer_page, "PAGE", 1)
    c = viewer(app)
    seen_calls: list[str] = []
    seen_charges: list[str] = []
    url = "/customer/C-1001"
    for _ in range(5):
        html = c.get(url).get_data(as_text=True)
        seen_calls += row_uuids(html)
        seen_charges += ledger_ids(html)
        m = re.search(r'id="next-calls" href="([^"]+)"', html) or re.search(r'id="next-charges" href="([^"]+)"', html)
        if not m:
            break
        url = m.group(1).replace("&amp;", "&")
    assert sorted(set(seen_calls)) == sorted(journal.uuids[n] for n in ("answered", "short", "missed"))
    assert len(seen_charges) >= 2 and set(seen_charges) == {str(ch["id"]) for ch in journal.store.charges("C-1001")}
    assert c.get("/customer/C-1001?before=x").status_code == 400


def test_the_journal_and_the_call_page_link_to_the_customer(app: Flask, journal: Journal) -> None:
    c = viewer(app)
    journal_html = c.get("/").get_data(as_text=True)
    assert journal_html.count('class="customer" href="/customer/C-1001"') == 3
    call_html = c.get(f"/call/{journal.uuids['answered']}").get_data(as_text=True)
    assert '<a class="customer" href="/customer/C-1001">Sara Ahmadi</a>' in call_html


def test_an_unknown_customer_is_404(app: Flask) -> None:
    r = viewer(app).get("/customer/C-9999")
    assert r.status_code == 404 and "no customer" in r.get_data(as_text=True)


def _http_app(journal: Journal, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Flask:
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", TOKEN)
    path = Path(journal.cfg.file)
    crm = f'\n[crm]\nkind = "http"\nurl = "{httpserver.url_for("/api")}"\ntoken_env = "FSAPP_TEST_CRM_TOKEN"\n' \
          "timeout_seconds = 2\nconnect_timeout_seconds = 0.5\n"
    text = path.read_text(encoding="utf-8")
    http_cfg = tmp_path / "http.toml"
    head, sep, modules = text.partition("[[modules]]")
    http_cfg.write_text(head + crm + "\n" + sep + modules, encoding="utf-8")
    from fsapp import config as configmod

    return create_app(configmod.load(http_cfg, check_files=False), store=journal.store)


def test_details_come_from_the_http_crm(journal: Journal, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    httpserver.expect_request("/api/customers", method="GET", query_string={"number": "C-1001"}).respond_with_json(
        {"id": "C-1001", "number": "C-1001", "name": "Sara A. (CRM)", "type": "Gold", "mobile": "09121234567",
         "phones": ["+989121234567", "+982100000000"], "responsible": {"support": "1002"}})
    html = viewer(_http_app(journal, httpserver, monkeypatch, tmp_path)).get("/customer/C-1001").get_data(as_text=True)
    assert "Sara A. (CRM)" in html and dd(html, "source") == "the CRM"
    assert dd(html, "phones") == "+989121234567, +982100000000" and "support: 1002" in html
    assert dd(html, "debt") == "150,000 rial"  # the debt after the last charge in the ledger
    assert len(row_uuids(html)) == 3


def test_a_crm_that_does_not_answer_is_named_and_the_history_still_shown(
        journal: Journal, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    httpserver.expect_request("/api/customers").respond_with_data("down", status=503)
    html = viewer(_http_app(journal, httpserver, monkeypatch, tmp_path)).get("/customer/C-1001").get_data(as_text=True)
    problem = re.search(r'id="crm-problem">([^<]+)<', html)
    assert problem and problem.group(1).startswith("the CRM did not answer: find_by_number")
    assert dd(html, "source") == "the local directory"  # the directory still knows her
    assert len(row_uuids(html)) == 3 and len(ledger_ids(html)) == 2


def test_customer_and_charge_totals_in_the_store(store_url: str) -> None:
    store = open_store(store_url)
    store.upsert_customer({"id": "A", "number": "N-A", "name": "Ali", "debt": 7}, ["+989120000001"])
    assert store.customer("A")["phones"] == ["+989120000001"] and store.customer("B") is None
    assert store.charge_totals("A") == {"charges": 0, "amount": 0, "talk_seconds": 0}
    for i, customer in enumerate(["A", "B", "A"]):
        meter = {"call_uuid": f"c{i}", "module": "paid", "customer_id": customer, "interval_minutes": 1,
                 "amount_per_interval": 10, "opened_at": 0.0, "beat_at": 0.0}
        assert store.meter_open(meter)
        assert store.settle(meter, talk_seconds=30 + i, units=1, amount=10 + i, source="call", outbox=[], now=1.0)
    assert store.charge_totals("A") == {"charges": 2, "amount": 22, "talk_seconds": 62}
    store.close()


def test_a_customer_id_with_a_slash_has_its_page(app: Flask, journal: Journal) -> None:
    journal.store.upsert_customer({"id": "B/7", "number": "B/7", "name": "Bahar"}, ["+989120000007"])
    html = viewer(app).get("/customer/B/7").get_data(as_text=True)
    assert "Bahar" in html and dd(html, "source") == "the local directory"
