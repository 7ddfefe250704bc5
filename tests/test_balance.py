"""The balance module over a real socket: the spoken amount, the mobile number, the payment link and its delivery."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fsapp import config as configmod
from fsapp import log as logmod
from fsapp.fakefs import FakeFreeSWITCH
from fsapp.store import StorageError
from tests.helpers import ROOT, SARA, SOUNDS, Daemon, MakeConfig, StartDaemon, balance_flow, seed, write_config

SARA_PHONE = "09121234567"
SARA_MOBILE = "+989121234567"

AMOUNT_1_250_000_FA = [
    "digits/1", "digits/million", "digits/and", "digits/200", "digits/and", "digits/50", "digits/thousand",
    "currency/rial",
]
AMOUNT_1_250_000_EN = ["digits/1", "digits/million", "digits/200", "digits/50", "digits/thousand", "currency/rial"]
AMOUNT_300_000_FA = ["digits/300", "digits/thousand", "currency/rial"]


def names(paths: list[str], language: str = "fa") -> list[str]:
    prefix = f"{SOUNDS}/{language}/"
    out = []
    for path in paths:
        assert path.startswith(prefix) and path.endswith(".wav"), path
        out.append(path[len(prefix):-len(".wav")])
    return out


def spoken(fake: FakeFreeSWITCH, language: str = "fa") -> list[str]:
    """The prompts played, as prompt names."""
    return names(fake.prompts(), language)


def playbacks(fake: FakeFreeSWITCH) -> list[list[str]]:
    """Each playback the daemon ran, as the prompt names it played together."""
    out = []
    for st in fake.steps:
        if st.app == "playback":
            files = st.arg[len("file_string://"):].split("!") if st.arg.startswith("file_string://") else [st.arg]
            out.append(names(files))
    return out


def asked(fake: FakeFreeSWITCH) -> list[tuple[str, str]]:
    """Each digit prompt: (prompt name, what was accepted or 'invalid:...' or '')."""
    out = []
    for st in fake.steps:
        if st.app == "play_and_get_digits":
            out.append((names([st.arg.split(" ")[5]])[0], st.result))
    return out


def last_hangup(fake: FakeFreeSWITCH) -> str:
    hangups = [s.arg for s in fake.steps if s.app == "hangup"]
    return hangups[-1] if hangups else ""


# ------------------------------------------------------------------ what the caller hears


@pytest.mark.parametrize(
    ("debt", "heard", "destination"),
    [
        (1_250_000, ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt"], "NORMAL_CLEARING"),
        (1, ["balance/intro", "balance/balance_is", "digits/1", "currency/rial", "balance/debt"], "NORMAL_CLEARING"),
        (-300_000, ["balance/intro", "balance/balance_is", *AMOUNT_300_000_FA, "balance/credit"], "CALL_REJECTED"),
        (0, ["balance/intro", "balance/no_debt"], "CALL_REJECTED"),
    ],
)
def test_balance_plays_debt_credit_or_no_debt(
    make_config: MakeConfig, daemon: StartDaemon, debt: int, heard: list[str], destination: str
) -> None:
    """Debt: balance_is + amount + debt suffix, then next; credit or no debt: their prompts, then error."""
    d = daemon(make_config(balance_flow()))
    seed(d.store, SARA.format(debt=debt))
    fake, row = d.call(caller=SARA_PHONE)
    assert spoken(fake) == heard
    # The intro and the sentence with the amount are one playback, without gaps.
    assert len(playbacks(fake)) == 1 and playbacks(fake)[0][0] == "balance/intro"
    assert last_hangup(fake) == destination
    assert "bridge" not in fake.apps() and asked(fake) == []
    assert row is not None and row["status"] == "completed" and row["customer_id"] == "C-1001"
    assert row["modules"] == ["main", "balance"]
    assert d.store.outbox_rows() == []


def test_balance_speaks_english_amounts(tmp_path: Path, daemon: StartDaemon) -> None:
    """With [sounds] language = "en" the same debt is spoken in English number prompts."""
    path = write_config(tmp_path, balance_flow())
    path.write_text(path.read_text().replace('language = "fa"', 'language = "en"'))
    d = daemon(configmod.load(path, check_files=False))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, _row = d.call(caller=SARA_PHONE)
    assert spoken(fake, "en") == ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_EN, "balance/debt"]


def test_balance_through_freeswitch_say(tmp_path: Path, daemon: StartDaemon) -> None:
    """With [sounds] say = "mod_say" the amount is FreeSWITCH's own `say` between the prompts."""
    path = write_config(tmp_path, balance_flow())
    path.write_text(path.read_text().replace('language = "fa"', 'language = "fa"\nsay = "mod_say"'))
    d = daemon(configmod.load(path, check_files=False))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=SARA_PHONE)
    played = [(st.app, st.arg) for st in fake.steps if st.app in ("playback", "say")]
    assert [app for app, _ in played] == ["playback", "say", "playback"]
    assert names(played[0][1].removeprefix("file_string://").split("!")) == ["balance/intro", "balance/balance_is"]
    assert names([played[2][1]]) == ["balance/debt"]
    assert played[1][1] == "fa CURRENCY PRONOUNCED 1250000"
    assert row is not None and row["status"] == "completed"


def test_balance_for_unknown_caller_goes_to_error_silently(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """Reached without an identified customer and not anonymous: error, nothing read out."""
    d = daemon(make_config(balance_flow(), entry="balance"))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=SARA_PHONE)
    assert spoken(fake) == []
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None and row["modules"] == ["balance"] and row["customer_id"] == ""


@pytest.mark.parametrize(("caller", "heard", "destination"), [
    (SARA_PHONE, ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt"], "NORMAL_CLEARING"),
    ("+989121234567", ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt"],
     "NORMAL_CLEARING"),
    ("09350000000", [], "CALL_REJECTED"),
])
def test_anonymous_balance_looks_the_caller_up_by_phone(
    make_config: MakeConfig, daemon: StartDaemon, caller: str, heard: list[str], destination: str
) -> None:
    """anonymous: a caller the club never saw is found by caller ID (any form); an unknown number goes to error."""
    d = daemon(make_config(balance_flow(anonymous=True), entry="balance"))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, _row = d.call(caller=caller)
    assert spoken(fake) == heard
    assert last_hangup(fake) == destination


# ------------------------------------------------------------------ the payment link


def test_payment_link_goes_to_the_mobile_on_file(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """send_payment_link without require_mobile: the link for the debt goes to the customer's mobile; link_sent."""
    d = daemon(make_config(balance_flow(link=True)))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, _row = d.call(caller=SARA_PHONE)
    assert spoken(fake) == ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt",
                            "balance/link_sent"]
    assert asked(fake) == []
    [link] = d.store.outbox_rows()
    assert link["kind"] == "payment_link" and link["idempotency_key"] == f"{fake.uuid}-balance-link"
    assert {k: link["payload"][k] for k in ("customer_id", "mobile", "amount", "account")} == {
        "customer_id": "C-1001", "mobile": SARA_MOBILE, "amount": 1_250_000, "account": "acc-main",
    }
    assert d.store.charges() == []  # a balance is read, never charged


def _fsapp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_local_crm_records_the_link_and_says_so(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """The local CRM sends nothing: the outbox row is `recorded`, not `delivered`, and `fsapp check` warns."""
    cfg = make_config(balance_flow(link=True))
    d = daemon(cfg)
    seed(d.store, SARA.format(debt=1_250_000))
    d.call(caller=SARA_PHONE)
    deadline = time.monotonic() + 10
    while d.store.outbox_rows(pending_only=True) and time.monotonic() < deadline:
        d.app.outbox.run_once()
    listing = _fsapp("ledger", "outbox", "-c", str(cfg.file), "--format", "json")
    assert listing.returncode == 0, listing.stderr
    [link] = json.loads(listing.stdout)
    assert link["kind"] == "payment_link" and link["state"] == "recorded"
    check = _fsapp("check", "-c", str(cfg.file))
    assert check.returncode == 0, check.stderr
    assert f"{cfg.file}:modules[1].send_payment_link: warning: the local CRM sends nothing" in check.stderr


def test_check_is_quiet_about_links_a_real_crm_sends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning is the local CRM's: with an HTTP CRM, `fsapp check` says nothing of the link."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", TOKEN)
    crm = '[crm]\nkind = "http"\nurl = "http://127.0.0.1:9/api"\ntoken_env = "FSAPP_TEST_CRM_TOKEN"\n'
    path = write_config(tmp_path, balance_flow(link=True), extra=crm)
    check = _fsapp("check", "-c", str(path))
    assert check.returncode == 0, check.stderr
    assert "send_payment_link" not in check.stderr


@pytest.mark.parametrize("debt", [0, -300_000])
def test_no_payment_link_without_debt(make_config: MakeConfig, daemon: StartDaemon, debt: int) -> None:
    """Nothing owed: no mobile asked for, no link queued, error."""
    d = daemon(make_config(balance_flow(link=True, require_mobile=True)))
    seed(d.store, SARA.format(debt=debt))
    fake, _row = d.call(caller=SARA_PHONE, dtmf=["09127654321", "1"])
    assert asked(fake) == []
    assert "balance/link_sent" not in spoken(fake)
    assert d.store.outbox_rows() == []
    assert last_hangup(fake) == "CALL_REJECTED"


MOBILE_DIGITS = [f"digits/{c}" for c in "09127654321"]
OTHER_DIGITS = [f"digits/{c}" for c in "09351234567"]


def test_require_mobile_reasks_on_bad_number_and_unconfirmed_then_sends_to_it(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """A landline is refused (invalid prompt), a denied read-back is asked again; the confirmed mobile gets the link."""
    d = daemon(make_config(balance_flow(link=True, require_mobile=True)))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=SARA_PHONE, dtmf=["02188776655", "09351234567", "2", "09127654321", "1"])
    assert asked(fake) == [
        ("balance/enter_mobile", "02188776655"),
        ("balance/enter_mobile", "09351234567"),
        ("balance/confirm_mobile", "2"),
        ("balance/enter_mobile", "09127654321"),
        ("balance/confirm_mobile", "1"),
    ]
    assert playbacks(fake) == [
        ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt"],
        ["balance/invalid_mobile"],
        OTHER_DIGITS,
        MOBILE_DIGITS,
        ["balance/link_sent"],
    ]
    assert last_hangup(fake) == "NORMAL_CLEARING"
    [link] = d.store.outbox_rows()
    assert link["payload"]["mobile"] == "+989127654321"
    assert link["payload"]["amount"] == 1_250_000
    assert row is not None and row["status"] == "completed"


def test_require_mobile_with_no_valid_answer_sends_nothing(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """Three wrong tries (too short, no input, a landline): no link queued and no link_sent; the debt was told."""
    d = daemon(make_config(balance_flow(link=True, require_mobile=True)))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, _row = d.call(caller=SARA_PHONE, dtmf=["12", "", "02188776655"])
    assert [a for a, _ in asked(fake)] == ["balance/enter_mobile"] * 3
    assert spoken(fake).count("balance/invalid_mobile") == 2
    assert "balance/link_sent" not in spoken(fake)
    assert d.store.outbox_rows() == []
    assert last_hangup(fake) == "NORMAL_CLEARING"


# ------------------------------------------------------------------ delivery through a CRM that was down

TOKEN = "balance-test-token"
CRM_CUSTOMER = {
    "id": "cus-7",
    "number": "C-1001",
    "name": "Sara Ahmadi",
    "type": "VIP",
    "mobile": SARA_MOBILE,
    "phones": [SARA_MOBILE],
    "responsible": {"sales": "1001"},
}


class LinkEndpoint:
    """POST /payment-links: 503 while `down`, else 201 {"sent": true}; every request is kept."""

    def __init__(self) -> None:
        self.down = False
        self.seen: list[tuple[bool, dict[str, str], dict[str, Any]]] = []

    def __call__(self, request: Request) -> Response:
        self.seen.append((self.down, dict(request.headers), json.loads(request.get_data())))
        if self.down:
            return Response("busy", status=503)
        return Response(json.dumps({"sent": True}), status=201, content_type="application/json")

    def accepted(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, b) for down, h, b in self.seen if not down]


def http_crm(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> tuple[LinkEndpoint, str]:
    """The HTTP CRM knowing Sara (debt 1,250,000) and taking payment links; its [crm] table."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", TOKEN)
    httpserver.expect_request("/api/customers", method="GET", query_string={"phone": SARA_MOBILE}) \
        .respond_with_json(CRM_CUSTOMER)
    httpserver.expect_request("/api/customers/cus-7/balance", method="GET",
                              query_string={"invoice_type": "sales-invoice"}).respond_with_json({"debt": 1_250_000})
    endpoint = LinkEndpoint()
    httpserver.expect_request("/api/payment-links", method="POST").respond_with_handler(endpoint)
    crm = f"""
    [crm]
    kind = "http"
    url = "{httpserver.url_for('/api')}"
    token_env = "FSAPP_TEST_CRM_TOKEN"
    """
    return endpoint, crm


@pytest.mark.parametrize("outage", ["http-503", "closed-port"])
def test_payment_link_queued_while_crm_down_is_delivered_exactly_once(
    make_config: MakeConfig, daemon: StartDaemon, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch,
    outage: str,
) -> None:
    """The CRM refuses the link (503, or nothing listening): it stays queued, backs off, then is sent once."""
    endpoint, crm = http_crm(httpserver, monkeypatch)
    endpoint.down = outage == "http-503"
    extra = crm + """
    timeout_seconds = 2
    connect_timeout_seconds = 0.5

    [billing]
    outbox_retry_seconds = 5
    outbox_max_retry_seconds = 600
    """
    d = daemon(make_config(balance_flow(link=True), extra=extra))
    d.app.outbox.stop()  # driven by hand below, with a clock of our own
    outbox = d.app.outbox

    fake, row = d.call(caller=SARA_PHONE)
    assert spoken(fake)[-1] == "balance/link_sent"  # queued durably before the caller is told
    assert last_hangup(fake) == "NORMAL_CLEARING"
    assert row is not None and row["status"] == "completed"
    [queued] = d.store.outbox_rows(pending_only=True)
    assert queued["kind"] == "payment_link" and queued["attempts"] == 0
    key = f"{fake.uuid}-balance-link"
    assert queued["idempotency_key"] == key

    try:
        if outage == "closed-port":
            httpserver.stop()
        t0 = time.time()
        assert outbox.run_once(now=t0) == 1
        [pending] = d.store.outbox_rows(pending_only=True)
        assert pending["attempts"] == 1 and pending["last_error"]
        assert pending["next_at"] >= t0 + 5  # backed off outbox_retry_seconds
        assert outbox.run_once(now=t0 + 1) == 0  # not due yet: nothing tried
        assert outbox.run_once(now=t0 + 6) == 1
        [pending] = d.store.outbox_rows(pending_only=True)
        assert pending["attempts"] == 2 and pending["next_at"] >= t0 + 10  # doubled
    finally:
        if not httpserver.is_running():
            httpserver.start()
    assert endpoint.accepted() == []
    endpoint.down = False

    assert outbox.run_once(now=t0 + 60) == 1
    assert d.store.outbox_rows(pending_only=True) == []
    for later in (t0 + 3600, t0 + 86_400):
        assert outbox.run_once(now=later) == 0  # delivered rows are never sent again
    [(headers, body)] = endpoint.accepted()
    assert headers["Idempotency-Key"] == key
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert {k: body[k] for k in ("customer_id", "mobile", "amount", "account")} == {
        "customer_id": "cus-7", "mobile": SARA_MOBILE, "amount": 1_250_000, "account": "acc-main",
    }
    assert {h["Idempotency-Key"] for _down, h, _b in endpoint.seen} == {key}  # every retry carried the same key
    [done] = d.store.outbox_rows()
    assert done["delivered_at"] is not None and done["attempts"] == 3 and done["last_error"] == ""


def test_crm_lines_logged_during_a_call_carry_its_uuid(
    make_config: MakeConfig, daemon: StartDaemon, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CRM client knows nothing of calls, yet its lines in a call's greenlet name it; the outbox's do not."""
    endpoint, extra = http_crm(httpserver, monkeypatch)
    saved = structlog.get_config()
    buf = io.StringIO()
    logmod.configure("info", json=True, stream=buf)
    try:
        d = daemon(make_config(balance_flow(link=True), extra=extra))
        d.app.outbox.stop()
        fake, row = d.call(caller=SARA_PHONE)
        assert row is not None and row["status"] == "completed"
        assert d.app.outbox.run_once() == 1
    finally:
        structlog.configure(**saved)
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    crm = {line["operation"]: line for line in lines if line["event"] == "crm_request"}
    assert crm["find_by_phone"]["uuid"] == fake.uuid and crm["balance"]["uuid"] == fake.uuid
    assert "uuid" not in crm["send_payment_link"]  # the outbox worker's: no call of its own
    assert endpoint.accepted()


class FakeClock:
    """``time.time`` for the outbox worker, moved on by the CRM stand-in instead of by waiting."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _queued_invoices(d: Any, n: int, at: float) -> Any:
    """``d`` with its outbox worker stopped (the test runs it) and ``n`` invoices k0, k1, ... queued at ``at``."""
    d.app.outbox.stop()
    for i in range(n):
        assert d.store.outbox_add("invoice", f"k{i}", {"amount": i}, at)
    return d


def test_outbox_marks_deliveries_together_within_mark_within(
    make_config: MakeConfig, daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's deliveries are marked in one transaction; a slow CRM never holds a mark past mark_within."""
    clock = FakeClock(time.time())
    d = _queued_invoices(daemon(make_config(balance_flow())), 6, clock.t)
    outbox = d.app.outbox
    monkeypatch.setattr("fsapp.outbox.time.time", clock)

    batches: list[list[int]] = []
    real_mark = d.store.outbox_delivered_many

    def spy_mark(worker: str, rows: list[tuple[int, str, float]]) -> int:
        batches.append([row_id for row_id, _result, _at in rows])
        return real_mark(worker, rows)

    pending_when_sent: dict[str, set[str]] = {}

    def slow_invoice(invoice: dict[str, Any], key: str) -> str:
        pending_when_sent[key] = {r["idempotency_key"] for r in d.store.outbox_rows(pending_only=True)}
        clock.t += 0.15  # each delivery takes 150 ms of the worker's clock
        return f"inv-{key}"

    monkeypatch.setattr(d.store, "outbox_delivered_many", spy_mark)
    monkeypatch.setattr(d.app.crm, "create_invoice", slow_invoice)

    outbox.mark_within = 10.0
    assert outbox.run_once(now=clock.t) == 6
    assert len(batches) == 1 and len(batches[0]) == 6  # one transaction for the whole run
    assert d.store.outbox_rows(pending_only=True) == []
    results = {r["idempotency_key"]: r["result"] for r in d.store.outbox_rows()}
    assert results == {f"k{i}": f"inv-k{i}" for i in range(6)}

    for i in range(6, 12):
        assert d.store.outbox_add("invoice", f"k{i}", {"amount": i}, clock.t)
    batches.clear()
    outbox.mark_within = 0.25
    assert outbox.run_once(now=clock.t) == 6
    # k6 is delivered at 0.15, k8 at 0.45: before k9 goes, k6's delivery is 0.30 s old, so k6-k8 are marked.
    assert [len(b) for b in batches] == [3, 3]
    assert pending_when_sent["k9"] == {"k9", "k10", "k11"}
    assert d.store.outbox_rows(pending_only=True) == []


def test_outbox_mark_that_fails_is_delivered_again_under_the_same_key(
    make_config: MakeConfig, daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses the mark: the rows stay leased and queued, and go again, same key, once the lease ends."""
    t0 = time.time()
    d = _queued_invoices(daemon(make_config(balance_flow())), 2, t0)
    outbox = d.app.outbox
    sent: list[str] = []

    def invoice(payload: dict[str, Any], key: str) -> str:
        sent.append(key)
        return f"inv-{key}"

    def refuse(worker: str, rows: list[tuple[int, str, float]]) -> int:
        raise StorageError("disk I/O error")

    monkeypatch.setattr(d.app.crm, "create_invoice", invoice)
    with monkeypatch.context() as m:
        m.setattr(d.store, "outbox_delivered_many", refuse)
        with pytest.raises(StorageError):
            outbox.run_once(now=t0)
    assert sent == ["k0", "k1"]
    assert {r["idempotency_key"] for r in d.store.outbox_rows(pending_only=True)} == {"k0", "k1"}
    assert outbox.run_once(now=t0 + 1) == 0  # still leased to this worker
    assert outbox.run_once(now=t0 + 61) == 2  # the lease ended: delivered again
    assert sent == ["k0", "k1", "k0", "k1"]
    assert d.store.outbox_rows(pending_only=True) == []


@pytest.mark.parametrize("failure", ["http-500", "too-slow"])
def test_balance_crm_failure_goes_to_error_within_the_timeout(
    make_config: MakeConfig, daemon: StartDaemon, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """The CRM fails or is slower than its timeout on the balance: error at once, no amount, journal failed."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", TOKEN)
    httpserver.expect_request("/api/customers", method="GET", query_string={"phone": SARA_MOBILE}) \
        .respond_with_json(CRM_CUSTOMER)

    def balance(request: Request) -> Response:
        if failure == "too-slow":
            time.sleep(1.5)
            return Response(json.dumps({"debt": 1_250_000}), status=200, content_type="application/json")
        return Response("boom", status=500)

    httpserver.expect_request("/api/customers/cus-7/balance", method="GET").respond_with_handler(balance)
    extra = f"""
    [crm]
    kind = "http"
    url = "{httpserver.url_for('/api')}"
    token_env = "FSAPP_TEST_CRM_TOKEN"
    timeout_seconds = 0.5
    connect_timeout_seconds = 0.5
    """
    d = daemon(make_config(balance_flow(link=True), extra=extra))
    started = time.monotonic()
    fake, row = d.call(caller=SARA_PHONE)
    assert time.monotonic() - started < 1.4  # the caller was not held for the CRM's 1.5 s
    assert spoken(fake) == []
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None and row["status"] == "failed" and row["customer_id"] == "cus-7"
    assert d.store.outbox_rows() == []


# ------------------------------------------------------------------ anonymous mode: callers who are not customers

STRANGER = "02155550000"  # a landline no customer has
STRANGER_E164 = "+982155550000"
INVOICE_AMOUNT = 450_000


def fsapp_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """One ``fsapp`` command line, as an operator types it."""
    return subprocess.run([sys.executable, "-m", "fsapp", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=False)


def anonymous_flow(**kw: Any) -> str:
    """The balance as the entry module, anonymous, asking for a mobile and sending links."""
    return balance_flow(anonymous=True, require_mobile=True, link=True, amount=INVOICE_AMOUNT,
                        search_field="InvoiceNumber", **kw)


def link_crm(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> tuple[LinkEndpoint, str]:
    """The HTTP CRM knowing nobody by the stranger's caller ID or mobile, taking payment links."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", TOKEN)
    for phone in (STRANGER_E164, "+989127654321"):
        httpserver.expect_request("/api/customers", method="GET", query_string={"phone": phone}) \
            .respond_with_data("no such customer", status=404)
    endpoint = LinkEndpoint()
    httpserver.expect_request("/api/payment-links", method="POST").respond_with_handler(endpoint)
    return endpoint, f"""
    [crm]
    kind = "http"
    url = "{httpserver.url_for('/api')}"
    token_env = "FSAPP_TEST_CRM_TOKEN"
    """


def test_unknown_caller_types_a_mobile_and_one_link_for_invoice_amount_is_delivered_once(
    tmp_path: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller the CRM knows neither by caller ID nor by mobile: a link for invoice_amount, link_sent, next.

    The CRM is down at first; the daemon is restarted; the new one sends the very request
    the first one queued, under the same key, once.
    """
    endpoint, crm = link_crm(httpserver, monkeypatch)
    endpoint.down = True
    cfg = configmod.load(write_config(tmp_path, anonymous_flow(), entry="balance", extra=crm), check_files=False)
    first = Daemon(cfg)
    try:
        first.app.outbox.stop()
        fake, row = first.call(caller=STRANGER, dtmf=["09127654321", "1"])
        assert asked(fake) == [("balance/enter_mobile", "09127654321"), ("balance/confirm_mobile", "1")]
        assert playbacks(fake) == [["balance/intro"], MOBILE_DIGITS, ["balance/link_sent"]]
        assert last_hangup(fake) == "NORMAL_CLEARING"  # next
        assert row is not None and row["status"] == "completed" and row["customer_id"] == ""
        assert (row["auth_method"], row["auth_result"]) == ("mobile", "unknown_mobile")
        [queued] = first.store.outbox_rows()
        key = f"{fake.uuid}-balance-link"
        assert queued["idempotency_key"] == key
        assert queued["payload"] == {
            "customer_id": "", "mobile": "+989127654321", "amount": INVOICE_AMOUNT, "account": "acc-main",
            "invoice_type": "sales-invoice", "invoice_search_field": "InvoiceNumber", "call_uuid": fake.uuid,
        }
        assert first.app.outbox.run_once() == 1  # refused: 503
        assert endpoint.accepted() == [] and len(endpoint.seen) == 1
    finally:
        first.stop()

    endpoint.down = False
    second = Daemon(cfg)  # the restart: a new daemon on the same database
    try:
        second.app.outbox.stop()
        later = time.time() + 3600
        assert second.app.outbox.run_once(now=later) == 1
        assert second.app.outbox.run_once(now=later + 86_400) == 0  # delivered rows never go again
        [done] = second.store.outbox_rows()
        assert done["delivered_at"] is not None and done["attempts"] == 2
    finally:
        second.stop()
    [(headers, body)] = endpoint.accepted()
    assert headers["Idempotency-Key"] == key
    assert body == queued["payload"]  # the same request the first daemon tried
    assert [b for _down, _h, b in endpoint.seen] == [body, body]


@pytest.mark.parametrize("typed", ["09121234567", "00989121234567"])
def test_mobile_of_a_customer_gets_their_balance_and_link(
    make_config: MakeConfig, daemon: StartDaemon, typed: str,
) -> None:
    """The typed mobile (national or 0098 form) belongs to a customer: their balance as usual, the link to it."""
    cfg = make_config(anonymous_flow(), entry="balance")
    d = daemon(cfg)
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=STRANGER, dtmf=[typed, "1"])
    assert asked(fake) == [("balance/enter_mobile", typed), ("balance/confirm_mobile", "1")]
    assert playbacks(fake) == [
        ["balance/intro"],  # led the prompt for the mobile; not played again
        [f"digits/{c}" for c in SARA_PHONE],
        ["balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt"],
        ["balance/link_sent"],
    ]
    assert last_hangup(fake) == "NORMAL_CLEARING"
    assert row is not None and row["customer_id"] == "C-1001" and row["customer_name"] == "Sara Ahmadi"
    assert (row["auth_method"], row["auth_result"]) == ("mobile", "ok")
    [link] = d.store.outbox_rows()
    assert {k: link["payload"][k] for k in ("customer_id", "mobile", "amount", "invoice_search_field")} == {
        "customer_id": "C-1001", "mobile": SARA_MOBILE, "amount": 1_250_000, "invoice_search_field": "InvoiceNumber",
    }
    view = fsapp_cli("ledger", "outbox", "-c", cfg.file, "--format", "json")
    assert view.returncode == 0, view.stderr
    [shown] = json.loads(view.stdout)
    assert {k: shown[k] for k in ("kind", "amount", "invoice_type", "invoice_search_field")} == {
        "kind": "payment_link", "amount": 1_250_000, "invoice_type": "sales-invoice",
        "invoice_search_field": "InvoiceNumber",
    }


def test_customer_found_by_typed_mobile_is_not_identified_for_the_next_module(
    make_config: MakeConfig, daemon: StartDaemon,
) -> None:
    """A typed mobile is no proof of identity: a case expert after the balance does not get the customer."""
    body = anonymous_flow().replace('next = "hangup:NORMAL_CLEARING"', 'next = "expert"', 1) + """
[[modules]]
code = "expert"
kind = "case_expert"
role = "sales"
next = "hangup:NORMAL_CLEARING"
error = "hangup:NO_ROUTE_DESTINATION"
"""
    d = daemon(make_config(body, entry="balance"))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=STRANGER, dtmf=[SARA_PHONE, "1"], bridges=["answer:5"])
    assert "bridge" not in fake.apps()  # Sara's sales person (1001) is not rung for a stranger
    assert last_hangup(fake) == "NO_ROUTE_DESTINATION"
    assert row is not None and row["customer_id"] == "C-1001" and row["modules"] == ["balance", "expert"]


def test_unknown_caller_re_enters_a_wrong_mobile_before_the_link(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A landline, then a denied read-back, then the confirmed mobile: one link, to the confirmed number."""
    d = daemon(make_config(anonymous_flow(), entry="balance"))
    fake, row = d.call(caller=STRANGER, dtmf=["02188776655", "09351234567", "2", "09127654321", "1"])
    assert [a for a, _ in asked(fake)] == ["balance/enter_mobile", "balance/enter_mobile", "balance/confirm_mobile",
                                           "balance/enter_mobile", "balance/confirm_mobile"]
    assert playbacks(fake) == [["balance/intro"], ["balance/invalid_mobile"], OTHER_DIGITS, MOBILE_DIGITS,
                               ["balance/link_sent"]]
    [link] = d.store.outbox_rows()
    assert (link["payload"]["mobile"], link["payload"]["amount"]) == ("+989127654321", INVOICE_AMOUNT)
    assert row is not None and row["status"] == "completed"


def test_unknown_caller_without_a_confirmed_mobile_goes_to_error_with_no_link(
    make_config: MakeConfig, daemon: StartDaemon,
) -> None:
    """max_attempts tries without a confirmed mobile: no link, no link_sent, error."""
    d = daemon(make_config(anonymous_flow(), entry="balance"))
    fake, row = d.call(caller=STRANGER, dtmf=["", "12", "09127654321", "2"])
    assert [a for a, _ in asked(fake)].count("balance/enter_mobile") == 3
    assert "balance/link_sent" not in spoken(fake)
    assert d.store.outbox_rows() == []
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None and row["customer_id"] == ""


# The call's apps: 1 answer, 2 intro, 3 the mobile asked, 4 read back, 5 the confirmation, 6 link_sent.
@pytest.mark.parametrize("hangup_after", [3, 4, 5])
def test_caller_who_hangs_up_during_the_mobile_entry_is_abandoned_and_sent_no_link(
    make_config: MakeConfig, daemon: StartDaemon, hangup_after: int,
) -> None:
    """Hung up while typing, during the read-back or at the confirmation: abandoned, nothing queued."""
    d = daemon(make_config(anonymous_flow(), entry="balance"))
    fake, row = d.call(caller=STRANGER, dtmf=["09127654321", "1"], hangup_after=hangup_after)
    assert fake.apps()[-1] == ["answer", "playback", "play_and_get_digits", "playback",
                               "play_and_get_digits"][hangup_after - 1]
    assert d.store.outbox_rows() == []
    assert row is not None and row["status"] == "abandoned"


def test_caller_who_hangs_up_while_told_the_link_was_sent_still_gets_it_once(
    make_config: MakeConfig, daemon: StartDaemon,
) -> None:
    """The link is queued before link_sent plays: a hangup during that prompt keeps the one link."""
    d = daemon(make_config(anonymous_flow(), entry="balance"))
    fake, row = d.call(caller=STRANGER, dtmf=["09127654321", "1"], hangup_after=6)
    assert spoken(fake)[-1] == "balance/link_sent"
    [link] = d.store.outbox_rows()
    assert link["payload"]["amount"] == INVOICE_AMOUNT
    assert row is not None and row["status"] == "abandoned"


def test_known_caller_in_anonymous_mode_is_not_asked_who_they_are(
    make_config: MakeConfig, daemon: StartDaemon,
) -> None:
    """Found by caller ID: the balance as usual; the link's mobile is still asked (require_mobile)."""
    d = daemon(make_config(anonymous_flow(), entry="balance"))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=SARA_PHONE, dtmf=["09127654321", "1"])
    assert playbacks(fake)[0] == ["balance/intro", "balance/balance_is", *AMOUNT_1_250_000_FA, "balance/debt"]
    [link] = d.store.outbox_rows()
    assert (link["payload"]["customer_id"], link["payload"]["amount"]) == ("C-1001", 1_250_000)
    assert row is not None and row["auth_method"] == ""


ANON_BAD = {
    "no require_mobile": ({"require_mobile": "false"},
                          "modules[1].require_mobile: needed when anonymous and send_payment_link are on"),
    "no invoice_amount": ({"invoice_amount": "0"},
                          "modules[1].invoice_amount: needed when anonymous and send_payment_link are on"),
    "negative amount": ({"invoice_amount": "-5"}, "modules[1].invoice_amount: must be at least 0, not -5"),
    "huge amount": ({"invoice_amount": "100000000001"}, "modules[1].invoice_amount: at most 100000000000 rial"),
    "fractional amount": ({"invoice_amount": "4500.5"}, "modules[1].invoice_amount: must be int, not float"),
    "bad search field": ({"invoice_search_field": '"Number; drop"'},
                         "modules[1].invoice_search_field: 'Number; drop' must be a CRM field name"),
}


@pytest.mark.parametrize("case", sorted(ANON_BAD))
def test_check_names_what_anonymous_links_need(tmp_path: Path, case: str) -> None:
    """`fsapp check` refuses anonymous + send_payment_link without require_mobile or an amount, naming the key."""
    changes, expected = ANON_BAD[case]
    body = anonymous_flow()
    for key, value in changes.items():
        body = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", body)
    path = write_config(tmp_path, body)
    proc = fsapp_cli("check", "-c", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert any(line.startswith(f"{path}:{expected}") for line in proc.stderr.splitlines()), proc.stderr


def test_sample_config_serves_a_caller_who_is_not_a_customer(tmp_path: Path) -> None:
    """The shipped sample's menu key 3: a stranger types a mobile and is sent the sample's invoice_amount."""
    sim = fsapp_cli("simulate", "--caller", STRANGER, "--dtmf", "3,09127654321,1", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    assert "ask     balance/enter_mobile -> keys 09127654321" in sim.stdout
    assert "play    balance/link_sent" in sim.stdout
    view = fsapp_cli("ledger", "outbox", "--format", "json", cwd=tmp_path)
    [row] = json.loads(view.stdout)
    assert {k: row[k] for k in ("kind", "state", "amount", "invoice_type", "invoice_search_field")} == {
        "kind": "payment_link", "state": "recorded", "amount": 500_000, "invoice_type": "invoice",
        "invoice_search_field": "Number",
    }  # the sample's local CRM sends nothing: the outbox says so
