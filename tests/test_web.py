"""The managers' web console (seed 004) through Flask's test client, over a journal made by real calls."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from fsapp import instants, render
from fsapp import journal as journal_mod
from fsapp.web import views
from fsapp.web.app import create_app
from tests.helpers import Daemon
from tests.webconsole import PAID, Journal, add_users, csrf, extra, login, make_journal, row_uuids


@pytest.fixture
def journal(make_config: Callable[..., object], daemon: Callable[..., Daemon], tmp_path: Path) -> Journal:
    cfg = make_config(PAID, extra=extra(tmp_path / "rec"))
    j = make_journal(cfg, daemon(cfg))
    add_users(j.store)
    return j


@pytest.fixture
def app(journal: Journal) -> Iterator[Flask]:
    app = create_app(journal.cfg)  # its own store over the same database, as `fsapp web` opens it
    yield app
    app.config["FSAPP_STORE"].close()


def client_as(app: Flask, role: str, lang: str = "en"):  # noqa: ANN201 - a FlaskClient
    c = app.test_client()
    c.get(f"/login?lang={lang}")
    assert login(c, role).status_code == 302
    return c


# ------------------------------------------------------------------ login, session, headers


def test_pages_need_a_login_and_carry_the_security_headers(app: Flask) -> None:
    c = app.test_client()
    r = c.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    page = c.get("/login")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "<script" not in page.get_data(as_text=True) and " style=" not in page.get_data(as_text=True)
    assert c.get("/static/style.css").status_code == 200


def test_a_post_without_the_csrf_token_is_refused(app: Flask, journal: Journal) -> None:
    c = app.test_client()
    c.get("/login")
    r = c.post("/login", data={"name": "admin", "password": "correct horse battery"})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    r = c.post("/login", data={"name": "admin", "password": "correct horse battery", "csrf": "forged"})
    assert r.status_code == 400
    logged = client_as(app, "admin")
    assert logged.post("/logout").status_code == 400  # a forged logout is refused too
    assert logged.get("/").status_code == 200
    token = csrf(logged.get("/").get_data(as_text=True))
    assert logged.post("/logout", data={"csrf": token}).status_code == 302
    assert logged.get("/").status_code == 302


def test_wrong_passwords_are_rate_limited_per_user(app: Flask) -> None:
    c = app.test_client()
    for _ in range(5):
        assert login(c, "admin", "wrong password").status_code == 401
    # the right password no longer helps, from this address or another one
    assert login(c, "admin").status_code == 429
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.9"
    assert login(other, "admin").status_code == 429
    assert login(other, "viewer").status_code == 302  # another user is not locked out


def test_wrong_passwords_are_rate_limited_per_address(app: Flask) -> None:
    c = app.test_client()
    for name in ("u1", "u2", "u3", "u4", "u5"):
        assert login(c, name, "guess").status_code == 401
    assert login(c, "viewer").status_code == 429
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    assert login(other, "viewer").status_code == 302


def test_the_session_secret_is_generated_once_with_mode_0600(app: Flask, journal: Journal) -> None:
    from fsapp.web.auth import secret_file

    path = secret_file(journal.cfg)
    assert path.parent == Path(journal.cfg.storage_url[len("sqlite://"):]).parent
    assert path.stat().st_mode & 0o777 == 0o600
    assert create_app(journal.cfg, store=journal.store).config["SECRET_KEY"] == app.config["SECRET_KEY"]


def test_the_secret_comes_from_secret_env(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = dataclasses.replace(journal.cfg, web=dataclasses.replace(journal.cfg.web, secret_env="FSAPP_WEB_SECRET"))
    monkeypatch.setenv("FSAPP_WEB_SECRET", "s" * 40)
    assert create_app(cfg, store=journal.store).config["SECRET_KEY"] == b"s" * 40
    monkeypatch.setenv("FSAPP_WEB_SECRET", "short")
    with pytest.raises(ValueError, match="web.secret_env: environment variable FSAPP_WEB_SECRET"):
        create_app(cfg, store=journal.store)


# ------------------------------------------------------------------ journal


def test_the_journal_shows_the_calls_coloured_and_marked(app: Flask, journal: Journal) -> None:
    html = client_as(app, "viewer").get("/").get_data(as_text=True)
    assert set(row_uuids(html)) == set(journal.uuids.values())
    u = journal.uuids
    assert re.search(rf'class="st-answered dir-inbound too-long" data-uuid="{u["answered"]}"', html)
    assert re.search(rf'class="st-answered dir-inbound" data-uuid="{u["short"]}"', html)
    assert re.search(rf'class="st-missed dir-inbound" data-uuid="{u["missed"]}"', html)
    assert re.search(rf'class="st-{journal.rows["stranger"]["status"]} dir-outbound" data-uuid="{u["stranger"]}"',
                     html)
    assert html.count('<title>Too long</title><use href="#i-too-long"/>') == 1
    assert html.count('<use href="#i-inbound"/>') == 3 and html.count('<use href="#i-outbound"/>') == 1
    assert html.count('<use href="#i-answered"/>') == 2 and html.count('<use href="#i-missed"/>') == 1
    assert "100,000" in html  # the charge of the 61 s call (2 minutes)


@pytest.mark.parametrize(("query", "names"), [
    ("status=missed", ["missed"]),
    ("direction=outbound", ["stranger"]),
    ("too_long=1", ["answered"]),
    ("number=98935", ["stranger"]),
    ("customer=C-1001", ["answered", "short", "missed"]),
    ("status=answered&too_long=1", ["answered"]),
    ("from=2000-01-01&to=2000-01-02", []),
])
def test_filters(app: Flask, journal: Journal, query: str, names: list[str]) -> None:
    html = client_as(app, "viewer").get(f"/?{query}").get_data(as_text=True)
    assert sorted(row_uuids(html)) == sorted(journal.uuids[n] for n in names)


def test_a_bad_filter_is_named(app: Flask) -> None:
    c = client_as(app, "viewer")
    r = c.get("/?from=2024-13-45")
    assert r.status_code == 400
    assert "from: not a date (YYYY-MM-DD, or Solar Hijri YYYY/MM/DD): &#39;2024-13-45&#39;" in r.get_data(as_text=True)
    assert c.get("/?status=lost").status_code == 400
    assert "sort: cannot sort by" in c.get("/?sort=recording").get_data(as_text=True)


def _fa(text: str) -> str:
    return text.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))


def test_bad_new_filter_values_are_named(app: Flask) -> None:
    c = client_as(app, "viewer")
    for query, message in [("missed_cause=lost", "missed_cause: unknown missed cause &#39;lost&#39;"),
                           ("flag=loud", "flag: unknown flag &#39;loud&#39;"),
                           ("min_mos=9", "min_mos: not a MOS between 1 and 5: &#39;9&#39;"),
                           ("max_mos=abc", "max_mos: not a MOS between 1 and 5: &#39;abc&#39;"),
                           ("recording=yes", "recording: 1 (with a recording) or 0 (without), not &#39;yes&#39;"),
                           ("group=week", "group: only by day, not &#39;week&#39;")]:
        page = c.get(f"/?{query}")
        assert page.status_code == 400 and message in page.get_data(as_text=True), query
        export = c.get(f"/calls.csv?{query}")
        assert export.status_code == 400 and message in export.get_data(as_text=True), query
    assert c.get("/?min_mos=" + _fa("4")).status_code == 200  # Persian digits are digits


def test_the_last_search_is_remembered(app: Flask, journal: Journal) -> None:
    c = client_as(app, "viewer")
    c.get("/?status=missed")
    assert row_uuids(c.get("/").get_data(as_text=True)) == [journal.uuids["missed"]]
    assert len(row_uuids(c.get("/?reset=1").get_data(as_text=True))) == 4
    assert len(row_uuids(c.get("/").get_data(as_text=True))) == 4


def test_sort_by_a_column(app: Flask, journal: Journal) -> None:
    c = client_as(app, "viewer")
    talk = {u: journal.store.get_call(u)["talk_seconds"] for u in journal.uuids.values()}
    down = row_uuids(c.get("/?sort=talk_seconds&desc=1").get_data(as_text=True))
    assert [talk[u] for u in down] == sorted(talk.values(), reverse=True)
    up = row_uuids(c.get("/?sort=talk_seconds").get_data(as_text=True))
    assert up == down[::-1]


@pytest.mark.parametrize("sort", ["started_at", "talk_seconds", "status"])
@pytest.mark.parametrize("desc", ["", "1"])
def test_keyset_pages_cover_every_row_once(app: Flask, journal: Journal, monkeypatch: pytest.MonkeyPatch,
                                           sort: str, desc: str) -> None:
    monkeypatch.setattr(views, "PAGE", 1)
    c = client_as(app, "viewer")
    seen: list[str] = []
    url = f"/?sort={sort}&desc={desc}&search=1"
    while url:
        html = c.get(url).get_data(as_text=True)
        seen += row_uuids(html)
        m = re.search(r'id="next-page" href="([^"]+)"', html)
        url = m.group(1).replace("&amp;", "&") if m else ""
    assert len(seen) == len(set(seen)) == 4
    full = journal.store.list_calls(order=sort, descending=bool(desc))
    assert {r["uuid"] for r in full} == set(seen)


def test_csv_export_is_exactly_the_filtered_rows(app: Flask, journal: Journal,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "EXPORT_PAGE", 1)  # several store pages in one stream
    c = client_as(app, "viewer")
    r = c.get("/calls.csv?customer=C-1001")
    assert r.status_code == 200 and r.headers["Content-Disposition"] == "attachment; filename=calls.csv"
    assert r.is_streamed
    text = r.get_data(as_text=True)
    assert not text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(x["uuid"] for x in rows) == sorted(journal.uuids[n] for n in ("answered", "short", "missed"))
    assert text.splitlines()[0] == journal_mod.rows_out([], "csv").rstrip("\n")  # the header fsapp calls writes
    assert len(text.splitlines()) == 4


def test_csv_export_neutralises_formulas_and_has_a_bom_option(app: Flask, journal: Journal) -> None:
    c = client_as(app, "viewer")
    text = c.get("/calls.csv?direction=outbound&bom=1").get_data(as_text=True)
    assert text.startswith("\ufeffuuid,")
    [row] = list(csv.DictReader(io.StringIO(text[1:])))
    assert row["uuid"] == journal.uuids["stranger"]
    assert row["caller"] == "'+989350001111"  # a spreadsheet shows it, does not run it
    assert render.unquote_cell(row["caller"]) == journal.rows["stranger"]["caller"]


# ------------------------------------------------------------------ a call and its recording


def test_the_call_page_shows_modules_identification_and_ledger(app: Flask, journal: Journal) -> None:
    html = client_as(app, "viewer").get(f"/call/{journal.uuids['answered']}").get_data(as_text=True)
    assert "main → paid" in html
    assert "Sara Ahmadi" in html and "VIP" in html
    assert re.search(r'id="charge">100,000 rial', html)
    ledger = html[html.index('id="ledger"'):]
    assert "<td>paid</td><td>1:01</td><td>2</td><td>100,000</td><td>100,000</td>" in ledger
    deliveries = html[html.index('id="deliveries"'):]
    assert '<tr data-kind="invoice"><td>invoice</td><td>delivered</td><td>1</td>' in deliveries
    assert ('<li class="attempt" data-outcome="answered">Target <span class="ltr">ext:1001</span>: answered,'
            ' Ext. 1001, Talk 1:01</li>') in html
    missed = client_as(app, "viewer").get(f"/call/{journal.uuids['missed']}").get_data(as_text=True)
    assert missed.count('<li class="attempt" data-outcome="busy">') == 2  # both targets were busy
    assert 'id="quality"' not in missed  # no CDR came for it
    assert '<section id="analysis" data-state="pending">' in missed and "<svg class=\"timeline" not in missed
    assert client_as(app, "viewer").get("/call/no-such-call").status_code == 404


def test_a_viewer_gets_403_on_a_recording(app: Flask, journal: Journal) -> None:
    c = client_as(app, "viewer")
    uuid = journal.uuids["answered"]
    assert c.get(f"/call/{uuid}/recording").status_code == 403
    assert c.get(f"/call/{uuid}/recording?download=1").status_code == 403
    assert "<audio" not in c.get(f"/call/{uuid}").get_data(as_text=True)
    assert journal.store.get_call(uuid)["downloaded"] is False


def test_playing_inline_serves_ranges_and_sets_no_mark(app: Flask, journal: Journal) -> None:
    c = client_as(app, "reviewer")
    uuid = journal.uuids["answered"]
    data = Path(journal.rows["answered"]["recording"]).read_bytes()
    assert '<audio controls' in c.get(f"/call/{uuid}").get_data(as_text=True)
    whole = c.get(f"/call/{uuid}/recording")
    assert whole.status_code == 200 and whole.data == data and whole.mimetype in ("audio/x-wav", "audio/wav")
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = c.get(f"/call/{uuid}/recording", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.data == data[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    tail = c.get(f"/call/{uuid}/recording", headers={"Range": "bytes=-44"})
    assert tail.status_code == 206 and tail.data == data[-44:]
    assert c.get(f"/call/{uuid}/recording", headers={"Range": f"bytes={len(data) + 5}-"}).status_code == 416
    assert journal.store.get_call(uuid)["downloaded"] is False


def test_downloading_sets_the_mark(app: Flask, journal: Journal) -> None:
    c = client_as(app, "reviewer")
    uuid = journal.uuids["short"]
    r = c.get(f"/call/{uuid}/recording?download=1")
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == f"attachment; filename={uuid}.wav"
    assert journal.store.get_call(uuid)["downloaded"] is True
    assert journal.store.get_call(journal.uuids["answered"])["downloaded"] is False
    assert 'id="downloaded-mark"' in c.get(f"/call/{uuid}").get_data(as_text=True)


def test_a_recording_outside_the_recordings_folder_is_refused(journal: Journal, tmp_path: Path) -> None:
    elsewhere = tmp_path / "rec" / "2099"  # the recordings are under rec/, not under rec/2099
    cfg = dataclasses.replace(journal.cfg, journal=dataclasses.replace(journal.cfg.journal,
                                                                       record_dir=str(elsewhere)))
    c = client_as(create_app(cfg, store=journal.store), "admin")
    r = c.get(f"/call/{journal.uuids['answered']}/recording")
    assert r.status_code == 403 and "outside the recordings folder" in r.get_data(as_text=True)


def test_a_symlink_out_of_the_recordings_folder_is_refused(app: Flask, journal: Journal, tmp_path: Path) -> None:
    path = Path(journal.rows["short"]["recording"])
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not for you")
    path.unlink()
    path.symlink_to(secret)
    r = client_as(app, "admin").get(f"/call/{journal.uuids['short']}/recording")
    assert r.status_code == 403 and b"not for you" not in r.data


def test_the_users_page_is_for_admins(app: Flask) -> None:
    assert client_as(app, "reviewer").get("/users").status_code == 403
    html = client_as(app, "admin").get("/users").get_data(as_text=True)
    assert all(f"<td>{role}</td><td>{role}</td>" in html for role in ("viewer", "reviewer", "admin"))
    assert "scrypt$" not in html


# ------------------------------------------------------------------ Persian first


def test_persian_is_rtl_with_persian_digits_and_solar_hijri_dates(app: Flask, journal: Journal) -> None:
    import jdatetime

    c = app.test_client()
    assert login(c, "viewer").status_code == 302
    html = c.get("/").get_data(as_text=True)
    assert '<html lang="fa" dir="rtl">' in html and "گزارش تماس‌ها" in html
    started = journal.store.get_call(journal.uuids["answered"])["started_at"]
    import datetime as dt

    # The page shows the day in [journal] timezone (the host's zone when unset), not the stored UTC day.
    day = dt.datetime.fromisoformat(started).astimezone(journal.cfg.journal.zone).date()
    jalali = jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d")
    persian = jalali.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    assert persian in html and jalali.startswith("14")
    assert "۱۰۰٬۰۰۰" in html  # the charge in Persian digits
    en = c.get("/?lang=en").get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in en and day.isoformat() in en and persian not in en
    assert '<html lang="en"' in c.get("/").get_data(as_text=True)  # the switch is remembered


def test_the_persian_call_page_punctuates_in_persian(app: Flask, journal: Journal) -> None:
    """Persian's comma and semicolon (U+060C, U+061B) between the timeline's items, not the Latin ones."""
    html = client_as(app, "viewer", lang="fa").get(f"/call/{journal.uuids['answered']}").get_data(as_text=True)
    timeline = html[html.index('id="timeline"'):].split("</ol>", 1)[0]
    attempt = re.search(r'<li class="attempt" data-outcome="answered">(.*?)</li>', timeline)
    assert attempt and "پاسخ داده، داخلی ۱۰۰۱، مکالمه" in attempt.group(1)
    assert re.search(r"پاسخ: [^<]*؛ مکالمه", timeline)  # answered at ...; talk ...
    assert ", " not in timeline and "; " not in timeline
    en = client_as(app, "viewer").get(f"/call/{journal.uuids['answered']}").get_data(as_text=True)
    assert "، " not in en and "؛ " not in en


def test_group_by_day_heads_each_day_with_its_counts(app: Flask, journal: Journal) -> None:
    import jdatetime

    c = client_as(app, "viewer")
    assert '<tr class="day"' not in c.get("/").get_data(as_text=True)
    html = c.get("/?group=day&search=1").get_data(as_text=True)
    days = {instants.local(r["started_at"], journal.cfg.journal.zone).date() for r in journal.rows.values()}
    heads = re.findall(r'<tr class="day" data-day="([^"]+)"', html)
    assert heads == [d.isoformat() for d in sorted(days, reverse=True)]  # newest first, as the rows
    if len(days) == 1:  # not run across midnight
        head = " ".join(html[html.index('<tr class="day"'):].split("</tr>", 1)[0].split())
        assert ('Calls: <span class="n-calls">4</span>, answered: <span class="n-answered">2</span>, missed: '
                '<span class="n-missed">1</span>, Talk: <span class="n-talk">1:21</span>') in head
    assert len(row_uuids(html)) == 4
    fa = client_as(app, "viewer", lang="fa").get("/?group=day&search=1").get_data(as_text=True)
    first = max(days)
    jalali = jdatetime.date.fromgregorian(date=first).strftime("%Y/%m/%d").translate(
        str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    assert re.search(rf'<tr class="day" data-day="{first.isoformat()}"><th colspan="\d+">{jalali} —', fa)


def test_a_days_header_counts_the_whole_day_not_only_the_page(app: Flask, journal: Journal) -> None:
    """Sixty calls on one day, fifty to a page: both pages' headers say sixty (answered 40, talk 20:00)."""
    rows = [(f"day-{i:02}", f"2026-06-15T08:{i:02}:00Z", "answered" if i % 3 else "missed", 30 if i % 3 else 0)
            for i in range(60)]
    journal.store.load_calls(("uuid", "started_at", "status", "talk_seconds"), rows)
    c = client_as(app, "viewer")
    query = "/?group=day&search=1&from=2026-06-15&to=2026-06-15&sort=started_at"
    first = c.get(query).get_data(as_text=True)
    assert len(row_uuids(first)) == 50
    heads = re.findall(r'<tr class="day"[^>]*>.*?</tr>', first, flags=re.S)
    assert len(heads) == 1 and '<span class="n-calls">60</span>' in heads[0]
    assert '<span class="n-answered">40</span>' in heads[0] and '<span class="n-missed">20</span>' in heads[0]
    assert '<span class="n-talk">20:00</span>' in heads[0]
    after = re.search(r'id="next-page" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = c.get(after).get_data(as_text=True)
    assert len(row_uuids(second)) == 10 and '<span class="n-calls">60</span>' in second
    # a filter narrows the day's count too
    missed = c.get(query + "&status=missed").get_data(as_text=True)
    assert '<span class="n-calls">20</span>' in missed


def test_the_ledger_page_is_for_admins_newest_first_by_pages(app: Flask, journal: Journal,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_as(app, "reviewer").get("/ledger").status_code == 403
    c = client_as(app, "admin")
    ids = [r["id"] for r in journal.store.charges()]
    assert len(ids) == 2  # the two answered calls (61 s and 20 s) were charged
    html = c.get("/ledger").get_data(as_text=True)
    assert [int(x) for x in re.findall(r'data-id="(\d+)"', html)] == ids[::-1]
    assert "<td>50,000</td><td>150,000</td>" in html  # the 20 s call, charged after the 61 s one
    monkeypatch.setattr(views, "PAGE", 1)
    first = c.get("/ledger").get_data(as_text=True)
    nxt = re.search(r'id="next-page" href="([^"]+)"', first)
    assert nxt and re.findall(r'data-id="(\d+)"', first) == [str(ids[1])]
    assert re.findall(r'data-id="(\d+)"', c.get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)) == [
        str(ids[0])]
    assert re.findall(r'data-id="(\d+)"', c.get("/ledger?customer=C-9").get_data(as_text=True)) == []
    assert c.get("/ledger?before=x").status_code == 400


def test_a_customer_name_links_to_the_customers_history(app: Flask, journal: Journal) -> None:
    c = client_as(app, "viewer")
    links = set(re.findall(r'class="history" href="([^"]+)">Sara Ahmadi<', c.get("/").get_data(as_text=True)))
    assert len(links) == 1
    history = c.get(links.pop().replace("&amp;", "&")).get_data(as_text=True)
    assert sorted(row_uuids(history)) == sorted(journal.uuids[n] for n in ("answered", "short", "missed"))


def test_persian_dates_filter_in_solar_hijri(app: Flask, journal: Journal) -> None:
    import datetime as dt

    import jdatetime

    days = sorted(dt.date.fromisoformat(r["started_at"][:10]) for r in journal.rows.values())  # midnight-proof

    def persian(day: dt.date) -> str:
        return jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d").translate(
            str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))

    c = client_as(app, "viewer", lang="fa")
    assert len(row_uuids(c.get(f"/?from={persian(days[0])}&to={persian(days[-1])}").get_data(as_text=True))) == 4
    assert row_uuids(c.get(f"/?to={persian(days[0] - dt.timedelta(days=1))}").get_data(as_text=True)) == []
    assert row_uuids(c.get(f"/?from={(days[-1] + dt.timedelta(days=1)).isoformat()}").get_data(as_text=True)) == []
    assert c.get("/?from=1405/13/01").status_code == 400
