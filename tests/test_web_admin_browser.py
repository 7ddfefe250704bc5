"""A real browser (Debian's chromium driven by Playwright) through ``fsapp web``: an admin adds a
user with the form, changes their role and removes them; the live page reloads by itself; a
customer's page opens from the journal. Nothing is refused by the Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import Daemon
from tests.test_web_browser import logged_in, sync_api
from tests.webconsole import PAID, add_users, extra, free_port, make_journal, serve


def test_an_admin_manages_users_and_watches_the_live_page(
    make_config: Callable[..., object], daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    cfg = make_config(PAID, extra=extra(tmp_path / "rec", f'listen = "127.0.0.1:{free_port()}"\nlanguage = "en"'))
    journal = make_journal(cfg, daemon(cfg))
    add_users(journal.store)
    with serve(Path(cfg.file)) as url, sync_api.sync_playwright() as pw:
        browser, page, errors = logged_in(pw, url, "admin")

        page.goto(url + "users")
        form = page.locator("form#add-user")
        form.locator("input[name=name]").fill("maryam")
        form.locator("select[name=role]").select_option("reviewer")
        form.locator("input[name=password]").fill("maryam's passphrase")
        form.locator("button[type=submit]").click()
        page.wait_for_url(url + "users")
        assert page.locator("p.done").inner_text() == "User added: maryam"
        row = page.locator('tr[data-user="maryam"]')
        assert row.locator("td").nth(1).inner_text() == "reviewer"
        row.locator("select[name=role]").select_option("admin")
        row.locator("button", has_text="Change role").click()
        page.wait_for_url(url + "users")
        assert page.locator('tr[data-user="maryam"] td').nth(1).inner_text() == "admin"
        page.locator('tr[data-user="maryam"] button', has_text="Remove").click()
        page.wait_for_url(url + "users")
        assert page.locator('tr[data-user="maryam"]').count() == 0
        assert page.locator('tr[data-user="admin"] button', has_text="Remove").count() == 0  # not yourself

        page.click("#live-link")
        page.wait_for_url(url + "live")
        assert page.locator("#live-calls tbody").inner_text().strip() == "No call in progress."
        with page.expect_event("load", timeout=15_000):  # the <meta> refresh, no script
            pass

        page.goto(url)
        page.locator("a.customer").first.click()
        page.wait_for_url(url + "customer/C-1001")
        assert page.locator("#customer-calls tbody tr[data-uuid]").count() == 3
        browser.close()
    assert errors == []
    assert "maryam" not in {u["name"] for u in journal.store.web_users()}
