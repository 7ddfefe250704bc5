"""The paid line (telephone_bill), rating, the ledger and meters, and case_expert, over a real socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fsapp import billing, customers, ledger
from fsapp import config as configmod
from fsapp.config import Config
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.simulate import wait_idle
from fsapp.store import StorageError, Store, open_store
from tests.helpers import RATE, ROOT, SOUNDS, Daemon, paid_line, write_config

MakeConfig = Callable[..., Config]
StartDaemon = Callable[[Config], Daemon]

PREFIX = f"{SOUNDS}/fa/"
HEADER = "id,number,name,type,phones,mobile,pin,sales,support,other,debt"
SARA = "C-1001,C-1001,Sara Ahmadi,VIP,09121234567,09121234567,1234,1001,1002,1003,{debt}"
SARA_PHONE = "09121234567"
SARA_MOBILE = "+989121234567"
def seed(store: Store, *lines: str) -> None:
    """Fill the local directory from CSV lines, as `fsapp customers import` would."""
    customers.save_rows(store, customers.parse_csv("\n".join([HEADER, *lines]) + "\n"))


def debt_of(store: Store, customer_id: str) -> int:
    row = store.db.one("SELECT debt FROM customers WHERE id = ?", (customer_id,))
    assert row is not None
    return int(row["debt"])


def spoken(fake: FakeFreeSWITCH) -> list[str]:
    """The prompts played, as prompt names."""
    out = []
    for path in fake.prompts():
        assert path.startswith(PREFIX) and path.endswith(".wav"), path
        out.append(path[len(PREFIX):-len(".wav")])
    return out


def bridge_args(fake: FakeFreeSWITCH) -> list[str]:
    return [s.arg for s in fake.steps if s.app == "bridge"]


def last_hangup(fake: FakeFreeSWITCH) -> str:
    hangups = [s.arg for s in fake.steps if s.app == "hangup"]
    return hangups[-1] if hangups else ""


# ------------------------------------------------------------------ rating

RATING = [
    # talk seconds, interval minutes, rial per interval, units, rial
    (0, 1, 50_000, 0, 0),
    (1, 1, 50_000, 1, 50_000),
    (59, 1, 50_000, 1, 50_000),
    (60, 1, 50_000, 1, 50_000),
    (61, 1, 50_000, 2, 100_000),
    (119, 1, 50_000, 2, 100_000),
    (120, 1, 50_000, 2, 100_000),
    (121, 1, 50_000, 3, 150_000),
    (125, 1, 50_000, 3, 150_000),
    (3599, 1, 50_000, 60, 3_000_000),
    (3600, 1, 50_000, 60, 3_000_000),
    (3601, 1, 50_000, 61, 3_050_000),
    (0, 5, 70_000, 0, 0),
    (1, 5, 70_000, 1, 70_000),
    (59, 5, 70_000, 1, 70_000),
    (60, 5, 70_000, 1, 70_000),
    (61, 5, 70_000, 1, 70_000),
    (299, 5, 70_000, 1, 70_000),
    (300, 5, 70_000, 1, 70_000),
    (301, 5, 70_000, 2, 140_000),
    (3599, 5, 70_000, 12, 840_000),
    (3600, 5, 70_000, 12, 840_000),
    (3601, 5, 70_000, 13, 910_000),
    (1, 1, 9_999_999, 1, 9_999_999),
    (61, 1, 9_999_999, 2, 19_999_998),
    (3600, 1, 9_999_999, 60, 599_999_940),
    (3601, 5, 9_999_999, 13, 129_999_987),
    (86_400, 5, 9_999_999, 288, 2_879_999_712),
    (1_000_000, 1, 9_999_999, 16_667, 166_669_983_333),
    (3600, 1, 0, 60, 0),
]


@pytest.mark.parametrize(("seconds", "interval", "per_interval", "units", "amount"), RATING)
def test_rating_table(seconds: int, interval: int, per_interval: int, units: int, amount: int) -> None:
    """Charge = ceil(talk / (60 * interval)) * amount per interval, as exact integers."""
    got_units, got_amount = billing.charge(seconds, interval, per_interval)
    assert (got_units, got_amount) == (units, amount)
    assert type(got_units) is int and type(got_amount) is int


def test_rating_refuses_non_integer_money_and_bad_intervals() -> None:
    """A float or bool amount per interval is refused, and so is an interval below one minute."""
    with pytest.raises(TypeError):
        billing.charge(60, 1, 50_000.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        billing.charge(60, 1, True)
    with pytest.raises(ValueError):
        billing.charge(60, 0, 50_000)
    assert billing.charge(-5, 1, 50_000) == (0, 0)


@pytest.mark.parametrize(
    ("start_us", "end_us", "seconds"),
    [
        (1_700_000_000_000_000, 1_700_000_000_999_999, 0),
        (1_700_000_000_000_000, 1_700_000_001_000_000, 1),
        (1_700_000_000_000_000, 1_700_000_059_999_999, 59),
        (1_700_000_000_000_000, 1_700_000_060_000_000, 60),
        (1_700_000_000_000_000, 1_700_000_060_000_001, 60),
        (1_700_000_000_000_000, 1_700_003_600_000_000, 3600),
        (1_700_000_000_000_000, 1_700_000_000_000_000, 0),
        (1_700_000_060_000_000, 1_700_000_000_000_000, 0),
        (0, 1_700_000_060_000_000, 0),
    ],
)
def test_talk_seconds_from_freeswitch_timestamps(start_us: int, end_us: int, seconds: int) -> None:
    """Talk is whole seconds between microsecond timestamps, rounded down like billsec; 0 when not ordered."""
    assert billing.talk_seconds(start_us, end_us) == seconds


# ------------------------------------------------------------------ the paid line over the socket


def test_debt_above_max_announces_debt_and_goes_to_error_without_bridge(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """Debt one rial above max_debt: debt_prompt and the amount, then error; no bridge, no meter, no charge."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=5_000_001))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:60"])
    assert spoken(fake) == [
        "bill/debt_exceeded", "digits/5", "digits/million", "digits/and", "digits/1", "currency/rial",
    ]
    assert "bridge" not in fake.apps()
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None
    assert row["final_destination"] == "hangup:CALL_REJECTED"
    assert row["modules"] == ["main", "paid"] and row["charge"] == 0
    assert d.store.charges() == [] and d.store.outbox_rows() == [] and d.store.open_meters() == []
    assert debt_of(d.store, "C-1001") == 5_000_001


@pytest.mark.parametrize("debt", [5_000_000, 4_999_999, 0, -300_000])
def test_debt_at_or_below_max_bridges(make_config: MakeConfig, daemon: StartDaemon, debt: int) -> None:
    """Debt at max_debt, below it, none, or a credit: the caller is bridged and charged; no debt prompt."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=debt))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:30"])
    assert spoken(fake) == ["bill/connecting"]
    assert bridge_args(fake) == ["{originate_timeout=20}user/1001@${domain_name}"]
    assert last_hangup(fake) == "NORMAL_CLEARING"
    assert row is not None and row["status"] == "answered" and row["charge"] == RATE
    assert debt_of(d.store, "C-1001") == debt + RATE


@pytest.mark.parametrize("link", [True, False])
def test_answered_bridge_is_charged_with_invoice_and_link(
    make_config: MakeConfig, daemon: StartDaemon, link: bool
) -> None:
    """An answered talk of 61 s is 2 units: a ledger row, the invoice in the outbox, a link only when asked."""
    d = daemon(make_config(paid_line(link=link)))
    seed(d.store, SARA.format(debt=1_250_000))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:61"])
    assert row is not None
    assert row["status"] == "answered" and row["extension"] == "1001"
    assert row["talk_seconds"] == 61 and row["charge"] == 100_000
    assert row["final_destination"] == "hangup:NORMAL_CLEARING"
    [charge] = d.store.charges()
    assert {k: charge[k] for k in ("call_uuid", "module", "customer_id", "talk_seconds", "units", "amount",
                                   "debt_after", "source")} == {
        "call_uuid": fake.uuid, "module": "paid", "customer_id": "C-1001", "talk_seconds": 61, "units": 2,
        "amount": 100_000, "debt_after": 1_350_000, "source": "call",
    }
    assert debt_of(d.store, "C-1001") == 1_350_000
    rows = {r["kind"]: r for r in d.store.outbox_rows()}
    assert set(rows) == ({"invoice", "payment_link"} if link else {"invoice"})
    invoice = rows["invoice"]
    assert invoice["idempotency_key"] == f"{fake.uuid}-paid-invoice"
    assert invoice["payload"] == {
        "customer_id": "C-1001", "product_code": "EXPERT-MIN", "product_name": "Expert consultation",
        "invoice_type": "sales-invoice", "invoice_search_field": "", "amount": 100_000, "account": "acc-main",
        "call_uuid": fake.uuid, "talk_seconds": 61, "units": 2,
    }
    if link:
        assert rows["payment_link"]["idempotency_key"] == f"{fake.uuid}-paid-link"
        assert rows["payment_link"]["payload"] == {
            "customer_id": "C-1001", "mobile": SARA_MOBILE, "amount": 100_000, "account": "acc-main",
            "invoice_type": "sales-invoice", "invoice_search_field": "",
        }
    assert d.store.open_meters() == []


def test_invoice_search_field_goes_to_the_http_crm_with_the_invoice_and_link(
    make_config: MakeConfig, daemon: StartDaemon, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The paid line's invoice_search_field: in the invoice and the link the CRM receives, and in `ledger outbox`."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", "bill-token")
    httpserver.expect_request("/api/customers", method="GET", query_string={"phone": SARA_MOBILE}).respond_with_json(
        {"id": "cus-7", "number": "C-1001", "name": "Sara Ahmadi", "mobile": SARA_MOBILE, "phones": [SARA_MOBILE]})
    httpserver.expect_request("/api/customers/cus-7/balance", method="GET").respond_with_json({"debt": 0})
    received: dict[str, dict[str, Any]] = {}

    def take(kind: str, answer: dict[str, Any]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            received[kind] = json.loads(request.get_data())
            return Response(json.dumps(answer), status=201, content_type="application/json")
        return handler

    httpserver.expect_request("/api/invoices", method="POST").respond_with_handler(take("invoice", {"id": "INV-9"}))
    httpserver.expect_request("/api/payment-links", method="POST").respond_with_handler(
        take("payment_link", {"sent": True}))
    crm = f"""
[crm]
kind = "http"
url = "{httpserver.url_for('/api')}"
token_env = "FSAPP_TEST_CRM_TOKEN"
"""
    cfg = make_config(paid_line(search_field="InvoiceNumber"), extra=crm)
    d = daemon(cfg)
    d.app.outbox.stop()
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:61"])
    assert row is not None and row["charge"] == 100_000
    assert d.app.outbox.run_once() == 2
    assert received["invoice"] == {
        "customer_id": "cus-7", "product_code": "EXPERT-MIN", "product_name": "Expert consultation",
        "invoice_type": "sales-invoice", "invoice_search_field": "InvoiceNumber", "amount": 100_000,
        "account": "acc-main", "call_uuid": fake.uuid, "talk_seconds": 61, "units": 2,
    }
    assert received["payment_link"] == {
        "customer_id": "cus-7", "mobile": SARA_MOBILE, "amount": 100_000, "account": "acc-main",
        "invoice_type": "sales-invoice", "invoice_search_field": "InvoiceNumber",
    }
    listing = subprocess.run([sys.executable, "-m", "fsapp", "ledger", "outbox", "-c", cfg.file, "--format", "json"],
                             capture_output=True, text=True, env=_env(), timeout=60)
    assert listing.returncode == 0, listing.stderr
    shown = {r["kind"]: r for r in json.loads(listing.stdout)}
    assert {k: {f: r[f] for f in ("state", "amount", "invoice_type", "invoice_search_field")}
            for k, r in shown.items()} == {
        "invoice": {"state": "delivered", "amount": 100_000, "invoice_type": "sales-invoice",
                    "invoice_search_field": "InvoiceNumber"},
        "payment_link": {"state": "delivered", "amount": 100_000, "invoice_type": "sales-invoice",
                         "invoice_search_field": "InvoiceNumber"},
    }


@pytest.mark.parametrize("field", ['"Number; drop"', '"1st"'])
def test_bad_invoice_search_field_is_refused_naming_the_key(make_config: MakeConfig, field: str) -> None:
    """invoice_search_field must be a CRM field name: `fsapp check` names the module and the key."""
    with pytest.raises(configmod.ConfigError) as err:
        make_config(paid_line().replace('invoice_search_field = ""', f"invoice_search_field = {field}"))
    assert any(".invoice_search_field: " in p and "must be a CRM field name" in p for p in err.value.problems), \
        err.value.problems


@pytest.mark.parametrize("outcome", ["no-answer", "busy", "unregistered", "failed"])
def test_nobody_answers_means_no_charge_error_and_missed(
    make_config: MakeConfig, daemon: StartDaemon, outcome: str
) -> None:
    """Every target unanswered: both tried in order, nothing charged or queued, error destination, missed."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=[outcome, outcome])
    assert bridge_args(fake) == [
        "{originate_timeout=20}user/1001@${domain_name}", "{originate_timeout=20}user/1002@${domain_name}",
    ]
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None
    assert row["status"] == "missed" and row["charge"] == 0 and row["extension"] == ""
    assert row["final_destination"] == "hangup:CALL_REJECTED"
    assert d.store.charges() == [] and d.store.outbox_rows() == []
    assert d.store.open_meters() == []  # closed at zero, not left for reconcile
    assert debt_of(d.store, "C-1001") == 0


def test_first_target_busy_second_answers_is_charged_once(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """Busy then answered for 90 s: one charge of 2 units, journal extension is the one that answered."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=["busy", "answer:90"])
    assert len(bridge_args(fake)) == 2
    assert row is not None
    assert row["status"] == "answered" and row["extension"] == "1002" and row["talk_seconds"] == 90
    assert row["charge"] == 100_000
    assert [(c["units"], c["amount"]) for c in d.store.charges()] == [(2, 100_000)]
    assert [r["kind"] for r in d.store.outbox_rows()] == ["invoice", "payment_link"]
    assert debt_of(d.store, "C-1001") == 100_000


def test_caller_hanging_up_mid_talk_is_charged_from_freeswitch_timestamps(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """The caller hangs up 125 s into the talk: 3 units from BRIDGE..hangup; the journal says answered."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:125:caller"])
    assert fake.exit_received and fake.hangup_cause == "NORMAL_CLEARING"
    assert "hangup" not in fake.apps()  # the caller ended it, not the daemon
    [charge] = d.store.charges()
    assert (charge["talk_seconds"], charge["units"], charge["amount"]) == (125, 3, 150_000)
    assert row is not None
    assert row["charge"] == 150_000 and row["talk_seconds"] == 125
    assert row["status"] == "answered" and row["extension"] == "1001"
    assert debt_of(d.store, "C-1001") == 150_000
    assert d.store.open_meters() == []


def test_caller_hanging_up_while_it_rings_is_missed_and_not_charged(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """The caller gives up while the first target rings: no charge, the meter closed, journal missed."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=0))
    # apps: answer, playback (connecting), multiset, bridge <- hangs up here
    fake, row = d.call(caller=SARA_PHONE, bridges=["no-answer"], hangup_after=4)
    assert fake.steps[-1].app == "bridge" and fake.steps[-1].result == "caller hung up"
    assert row is not None and row["status"] == "missed" and row["charge"] == 0
    assert d.store.charges() == [] and d.store.open_meters() == []


def test_queue_target_answered_is_charged(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A queue target that an agent answers is charged for the talk until UNBRIDGE."""
    d = daemon(make_config(paid_line(targets='["queue:support"]')))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:181"])
    assert [s.arg for s in fake.steps if s.app == "callcenter"] == ["support@default"]
    assert [(c["talk_seconds"], c["units"], c["amount"]) for c in d.store.charges()] == [(181, 4, 200_000)]
    assert row is not None and row["status"] == "answered" and row["charge"] == 200_000


AFTER_TALK = """
[[modules]]
code = "after"
kind = "menu"
prompt = "menu/main"
options = { "1" = "hangup:NORMAL_CLEARING" }
max_attempts = 1
next = "hangup"
error = "hangup:CALL_REJECTED"
"""


def test_queue_talk_ended_goes_on_to_next_on_the_same_socket(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """The agent hangs up, FreeSWITCH parks the caller (park_after_bridge) and this session plays next.

    The dialplan has a second socket line: had FreeSWITCH resumed it, a second session would
    identify and re-queue the caller. One session, next played, charged once, journal answered."""
    body = paid_line(targets='["queue:support"]').replace('next = "hangup:NORMAL_CLEARING"', 'next = "after"')
    d = daemon(make_config(body + AFTER_TALK))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:61"], dtmf=["1"], after_socket="socket")
    assert [s.arg for s in fake.steps if s.app == "multiset"] == [
        "continue_on_fail=true hangup_after_bridge=false park_after_bridge=true"
    ]
    apps = fake.apps()
    assert apps[apps.index("callcenter") :] == ["callcenter", "play_and_get_digits", "hangup"]
    assert PREFIX + "menu/main.wav" in fake.steps[-2].arg  # next's menu prompt reached the caller
    assert fake.resumed == []  # no second connection for this call
    assert [(c["talk_seconds"], c["units"], c["amount"]) for c in d.store.charges()] == [(61, 2, 100_000)]
    assert row is not None and row["status"] == "answered" and row["extension"] == "agent1@default"
    assert row["charge"] == 100_000 and row["modules"] == ["main", "paid", "after"]
    assert row["hangup_cause"] == "NORMAL_CLEARING" and row["final_destination"] == "hangup:NORMAL_CLEARING"


def test_large_amounts_reach_the_ledger_exactly(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """9,999,999 rial per 5 minutes for an hour and a second: 13 units, 129,999,987 rial, as integers."""
    d = daemon(make_config(paid_line(interval=5, amount=9_999_999, max_debt=10**12)))
    seed(d.store, SARA.format(debt=7))
    _fake, row = d.call(caller=SARA_PHONE, bridges=["answer:3601"])
    [charge] = d.store.charges()
    assert (charge["units"], charge["amount"], charge["debt_after"]) == (13, 129_999_987, 129_999_994)
    assert type(charge["amount"]) is int
    assert row is not None and row["charge"] == 129_999_987
    assert debt_of(d.store, "C-1001") == 129_999_994


def test_second_visit_to_the_paid_line_is_charged_too(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """Talk, back through a menu to the same paid line, talk again: both talks are charged, apart."""
    body = paid_line(targets='["ext:1001"]').replace('next = "hangup:NORMAL_CLEARING"', 'next = "again"') + """
[[modules]]
code = "again"
kind = "menu"
prompt = "menu/main"
options = { "1" = "paid" }
max_attempts = 1
next = "hangup"
error = "hangup:NORMAL_CLEARING"
"""
    d = daemon(make_config(body))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, dtmf=["1", ""], bridges=["answer:65", "answer:10"])
    assert len(bridge_args(fake)) == 2
    assert row is not None and row["modules"] == ["main", "paid", "again", "paid", "again"]
    charges = d.store.charges()
    assert [(c["call_uuid"], c["talk_seconds"], c["units"], c["amount"]) for c in charges] == [
        (fake.uuid, 65, 2, 100_000), (fake.uuid, 10, 1, 50_000),
    ]
    assert row["charge"] == 150_000 and row["talk_seconds"] == 75
    assert debt_of(d.store, "C-1001") == 150_000
    invoices = [r for r in d.store.outbox_rows() if r["kind"] == "invoice"]
    assert [r["payload"]["amount"] for r in invoices] == [100_000, 50_000]
    assert len({r["idempotency_key"] for r in invoices}) == 2


def test_hundred_concurrent_calls_for_one_customer_total_exactly(
    tmp_path: Path, daemon: StartDaemon, store_url: str
) -> None:
    """100 simultaneous billed calls of one customer: the ledger sums to the expected charges, debt grows by it."""
    path = write_config(tmp_path, paid_line(max_debt=10**12))
    default_url = f'url = "sqlite:///{tmp_path / "fsapp.db"}"'
    assert default_url in path.read_text()
    path.write_text(path.read_text().replace(default_url, f'url = "{store_url}"', 1))
    cfg = configmod.load(path, check_files=False)
    d = daemon(cfg)
    seed(d.store, SARA.format(debt=1_250_000))
    talks = [1 + (i * 37) % 400 for i in range(100)]
    expected = [-(-t // 60) * RATE for t in talks]
    peak = [0]

    def watch() -> None:
        while True:
            peak[0] = max(peak[0], len(d.server.calls))
            gevent.sleep(0.001)

    watcher = gevent.spawn(watch)
    calls = [gevent.spawn(run_call, d.address, Script(caller=SARA_PHONE, bridges=[f"answer:{t}"])) for t in talks]
    gevent.joinall(calls, timeout=120)
    wait_idle(d.server, timeout=30)
    watcher.kill()
    assert peak[0] >= 50  # the calls were live together, not one after another
    fakes = [g.value for g in calls]
    assert all(f is not None and f.exit_received and not f.error for f in fakes)
    by_uuid = {c["call_uuid"]: c for c in d.store.charges("C-1001")}
    assert len(by_uuid) == 100
    for fake, talk, amount in zip(fakes, talks, expected, strict=True):
        assert (by_uuid[fake.uuid]["talk_seconds"], by_uuid[fake.uuid]["amount"]) == (talk, amount)
    total = sum(c["amount"] for c in by_uuid.values())
    assert total == sum(expected)
    assert debt_of(d.store, "C-1001") == 1_250_000 + total
    assert sorted(c["debt_after"] for c in by_uuid.values())[-1] == 1_250_000 + total
    assert len({c["debt_after"] for c in by_uuid.values()}) == 100  # each charge saw the one before it
    assert sum(r["charge"] for r in d.store.list_calls()) == total
    assert len([r for r in d.store.outbox_rows() if r["kind"] == "invoice"]) == 100


class _HeldHangup(FakeFreeSWITCH):
    """Holds the daemon's hangup until ``release`` is set: the call stays live meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_hangup = gevent.event.Event()
        self.release = gevent.event.Event()

    def _sendmsg(self, headers: dict[str, str]) -> bool:
        if headers.get("call-command") == "hangup" and not self.release.is_set():
            self.at_hangup.set()
            self.release.wait(10)
        return super()._sendmsg(headers)


def test_a_charge_written_late_while_its_call_is_live_stays_in_the_journal(
    make_config: Callable[..., Config], daemon: Callable[[Config], Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger refuses the charge as the talk ends; it is written while the call is still up; the call's
    final journal row keeps it (it used to write its own zero over it)."""
    d = daemon(make_config(paid_line(link=False)))
    seed(d.store, SARA.format(debt=0))
    refused: list[int] = []
    real_settle = d.store.settle

    def refuse_once(*args: Any, **kwargs: Any) -> Any:
        if not refused:
            refused.append(1)
            raise StorageError("database or disk is full")
        return real_settle(*args, **kwargs)

    monkeypatch.setattr(d.store, "settle", refuse_once)
    fake = _HeldHangup(d.address, Script(caller=SARA_PHONE, bridges=["answer:61"]))
    call = gevent.spawn(fake.run)
    assert fake.at_hangup.wait(10), "the call never reached its hangup"
    assert refused and d.store.charges("C-1001") == []
    assert d.app.flush_settles() == 1  # the database is back while the call is still up
    fake.release.set()
    call.get(timeout=10)
    wait_idle(d.server, timeout=10)
    [charge] = d.store.charges("C-1001")
    assert charge["amount"] == 2 * RATE  # 61 s: two started minutes
    row = d.store.get_call(fake.uuid)
    assert row is not None and row["status"] == "answered" and row["charge"] == 2 * RATE
    assert debt_of(d.store, "C-1001") == 2 * RATE


class _SlowRing(FakeFreeSWITCH):
    """The first bridge rings for `ring` seconds of real time before it is answered."""

    ring = 3.6

    def _app_bridge(self, arg: str, app_uuid: str) -> None:
        if self.ring:
            self._flush()
            gevent.sleep(self.ring)
            self.ring = 0
        super()._app_bridge(arg, app_uuid)


def test_long_ringing_keeps_the_meter_alive(make_config: MakeConfig, daemon: StartDaemon,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconcile while the target rings longer than 3 heartbeats leaves the live meter alone; the talk is charged."""
    d = daemon(make_config(paid_line(), extra="[billing]\nmeter_heartbeat_seconds = 1\n"))
    seed(d.store, SARA.format(debt=0))
    call = gevent.spawn(lambda: _SlowRing(d.address, Script(caller=SARA_PHONE, bridges=["answer:61"])).run())
    deadline = time.monotonic() + 5
    while not d.store.open_meters() and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert d.store.open_meters(), "the meter was not opened"
    gevent.sleep(3.3)
    with monkeypatch.context() as m:  # reconcile as another daemon process on this host would
        m.setattr(ledger.os, "getpid", lambda: 1)
        made = ledger.reconcile(d.store, heartbeat_seconds=1, me="another-daemon:1:1")
    call.join(10)
    wait_idle(d.server)
    assert made == []
    assert [(c["units"], c["amount"], c["source"]) for c in d.store.charges()] == [(2, 100_000, "call")]


def _meter(call_uuid: str, daemon_id: str, opened_at: float, beat_at: float, talk_us: int) -> dict[str, Any]:
    bridge_us = int(opened_at * 1_000_000) + 5_000_000
    return {
        "call_uuid": call_uuid, "module": "paid", "customer_id": "C-1001", "interval_minutes": 1,
        "amount_per_interval": RATE, "product_code": "EXPERT-MIN", "product_name": "Expert consultation",
        "invoice_type": "sales-invoice", "account": "acc-main", "send_payment_link": 0, "mobile": "",
        "target": "", "bridge_us": bridge_us, "seen_us": bridge_us + talk_us, "state": "open",
        "daemon": daemon_id, "opened_at": opened_at, "beat_at": beat_at,
    }


def test_reconcile_settles_a_dead_predecessor_that_had_this_pid(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """Meters of an earlier daemon with this host and pid (a restarted container) are charged at once, and once."""
    d = daemon(make_config(paid_line()))
    seed(d.store, SARA.format(debt=0))
    me = d.app.daemon_id
    host, pid, _started = me.split(":")
    predecessor = f"{host}:{pid}:1"  # same host and pid, an earlier start
    now = time.time()
    d.store.meter_open(_meter("predecessor", predecessor, now - 4000, now - 3990, 95_500_000))
    d.store.meter_open(_meter("predecessor-just-died", predecessor, now - 40, now - 1, 30_000_000))
    d.store.meter_open(_meter("live", me, now, now, 10_000_000))
    d.store.meter_open(_meter("other-host", "elsewhere:77:1", now - 10, now, 10_000_000))
    made = ledger.reconcile(d.store, heartbeat_seconds=15, me=me, now=now)
    assert sorted((c["call_uuid"], c["talk_seconds"], c["units"], c["amount"]) for c in made) == [
        ("predecessor", 95, 2, 100_000),
        ("predecessor-just-died", 30, 1, 50_000),
    ]
    assert sorted(m["call_uuid"] for m in d.store.open_meters()) == ["live", "other-host"]
    assert ledger.reconcile(d.store, heartbeat_seconds=15, me=me, now=now) == []
    later = ledger.reconcile(d.store, heartbeat_seconds=15, me=me, now=now + 60)
    assert [c["call_uuid"] for c in later] == ["other-host"]  # another host: once its heartbeat is stale
    assert [m["call_uuid"] for m in d.store.open_meters()] == ["live"]  # its own live call beats on
    assert debt_of(d.store, "C-1001") == 100_000 + 50_000 + 50_000


# ------------------------------------------------------------------ a daemon killed mid-bridge


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _serve(config_path: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """`fsapp serve` in a subprocess, its log in a file (a full pipe would stall it); wait for the port."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(config_path)], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"server_started"' in line:
                return proc, ("127.0.0.1", int(json.loads(line)["listen"].rsplit(":", 1)[1]))
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise AssertionError("daemon did not start: " + log_path.read_text(errors="replace")[-2000:])


def _reconcile_cli(config_path: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "fsapp", "ledger", "reconcile", "-c", str(config_path)],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.mark.parametrize("recovery", ["reconcile", "restart"])
def test_daemon_killed_mid_bridge_is_charged_once_on_recovery(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], recovery: str
) -> None:
    """SIGKILL 2.5 s into a held bridge, then `ledger reconcile` or a restart: exactly one charge, never two."""
    # With a 1 s heartbeat the last stamp before the kill is 1-3 s of talk (what was
    # stamped is what is charged, to the second), and at a 1-minute interval any talk
    # from 1 to 60 s is exactly one unit: the charge is exactly 77,777 rial whichever
    # beat was last.
    heartbeat = "[billing]\nmeter_heartbeat_seconds = 1\n"
    path = write_config(tmp_path, paid_line(amount=77_777, link=False, search_field="InvoiceNumber"), extra=heartbeat)
    db = tmp_path / "fsapp.db"
    store = open_store(f"sqlite:///{db}")
    seed(store, SARA.format(debt=1_000))
    proc, address = _serve(path, tmp_path / "serve.log")
    processes.append(proc)
    call = gevent.spawn(run_call, address, Script(caller=SARA_PHONE, bridges=["answer:30:hold"]))
    deadline = time.monotonic() + 10
    bridged_at = 0.0
    while time.monotonic() < deadline:
        meters = store.open_meters()
        if not bridged_at and meters and meters[0]["bridge_us"]:
            bridged_at = time.monotonic()
        # killed 2.5 s into the talk, and never before a heartbeat has stamped it
        if bridged_at and time.monotonic() - bridged_at >= 2.5 and meters[0]["seen_us"] > meters[0]["bridge_us"]:
            break
        gevent.sleep(0.02)
    assert bridged_at, "the bridge was never metered"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)  # reaped: a zombie would still look alive to reconcile
    bridged_for = time.monotonic() - bridged_at
    call.kill()

    [left] = store.open_meters()
    recorded = billing.talk_seconds(left["bridge_us"], left["seen_us"])
    assert 1 <= recorded <= max(3, bridged_for + 1), (recorded, bridged_for)
    assert store.charges() == []
    call_uuid = left["call_uuid"]
    journal = store.get_call(call_uuid)
    assert journal is not None and journal["status"] == "active"

    if recovery == "reconcile":
        out = _reconcile_cli(path)
        assert f"{call_uuid} paid: {recorded} s, 77,777 rial" in out
        assert out.strip().endswith("1 open meters reconciled")
        assert _reconcile_cli(path).strip() == "0 open meters reconciled"
        proc2, _ = _serve(path, tmp_path / "serve2.log")
    else:
        proc2, _ = _serve(path, tmp_path / "serve2.log")  # reconciles before it listens
        assert _reconcile_cli(path).strip() == "0 open meters reconciled"
    processes.append(proc2)
    proc2.send_signal(signal.SIGTERM)
    assert proc2.wait(20) == 0
    assert _reconcile_cli(path).strip() == "0 open meters reconciled"

    [charge] = store.charges()
    assert charge["call_uuid"] == call_uuid and charge["source"] == "reconciled"
    assert (charge["talk_seconds"], charge["units"], charge["amount"]) == (recorded, 1, 77_777)
    assert debt_of(store, "C-1001") == 1_000 + 77_777
    assert store.open_meters() == []
    [invoice] = store.outbox_rows()
    assert invoice["kind"] == "invoice" and invoice["idempotency_key"] == f"{call_uuid}-paid-invoice"
    assert (invoice["payload"]["amount"], invoice["payload"]["talk_seconds"]) == (77_777, recorded)
    assert invoice["payload"]["invoice_search_field"] == "InvoiceNumber"  # kept with the meter through the kill
    row = store.get_call(call_uuid)
    assert row is not None and row["status"] == "failed" and row["charge"] == 77_777
    store.close()
    listing = subprocess.run([sys.executable, "-m", "fsapp", "ledger", "-c", str(path), "--format", "json"],
                             capture_output=True, text=True, env=_env(), timeout=60)
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)
    assert {k: entry[k] for k in ("call_uuid", "customer_id", "module", "talk_seconds", "units", "amount", "debt")} \
        == {"call_uuid": call_uuid, "customer_id": "C-1001", "module": "paid", "talk_seconds": recorded, "units": 1,
            "amount": 77_777, "debt": 78_777}


# ------------------------------------------------------------------ case_expert

EXPERT = """
[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
next = "expert"
error = "hangup:UNALLOCATED_NUMBER"

[[modules]]
code = "expert"
kind = "case_expert"
role = "{role}"
ring_seconds = 15
connecting = "expert/connecting"
unavailable = "expert/unavailable"
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""

NO_SUPPORT = "C-1002,C-1002,Sample Customer,active,+989351112233,09351112233,4321,1001,,,0"


@pytest.mark.parametrize(("role", "ext"), [("sales", "1001"), ("support", "1002"), ("other", "1003")])
def test_expert_bridges_to_the_customers_responsible_for_the_role(
    make_config: MakeConfig, daemon: StartDaemon, role: str, ext: str
) -> None:
    """Each role rings that customer's own responsible; answered -> next, journal extension is the expert's."""
    d = daemon(make_config(EXPERT.format(role=role)))
    seed(d.store, SARA.format(debt=0), NO_SUPPORT)
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:42"])
    assert bridge_args(fake) == [f"{{originate_timeout=15}}user/{ext}@${{domain_name}}"]
    assert spoken(fake) == ["expert/connecting"]
    assert last_hangup(fake) == "NORMAL_CLEARING"
    assert row is not None
    assert row["status"] == "answered" and row["extension"] == ext and row["talk_seconds"] == 42
    assert row["final_destination"] == "hangup:NORMAL_CLEARING" and row["modules"] == ["main", "expert"]
    assert row["charge"] == 0 and d.store.charges() == []


def test_expert_answered_then_transferred_stays_answered(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """A person talked, then the flow hands the call back to the dialplan: answered, not transferred."""
    d = daemon(make_config(EXPERT.format(role="sales").replace('next = "hangup:NORMAL_CLEARING"',
                                                                'next = "transfer:9196:public"')))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:42"])
    assert fake.apps()[-1] == "transfer"
    assert row is not None and row["final_destination"] == "transfer:9196:public"
    assert row["status"] == "answered" and row["extension"] == "1001" and row["talk_seconds"] == 42


@pytest.mark.parametrize("outcome", ["no-answer", "busy", "unregistered"])
def test_expert_not_answering_goes_to_error(make_config: MakeConfig, daemon: StartDaemon, outcome: str) -> None:
    """The responsible does not answer or is busy: unavailable prompt, error, journal missed."""
    d = daemon(make_config(EXPERT.format(role="sales")))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=[outcome])
    assert len(bridge_args(fake)) == 1
    assert spoken(fake) == ["expert/connecting", "expert/unavailable"]
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None and row["status"] == "missed" and row["extension"] == ""
    assert row["final_destination"] == "hangup:CALL_REJECTED"


def test_expert_without_responsible_goes_to_error_without_ringing(
    make_config: MakeConfig, daemon: StartDaemon
) -> None:
    """A customer with nobody for the role: unavailable prompt, error, nothing rung."""
    d = daemon(make_config(EXPERT.format(role="support")))
    seed(d.store, NO_SUPPORT)
    fake, row = d.call(caller="09351112233", bridges=["answer:42"])
    assert "bridge" not in fake.apps()
    assert spoken(fake) == ["expert/unavailable"]
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None and row["status"] == "completed" and row["customer_id"] == "C-1002"


def test_expert_for_unidentified_caller_goes_to_error(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """Reached without an identified customer (club skipped): error at once, nothing rung."""
    d = daemon(make_config(EXPERT.format(role="sales"), entry="expert"))
    seed(d.store, SARA.format(debt=0))
    fake, row = d.call(caller=SARA_PHONE, bridges=["answer:42"])
    assert "bridge" not in fake.apps() and spoken(fake) == []
    assert last_hangup(fake) == "CALL_REJECTED"
    assert row is not None and row["modules"] == ["expert"]


def test_caller_hanging_up_on_the_expert_is_journaled_answered(make_config: MakeConfig, daemon: StartDaemon) -> None:
    """The caller ends the talk with the expert: the journal shows answered, the expert's extension and the talk."""
    d = daemon(make_config(EXPERT.format(role="other")))
    seed(d.store, SARA.format(debt=0))
    _fake, row = d.call(caller=SARA_PHONE, bridges=["answer:75:caller"])
    assert row is not None
    assert row["status"] == "answered" and row["extension"] == "1003" and row["talk_seconds"] == 75
