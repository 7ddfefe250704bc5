"""One real browser (Debian's chromium driven by Playwright) through the console served by ``fsapp web``:
log in, see the statistics, filter, open a call, download its recording (the mark appears), switch to Persian."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon
from tests.webconsole import PAID, PASSWORD, add_users, extra, free_port, make_journal, serve

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright (pip install playwright)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"the browser test needs chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def logged_in(pw: Any, url: str, name: str, login: str = "login", **context: Any) -> tuple[Any, Any, list[str]]:
    """Debian's chromium on the console's login page, logged in as ``name``; the console errors it records."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_context(viewport={"width": 1280, "height": 720}, **context).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + login)
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url)
    return browser, page, errors


def test_a_reviewer_finds_plays_and_downloads_a_recording_then_reads_it_in_persian(
    make_config: Callable[..., object], daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    import jdatetime

    cfg = make_config(PAID, extra=extra(tmp_path / "rec", f'listen = "127.0.0.1:{free_port()}"'))
    journal = make_journal(cfg, daemon(cfg))
    add_users(journal.store)
    uuid = journal.uuids["answered"]
    shots = tmp_path / "screenshots"
    with serve(Path(cfg.file)) as url, sync_api.sync_playwright() as pw:
        browser, page, errors = logged_in(pw, url, "reviewer", "login?lang=en", accept_downloads=True)
        assert page.locator("tbody tr[data-uuid]").count() == 4
        page.screenshot(path=str(shots / "journal-en.png"), full_page=True)

        page.click("#stats-link")  # the last seven days: the four calls, drawn as SVG
        page.wait_for_url(url + "stats")
        assert page.locator("#total-calls").inner_text() == "4"
        assert page.locator("#per-day svg g.bar").count() == 7 and page.locator("#per-hour svg g.bar").count() == 24
        page.screenshot(path=str(shots / "stats-en.png"), full_page=True)
        page.goto(url)

        page.select_option("select[name=status]", "answered")
        page.select_option("select[name=recording]", "1")
        page.check("input[name=too_long]")
        page.check("input[name=group]")
        page.click("form#filters button[type=submit]")
        page.wait_for_load_state()
        rows = page.locator("tbody tr[data-uuid]")
        assert rows.count() == 1 and rows.first.get_attribute("data-uuid") == uuid
        assert "st-answered" in (rows.first.get_attribute("class") or "")
        assert page.locator("tbody tr.day .n-calls").inner_text() == "1"
        box = rows.first.locator("td.c-status svg.icon").bounding_box()  # the sprite's icon is drawn, small
        assert box is not None and 8 <= box["width"] <= 24
        assert page.locator("svg.sprite").bounding_box() is None  # the sprite itself is hidden

        rows.first.locator("a").first.click()
        page.wait_for_url(f"{url}call/{uuid}")
        assert page.locator("#modules").inner_text() == "main → paid"
        assert page.locator("audio").count() == 1
        assert page.locator("#downloaded-mark").count() == 0
        with page.expect_download() as info:
            page.click("#download")
        saved = tmp_path / "downloaded.wav"
        info.value.save_as(saved)
        assert saved.read_bytes() == Path(journal.rows["answered"]["recording"]).read_bytes()
        page.reload()
        assert page.locator("#downloaded-mark").is_visible()
        page.screenshot(path=str(shots / "call-en.png"), full_page=True)

        page.click("#lang-switch")
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("dir") == "rtl"
        assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
        started = dt.datetime.fromisoformat(journal.rows["answered"]["started_at"])
        day = started.astimezone(journal.cfg.journal.zone).date()  # the day in [journal] timezone, not UTC's
        jalali = jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d")
        assert page.locator("#started").inner_text().startswith(jalali.translate(str.maketrans(
            "0123456789", "۰۱۲۳۴۵۶۷۸۹")))
        page.screenshot(path=str(shots / "call-fa.png"), full_page=True)
        page.goto(url)
        page.screenshot(path=str(shots / "journal-fa.png"), full_page=True)
        page.goto(url + "stats")
        page.screenshot(path=str(shots / "stats-fa.png"), full_page=True)
        browser.close()
    assert errors == []  # nothing the page did was refused (CSP) or broken
    assert journal.store.get_call(uuid)["downloaded"] is True
    assert all((shots / name).stat().st_size > 1000 for name in ("journal-en.png", "stats-en.png", "call-en.png",
                                                                 "call-fa.png", "stats-fa.png"))
