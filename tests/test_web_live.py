"""The live page over a real daemon (``fsapp serve`` in its own process) with a call held open
by the stand-in: the call in progress, its customer, module and talk so far, the daemon's
health from its /healthz; and the console served inside ``fsapp serve`` (``[web] in_serve``)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import gevent
import jdatetime
import pytest
import requests

from fsapp import config as configmod
from fsapp import instants
from fsapp.fakefs import Script, run_call
from fsapp.store import Store, open_store
from fsapp.web.app import create_app
from tests import test_billing
from tests.helpers import SARA, paid_line, seed, write_config
from tests.webconsole import PASSWORD, SARA_PHONE, add_users, free_port, fsapp, login

_serve, processes = test_billing._serve, test_billing.processes  # fsapp serve in its own process; its cleanup

HEARTBEAT = "[billing]\nmeter_heartbeat_seconds = 1\n"


def live_config(tmp_path: Path, *, metrics: bool = True, web: str = "") -> Path:
    """The paid line with a 1 s heartbeat; /healthz on a free port; ``web`` lines in [web]."""
    path = write_config(tmp_path, paid_line(link=False), extra=HEARTBEAT + f"\n[web]\nlanguage = \"en\"\n{web}\n")
    if metrics:
        text = path.read_text(encoding="utf-8").replace(
            "command_timeout_seconds = 5", f'command_timeout_seconds = 5\nmetrics_listen = "127.0.0.1:{free_port()}"')
        path.write_text(text, encoding="utf-8")
    return path


def live_page(cfg: configmod.Config) -> str:
    """The live page as a viewer sees it, from a console of its own over ``cfg``."""
    app = create_app(cfg)
    add_users(app.config["FSAPP_STORE"])
    c = app.test_client()
    c.get("/login?lang=en")
    assert login(c, "viewer").status_code == 302
    try:
        return c.get("/live").get_data(as_text=True)
    finally:
        app.config["FSAPP_STORE"].close()


def hold_a_call(store: Store, address: tuple[str, int]) -> tuple[gevent.Greenlet, str]:
    """Sara calls the paid line and talks (in real time); back once a heartbeat has stamped the talk."""
    call = gevent.spawn(run_call, address, Script(caller=SARA_PHONE, bridges=["answer:60:hold"]))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        meters = store.open_meters()
        if meters and meters[0]["bridge_us"] and meters[0]["seen_us"] > meters[0]["bridge_us"]:
            return call, meters[0]["call_uuid"]
        gevent.sleep(0.05)
    call.kill()
    raise AssertionError("the held call was never metered")


def end(call: gevent.Greenlet, store: Store, uuid: str) -> None:
    """The caller goes (the stand-in's socket closes); back once the journal has the call's end."""
    call.kill()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (store.get_call(uuid) or {}).get("status", "active") == "active":
        gevent.sleep(0.05)
    assert store.get_call(uuid)["status"] != "active"


def row_of(html: str, uuid: str) -> str:
    m = re.search(rf'<tr class="st-active[^"]*" data-uuid="{uuid}">(.*?)</tr>', html, re.S)
    assert m, f"no live row for {uuid}"
    return m.group(1)


def field(html: str, key: str) -> str:
    m = re.search(rf'<dd id="{key}"[^>]*>(.*?)</dd>', html, re.S)
    assert m, f"no {key} in the page"
    return re.sub(r"<[^>]+>", "", m.group(1)).strip()


def talk_of(row: str) -> int:
    m = re.search(r'<td class="talk">(\d+):(\d\d)', row)
    assert m, row
    return int(m.group(1)) * 60 + int(m.group(2))


def test_the_live_page_shows_a_held_call_and_the_daemons_health(tmp_path: Path,
                                                               processes: list[subprocess.Popen[bytes]]) -> None:
    path = live_config(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'fsapp.db'}")
    seed(store, SARA.format(debt=0))
    add_users(store)
    proc, address = _serve(path, tmp_path / "serve.log")
    processes.append(proc)
    cfg = configmod.load(path)
    assert cfg.web.daemon_health_url == f"http://{cfg.server.metrics_listen}/healthz"
    app = create_app(cfg, store=store)
    viewer = app.test_client()
    viewer.get("/login?lang=en")
    assert login(viewer, "viewer").status_code == 302

    call, uuid = hold_a_call(store, address)
    page = viewer.get("/live")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and '<meta http-equiv="refresh" content="5">' in html
    assert "<script" not in html and " style=" not in html
    row = row_of(html, uuid)
    started = store.get_call(uuid)["started_at"]
    day, clock = instants.local(started, cfg.journal.zone).strftime("%Y-%m-%d %H:%M:%S").split()
    assert f">{day}</a></td><td>{clock}</td>" in row
    assert SARA_PHONE in row and 'href="/customer/C-1001">Sara Ahmadi</a>' in row and "<td>paid</td>" in row
    meter = store.open_meters()[0]
    stamped = (meter["seen_us"] - meter["bridge_us"]) // 1_000_000
    assert stamped <= talk_of(row) <= stamped + 3  # the last heartbeat's talk, plus the time since it
    assert field(html, "daemon-state") == "● up"
    assert (field(html, "h-live-calls"), field(html, "active-count")) == ("1", "1")
    assert (field(html, "h-failed-writes"), field(html, "h-storage"), field(html, "h-crm")) == ("0", "ok", "ok")
    assert field(html, "outbox") == "0"

    fa = viewer.get("/live?lang=fa").get_data(as_text=True)
    when = instants.local(started, cfg.journal.zone)
    jalali = jdatetime.datetime.fromgregorian(datetime=when.replace(tzinfo=None)).strftime("%Y/%m/%d")
    assert jalali.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")) in row_of(fa, uuid)
    assert "تماس‌های در جریان" in fa and "برقرار" in fa

    end(call, store, uuid)
    html = viewer.get("/live?lang=en").get_data(as_text=True)
    assert f'data-uuid="{uuid}"' not in html and "No call in progress." in html
    assert (field(html, "h-live-calls"), field(html, "active-count")) == ("0", "0")

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    html = viewer.get("/live").get_data(as_text=True)
    assert field(html, "daemon-state") == "● down"
    assert field(html, "health-error").startswith(cfg.web.daemon_health_url + ": ")
    store.close()


def test_the_live_page_without_a_health_endpoint_says_how_to_get_one(tmp_path: Path) -> None:
    cfg = configmod.load(live_config(tmp_path, metrics=False), check_files=False)
    assert cfg.web.daemon_health_url == ""
    html = live_page(cfg)
    assert "set [web] daemon_health_url or [server] metrics_listen" in field(html, "daemon-state")
    assert 'id="live-link" href="/live"' in html


def test_a_health_url_that_is_no_healthz_is_named(tmp_path: Path) -> None:
    """A URL that answers something else than /healthz's JSON: down, and what it answered."""
    from tests.helpers import raw_server

    def not_json(conn: Any, _stop: Any) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")

    with raw_server(not_json) as url:
        cfg = configmod.load(live_config(tmp_path, metrics=False, web=f'daemon_health_url = "{url}/healthz"'),
                             check_files=False)
        html = live_page(cfg)
    assert field(html, "daemon-state") == "● down"
    assert field(html, "health-error").startswith(f"{url}/healthz: HTTP 200, not /healthz JSON")


# ------------------------------------------------------------------ inside fsapp serve


def test_in_serve_serves_the_console_beside_the_calls(tmp_path: Path,
                                                      processes: list[subprocess.Popen[bytes]]) -> None:
    port = free_port()
    path = live_config(tmp_path, metrics=False, web=f'listen = "127.0.0.1:{port}"\nin_serve = true')
    store = open_store(f"sqlite:///{tmp_path / 'fsapp.db'}")
    seed(store, SARA.format(debt=0))
    add_users(store)
    proc, address = _serve(path, tmp_path / "serve.log")
    processes.append(proc)
    base = f"http://127.0.0.1:{port}/"
    s = requests.Session()
    token = re.search(r'name="csrf" value="([^"]+)"', s.get(base + "login", timeout=5).text).group(1)
    assert s.post(base + "login", data={"name": "viewer", "password": PASSWORD, "csrf": token},
                  timeout=5).status_code == 200

    call, uuid = hold_a_call(store, address)
    html = s.get(base + "live", timeout=5).text
    assert 'href="/customer/C-1001">Sara Ahmadi</a>' in row_of(html, uuid)
    # the health is the daemon's own, called in its process: no metrics_listen needed
    assert field(html, "daemon-state") == "● up" and field(html, "h-live-calls") == "1"
    end(call, store, uuid)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "login", timeout=2)
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert '"web_listening"' in log and f"http://127.0.0.1:{port}/" in log
    store.close()


@pytest.mark.parametrize(("web", "message"), [
    ('listen = "127.0.0.1:8084"\nin_serve = true',
     "web.listen: with in_serve = true the console needs a port of its own, but 127.0.0.1:8084 is also server.listen"),
    ('in_serve = "yes"', "web.in_serve: must be bool, not str"),
    ('daemon_health_url = "localhost:9100"', "web.daemon_health_url: must be an http:// or https:// URL"),
])
def test_check_names_bad_in_serve_and_health_keys(tmp_path: Path, web: str, message: str) -> None:
    path = live_config(tmp_path, metrics=False, web=web)
    path.write_text(path.read_text(encoding="utf-8").replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:8084"'),
                    encoding="utf-8")
    proc = fsapp("check", "-c", str(path))
    assert proc.returncode == 2 and f"{path}:{message}" in proc.stderr, proc.stderr


def test_the_same_port_apart_from_serve_is_no_error_and_the_health_url_follows_metrics(tmp_path: Path) -> None:
    path = live_config(tmp_path, metrics=False, web='listen = "127.0.0.1:0"')
    text = path.read_text(encoding="utf-8").replace("command_timeout_seconds = 5",
                                                    'command_timeout_seconds = 5\nmetrics_listen = "0.0.0.0:9100"')
    path.write_text(text, encoding="utf-8")
    cfg = configmod.load(path, check_files=False)
    assert (cfg.web.in_serve, cfg.web.daemon_health_url) == (False, "http://127.0.0.1:9100/healthz")
