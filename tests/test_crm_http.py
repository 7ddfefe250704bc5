"""The http CRM against real local HTTP servers, the Customer shape and the breaker."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import structlog.testing
from pytest_httpserver import HTTPServer
from werkzeug import Response

from fsapp.config import CRMConfig
from fsapp.crm import CRM, CircuitBreaker, CRMError, Customer
from fsapp.crm.http import HttpCRM
from tests.helpers import raw_server

TOKEN = "s3cr3t-t0ken-value"
PIN = "40960"
TIMEOUT = 1.0
CUSTOMER = {
    "id": "cus-7",
    "number": "C-1001",
    "name": "Sara Ahmadi",
    "type": "gold",
    "mobile": "+989121234567",
    "phones": ["+989121234567", "+982188776655"],
    "responsible": {"sales": "1001", "support": "1002", "other": "1003"},
}



@pytest.fixture
def crm(httpserver: HTTPServer) -> Iterator[HttpCRM]:
    client = HttpCRM(httpserver.url_for("/api"), TOKEN, timeout_seconds=TIMEOUT, connect_timeout_seconds=0.5)
    yield client
    client.close()


def api(path: str) -> str:
    return "/api" + path


def last_headers(httpserver: HTTPServer) -> Any:
    return httpserver.log[-1][0].headers


def read_request(conn: socket.socket) -> None:
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def silent(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    stop.wait(10)


def slow_drip(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    while not stop.wait(0.1):
        conn.sendall(b" ")


def late_headers_then_silence(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    stop.wait(TIMEOUT * 0.6)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    stop.wait(10)


def endless_unsized_body(conn: socket.socket, stop: threading.Event) -> None:
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
    block = b"1," * 32768
    sent = 0
    while not stop.is_set() and sent < 10_000_000:
        conn.sendall(block)
        sent += len(block)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fails_within(call: Callable[[], object], limit: float) -> CRMError:
    """Run `call`, assert it raises CRMError before `limit` seconds, return the error."""
    started = time.monotonic()
    with pytest.raises(CRMError) as info:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.2f}s"
    return info.value


# -- happy paths and headers -------------------------------------------------------------


def test_http_crm_satisfies_the_crm_protocol(crm: HttpCRM) -> None:
    """HttpCRM has every method of the CRM interface."""
    assert isinstance(crm, CRM)


def test_find_by_phone_returns_customer_and_sends_bearer(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """GET /customers?phone= with the bearer token gives the full customer."""
    httpserver.expect_request(
        api("/customers"),
        method="GET",
        query_string={"phone": "+989121234567"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).respond_with_json(CUSTOMER)
    customer = crm.find_by_phone("+989121234567")
    assert customer == Customer(
        id="cus-7",
        number="C-1001",
        name="Sara Ahmadi",
        type="gold",
        mobile="+989121234567",
        phones=("+989121234567", "+982188776655"),
        responsible={"sales": "1001", "support": "1002", "other": "1003"},
    )
    assert "Idempotency-Key" not in last_headers(httpserver)


def test_find_by_number_returns_customer(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """GET /customers?number= gives the customer with that number."""
    httpserver.expect_request(
        api("/customers"),
        method="GET",
        query_string={"number": "C-1001"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).respond_with_json(CUSTOMER)
    customer = crm.find_by_number("C-1001")
    assert customer is not None
    assert customer.id == "cus-7"


@pytest.mark.parametrize("operation", ["find_by_phone", "find_by_number"])
def test_lookup_404_is_none(crm: HttpCRM, httpserver: HTTPServer, operation: str) -> None:
    """A 404 on a lookup means no such customer, not a failure."""
    httpserver.expect_request(api("/customers")).respond_with_data("", status=404)
    assert getattr(crm, operation)("+989000000000") is None
    assert crm.breaker.state == "closed"


@pytest.mark.parametrize("answer", [True, False])
def test_verify_pin_posts_pin_and_reads_ok(crm: HttpCRM, httpserver: HTTPServer, answer: bool) -> None:
    """POST /customers/{id}/verify-pin carries the PIN as JSON and returns "ok"."""
    httpserver.expect_request(
        api("/customers/cus-7/verify-pin"),
        method="POST",
        json={"pin": PIN},
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    ).respond_with_json({"ok": answer})
    assert crm.verify_pin("cus-7", PIN) is answer


def test_balance_returns_integer_debt(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """GET /customers/{id}/balance?invoice_type= gives the debt in rial; < 0 is credit."""
    httpserver.expect_request(
        api("/customers/cus-7/balance"),
        method="GET",
        query_string={"invoice_type": "call"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).respond_with_json({"debt": -125000})
    assert crm.balance("cus-7", "call") == -125000


def test_customer_id_is_escaped_in_the_path(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """A customer id cannot add path segments: reserved characters are percent-escaped."""
    httpserver.expect_request(api("/customers/a%2F..%2Fb/balance")).respond_with_json({"debt": 0})
    httpserver.expect_request(api("/customers/a/../b/balance")).respond_with_json({"debt": 1})
    crm.balance("a/../b", "call")
    assert "%2F" in httpserver.log[-1][0].environ["REQUEST_URI"]


def test_register_posts_phone_with_idempotency_key(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """POST /customers {"phone"} returns the new customer; the write carries a key."""
    httpserver.expect_request(
        api("/customers"),
        method="POST",
        json={"phone": "+989121234567"},
        headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "register-+989121234567"},
    ).respond_with_json(CUSTOMER, status=201)
    assert crm.register("+989121234567").number == "C-1001"


def test_create_invoice_sends_key_and_returns_id(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """POST /invoices carries the invoice, the bearer and the given Idempotency-Key."""
    invoice = {
        "customer_id": "cus-7",
        "product_code": "P1",
        "product_name": "Consult",
        "invoice_type": "call",
        "amount": 50000,
        "account": "A1",
        "call_uuid": "u-1",
        "talk_seconds": 61,
    }
    httpserver.expect_request(
        api("/invoices"),
        method="POST",
        json=invoice,
        headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "u-1:invoice"},
    ).respond_with_json({"id": "inv-9"}, status=201)
    assert crm.create_invoice(invoice, "u-1:invoice") == "inv-9"


def test_create_invoice_accepts_numeric_id(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """An integer invoice id comes back as its string form."""
    httpserver.expect_request(api("/invoices")).respond_with_json({"id": 42}, status=201)
    assert crm.create_invoice({"amount": 1}, "u-2:invoice") == "42"


def test_send_payment_link_sends_key(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """POST /payment-links carries the link and the Idempotency-Key; {"sent": true} is ok."""
    link = {"customer_id": "cus-7", "mobile": "+989121234567", "amount": 50000, "account": "A1"}
    httpserver.expect_request(
        api("/payment-links"),
        method="POST",
        json=link,
        headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "u-1:link"},
    ).respond_with_json({"sent": True}, status=201)
    assert crm.send_payment_link(link, "u-1:link") is None


def test_payment_link_not_sent_is_an_error(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """{"sent": false} is a failure, so the caller keeps the link for a retry."""
    httpserver.expect_request(api("/payment-links")).respond_with_json({"sent": False})
    with pytest.raises(CRMError, match="send_payment_link"):
        crm.send_payment_link({"amount": 1}, "u-1:link")


@pytest.mark.parametrize("key", ["", "  ", "a\r\nX-Evil: 1", "کلید"])
def test_bad_idempotency_key_is_refused_before_sending(crm: HttpCRM, httpserver: HTTPServer, key: str) -> None:
    """An empty key or one a header cannot carry is a CRMError and nothing is sent."""
    with pytest.raises(CRMError, match="Idempotency-Key"):
        crm.create_invoice({"amount": 1}, key)
    assert httpserver.log == []


# -- failures ---------------------------------------------------------------------------


def test_connection_refused_is_crm_error() -> None:
    """Nobody listening: CRMError at once, naming the refusal."""
    crm = HttpCRM(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_seconds=TIMEOUT)
    error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert error.operation == "find_by_phone"
    assert "refused" in str(error)


def test_silent_server_times_out() -> None:
    """A server that accepts and never answers fails the call within the timeout."""
    with raw_server(silent) as url:
        crm = HttpCRM(url, TOKEN, timeout_seconds=TIMEOUT)
        error = fails_within(lambda: crm.balance("cus-7", "call"), TIMEOUT + 1)
    assert error.operation == "balance"


def test_slow_drip_body_is_cut_at_the_deadline() -> None:
    """A body dripping a byte at a time cannot hold the call past the overall deadline."""
    with raw_server(slow_drip) as url:
        crm = HttpCRM(url, TOKEN, timeout_seconds=TIMEOUT)
        error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert "within" in error.reason


def test_late_headers_do_not_buy_a_fresh_read_timeout() -> None:
    """After slow headers, the body read waits only for what is left of the deadline."""
    with raw_server(late_headers_then_silence) as url:
        crm = HttpCRM(url, TOKEN, timeout_seconds=TIMEOUT)
        fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 0.35)


def test_500_is_crm_error(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """A server error is a CRMError carrying the status."""
    httpserver.expect_request(api("/customers/cus-7/balance")).respond_with_data("boom", status=500)
    error = fails_within(lambda: crm.balance("cus-7", "call"), TIMEOUT + 1)
    assert error.status == 500
    assert "HTTP 500" in str(error)


def test_429_reports_retry_after(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """Rate limiting is a CRMError whose retry_after holds the server's Retry-After."""
    httpserver.expect_request(api("/customers")).respond_with_data("", status=429, headers={"Retry-After": "7"})
    error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert error.status == 429
    assert error.retry_after == 7.0
    assert "retry after 7s" in str(error)


def test_429_with_http_date_retry_after(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """A Retry-After given as an HTTP date becomes seconds from now."""
    when = datetime.now(UTC) + timedelta(seconds=120)
    httpserver.expect_request(api("/customers")).respond_with_data(
        "", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    with pytest.raises(CRMError) as info:
        crm.find_by_phone("+989121234567")
    assert info.value.retry_after is not None
    assert 100 < info.value.retry_after <= 120


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
def test_client_errors_are_crm_errors(crm: HttpCRM, httpserver: HTTPServer, status: int) -> None:
    """4xx answers other than a lookup's 404 are failures."""
    httpserver.expect_request(api("/customers/cus-7/verify-pin")).respond_with_data("", status=status)
    with pytest.raises(CRMError) as info:
        crm.verify_pin("cus-7", PIN)
    assert info.value.status == status


def test_404_on_a_write_is_an_error(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """Only lookups read 404 as "none"; elsewhere it is a failure."""
    httpserver.expect_request(api("/customers/cus-7/balance")).respond_with_data("", status=404)
    with pytest.raises(CRMError, match="HTTP 404"):
        crm.balance("cus-7", "call")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"<html>proxy error</html>", b"", b"[" * 100_000, b"\xff\xfe\x00"],
    ids=["broken", "html", "empty", "deeply-nested", "binary"],
)
def test_malformed_json_is_crm_error(crm: HttpCRM, httpserver: HTTPServer, body: bytes) -> None:
    """A body that is not JSON is a CRMError naming the operation."""
    httpserver.expect_request(api("/customers")).respond_with_data(body, content_type="application/json")
    error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert error.operation == "find_by_phone"
    assert "malformed JSON" in str(error)


@pytest.mark.parametrize(
    ("path", "call", "body"),
    [
        ("/customers", lambda c: c.find_by_phone("+989121234567"), [CUSTOMER]),
        ("/customers", lambda c: c.find_by_number("C-1001"), {**CUSTOMER, "id": None}),
        ("/customers", lambda c: c.find_by_number("C-1001"), {**CUSTOMER, "phones": "0912"}),
        ("/customers/cus-7/verify-pin", lambda c: c.verify_pin("cus-7", PIN), {"ok": "yes"}),
        ("/customers/cus-7/verify-pin", lambda c: c.verify_pin("cus-7", PIN), {"ok": 1}),
        ("/customers/cus-7/balance", lambda c: c.balance("cus-7", "call"), {"debt": "100"}),
        ("/customers/cus-7/balance", lambda c: c.balance("cus-7", "call"), {"debt": 10.5}),
        ("/customers/cus-7/balance", lambda c: c.balance("cus-7", "call"), {"debt": True}),
        ("/customers/cus-7/balance", lambda c: c.balance("cus-7", "call"), {}),
        ("/customers", lambda c: c.register("+989121234567"), {"id": "x"}),
        ("/invoices", lambda c: c.create_invoice({}, "k"), {"id": ""}),
        ("/invoices", lambda c: c.create_invoice({}, "k"), {"id": None}),
        ("/payment-links", lambda c: c.send_payment_link({}, "k"), {"sent": "true"}),
    ],
    ids=[
        "customer-list",
        "null-id",
        "phones-string",
        "ok-string",
        "ok-int",
        "debt-string",
        "debt-float",
        "debt-bool",
        "debt-missing",
        "register-partial",
        "invoice-empty-id",
        "invoice-null-id",
        "sent-string",
    ],
)
def test_wrong_shape_is_crm_error(
    crm: HttpCRM,
    httpserver: HTTPServer,
    path: str,
    call: Callable[[HttpCRM], object],
    body: object,
) -> None:
    """Valid JSON of the wrong shape is a CRMError naming the operation."""
    httpserver.expect_request(api(path)).respond_with_json(body)
    with pytest.raises(CRMError, match="malformed") as info:
        call(crm)
    assert info.value.operation


def test_ten_megabyte_body_is_refused(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """A declared 10 MB body is refused before it is read."""
    httpserver.expect_request(api("/customers")).respond_with_data(b" " * 10_000_000, content_type="application/json")
    error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert "larger than" in str(error)


def test_unsized_endless_body_is_cut_at_the_limit() -> None:
    """A body without Content-Length is read only up to max_body_bytes."""
    with raw_server(endless_unsized_body) as url:
        crm = HttpCRM(url, TOKEN, timeout_seconds=TIMEOUT, max_body_bytes=100_000)
        error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert "larger than 100000 bytes" in str(error)


def test_redirect_loop_is_not_followed(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """A redirect is a CRMError after one request; the bearer never goes elsewhere."""
    httpserver.expect_request(api("/customers")).respond_with_response(
        Response(status=302, headers={"Location": httpserver.url_for("/api/customers")})
    )
    error = fails_within(lambda: crm.find_by_phone("+989121234567"), TIMEOUT + 1)
    assert "redirect" in str(error)
    assert len(httpserver.log) == 1


# -- circuit breaker -------------------------------------------------------------------


def test_circuit_opens_fails_fast_and_closes_after_cooldown(httpserver: HTTPServer) -> None:
    """N failures open the circuit (fail fast, server untouched); a trial after the cool-down closes it."""
    crm = HttpCRM(
        httpserver.url_for("/api"), TOKEN, timeout_seconds=TIMEOUT, breaker_threshold=3, breaker_cooldown_seconds=0.3
    )
    httpserver.expect_request(api("/customers/cus-7/balance")).respond_with_data("", status=503)
    for _ in range(3):
        with pytest.raises(CRMError, match="HTTP 503"):
            crm.balance("cus-7", "call")
    assert crm.breaker.state == "open"
    error = fails_within(lambda: crm.balance("cus-7", "call"), 0.05)
    assert "circuit open" in str(error)
    assert len(httpserver.log) == 3

    httpserver.clear_all_handlers()
    httpserver.expect_request(api("/customers/cus-7/balance")).respond_with_json({"debt": 5})
    time.sleep(0.35)
    assert crm.balance("cus-7", "call") == 5
    assert crm.breaker.state == "closed"
    assert crm.balance("cus-7", "call") == 5
    assert len(httpserver.log) == 5


def test_prompt_client_errors_do_not_open_the_circuit(httpserver: HTTPServer) -> None:
    """4xx answers show the CRM is up, so they never trip the breaker."""
    crm = HttpCRM(httpserver.url_for("/api"), TOKEN, breaker_threshold=2)
    httpserver.expect_request(api("/customers/cus-7/verify-pin")).respond_with_data("", status=400)
    for _ in range(4):
        with pytest.raises(CRMError, match="HTTP 400"):
            crm.verify_pin("cus-7", PIN)
    assert len(httpserver.log) == 4
    assert crm.breaker.state == "closed"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_half_open_lets_one_trial_and_reopens_on_failure() -> None:
    """Half-open admits a single trial; its failure re-opens for a full cool-down."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown_seconds=10, clock=clock)
    breaker.record_failure()
    breaker.before_call("x")
    breaker.record_failure()
    with pytest.raises(CRMError, match="circuit open") as info:
        breaker.before_call("balance")
    assert info.value.operation == "balance"
    clock.now += 10
    assert breaker.state == "half-open"
    breaker.before_call("x")
    with pytest.raises(CRMError, match="trial"):
        breaker.before_call("x")
    breaker.record_failure()
    clock.now += 9.9
    with pytest.raises(CRMError, match="circuit open"):
        breaker.before_call("x")
    clock.now += 0.1
    breaker.before_call("x")
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call("x")


def test_breaker_counts_only_consecutive_failures() -> None:
    """A success in between resets the count, so scattered failures never open it."""
    breaker = CircuitBreaker(threshold=2, cooldown_seconds=10, clock=FakeClock())
    for _ in range(5):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == "closed"


def test_breaker_frees_a_trial_that_never_reported() -> None:
    """A lost trial call (its greenlet killed) does not keep the circuit shut forever."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    breaker.before_call("x")
    clock.now += 5
    breaker.before_call("x")


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1.0), (True, 1.0), (1, -1.0)])
def test_breaker_rejects_bad_settings(threshold: int, cooldown: float) -> None:
    """Nonsense thresholds and cool-downs are refused, naming the config key."""
    with pytest.raises(ValueError, match=r"crm\.breaker_"):
        CircuitBreaker(threshold, cooldown)


# -- logging and metrics ---------------------------------------------------------------


def test_logs_name_operation_status_and_duration_but_never_secrets(crm: HttpCRM, httpserver: HTTPServer) -> None:
    """crm_request and crm_failed carry operation, status, timing; never token, PIN, body."""
    httpserver.expect_oneshot_request(api("/customers/cus-7/verify-pin")).respond_with_json({"ok": True})
    httpserver.expect_oneshot_request(api("/customers/cus-7/verify-pin")).respond_with_data(
        f"wrong pin {PIN} for token {TOKEN}", status=400
    )
    httpserver.expect_oneshot_request(api("/customers/cus-7/verify-pin")).respond_with_data(
        json.dumps({"ok": PIN}), content_type="application/json"
    )
    with structlog.testing.capture_logs() as logs:
        assert crm.verify_pin("cus-7", PIN) is True
        errors = []
        for _ in range(2):
            with pytest.raises(CRMError) as info:
                crm.verify_pin("cus-7", PIN)
            errors.append(str(info.value))
    requests_logged = [e for e in logs if e["event"] == "crm_request"]
    assert [e["status"] for e in requests_logged] == [200, 400, 200]
    assert all(e["operation"] == "verify_pin" for e in requests_logged)
    assert all(isinstance(e["duration_ms"], float) for e in requests_logged)
    failed = [e for e in logs if e["event"] == "crm_failed"]
    assert len(failed) == 2
    assert all(e["operation"] == "verify_pin" for e in failed)
    assert all(e["reason"] for e in failed)
    text = repr(logs) + repr(errors)
    assert TOKEN not in text
    assert PIN not in text
    assert "wrong pin" not in text


def test_on_result_reports_each_call(httpserver: HTTPServer) -> None:
    """The metrics hook sees every operation with its duration and outcome."""
    seen: list[tuple[str, float, bool]] = []
    crm = HttpCRM(httpserver.url_for("/api"), TOKEN, on_result=lambda op, s, ok: seen.append((op, s, ok)))
    httpserver.expect_oneshot_request(api("/customers")).respond_with_data("", status=404)
    httpserver.expect_oneshot_request(api("/customers")).respond_with_data("", status=502)
    assert crm.find_by_phone("+989121234567") is None
    with pytest.raises(CRMError):
        crm.find_by_phone("+989121234567")
    assert [(op, ok) for op, _, ok in seen] == [("find_by_phone", True), ("find_by_phone", False)]
    assert all(seconds >= 0 for _, seconds, _ in seen)


def test_failing_on_result_hook_does_not_break_the_call(httpserver: HTTPServer) -> None:
    """A broken metrics hook is logged and the CRM answer still comes back."""

    def broken(op: str, seconds: float, ok: bool) -> None:
        raise RuntimeError("metrics down")

    crm = HttpCRM(httpserver.url_for("/api"), TOKEN, on_result=broken)
    httpserver.expect_request(api("/customers/cus-7/balance")).respond_with_json({"debt": 3})
    assert crm.balance("cus-7", "call") == 3


# -- ping ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "up"), [(200, True), (404, True), (401, False), (500, False), (503, False)])
def test_ping(httpserver: HTTPServer, status: int, up: bool) -> None:
    """ping is True when the CRM answers below 500 and accepts the token."""
    crm = HttpCRM(httpserver.url_for("/api"), TOKEN)
    httpserver.expect_request(api("/"), headers={"Authorization": f"Bearer {TOKEN}"}).respond_with_data(
        "", status=status
    )
    assert crm.ping() is up


def test_ping_unreachable_is_false() -> None:
    """ping never raises: an unreachable CRM is simply down."""
    assert HttpCRM(f"http://127.0.0.1:{free_port()}", TOKEN).ping() is False


# -- configuration ---------------------------------------------------------------------


def test_from_config_reads_token_from_environment(httpserver: HTTPServer) -> None:
    """The token comes from the variable token_env names; tuning keys are applied."""
    section = {
        "kind": "http",
        "url": httpserver.url_for("/api"),
        "token_env": "CRM_TOKEN",
        "timeout_seconds": 2,
        "breaker_threshold": 7,
        "region": "IR",
    }
    crm = HttpCRM.from_config(section, environ={"CRM_TOKEN": TOKEN})
    assert crm.timeout_seconds == 2.0
    assert crm.breaker.threshold == 7
    httpserver.expect_request(
        api("/customers/cus-7/balance"), headers={"Authorization": f"Bearer {TOKEN}"}
    ).respond_with_json({"debt": 0})
    assert crm.balance("cus-7", "call") == 0


def test_from_config_accepts_the_config_crm_section(httpserver: HTTPServer) -> None:
    """The parsed [crm] dataclass works as well as a mapping, extras included."""
    section = CRMConfig(
        kind="http",
        url=httpserver.url_for("/api"),
        token_env="CRM_TOKEN",
        timeout_seconds=1.5,
        extra={"max_body_bytes": 10},
    )
    crm = HttpCRM.from_config(section, environ={"CRM_TOKEN": TOKEN})
    assert (crm.timeout_seconds, crm.max_body_bytes) == (1.5, 10)
    httpserver.expect_request(api("/customers")).respond_with_json(CUSTOMER)
    with pytest.raises(CRMError, match="larger than 10 bytes"):
        crm.find_by_phone("+989121234567")


def test_from_config_with_default_crm_section_names_url() -> None:
    """A default (local) CRM section handed to the http kind fails on crm.url."""
    with pytest.raises(ValueError, match="crm.url: missing"):
        HttpCRM.from_config(CRMConfig(), environ={})


@pytest.mark.parametrize(
    ("section", "environ", "message"),
    [
        ({"token_env": "T"}, {"T": "x"}, "crm.url: missing"),
        ({"url": "", "token_env": "T"}, {"T": "x"}, "crm.url: missing"),
        ({"url": "ftp://crm", "token_env": "T"}, {"T": "x"}, "crm.url"),
        ({"url": "crm.example.com", "token_env": "T"}, {"T": "x"}, "crm.url"),
        ({"url": "http://crm"}, {}, "crm.token_env: missing"),
        ({"url": "http://crm", "token_env": "T"}, {}, "crm.token_env: .*T is not set"),
        ({"url": "http://crm", "token_env": "T"}, {"T": " "}, "crm.token_env"),
        ({"url": "http://crm", "token_env": "T", "timeout_seconds": 0}, {"T": "x"}, "crm.timeout_seconds"),
        ({"url": "http://crm", "token_env": "T", "timeout_seconds": "3"}, {"T": "x"}, "crm.timeout_seconds"),
        ({"url": "http://crm", "token_env": "T", "breaker_threshold": 0}, {"T": "x"}, "crm.breaker_threshold"),
        ({"url": "http://crm", "token_env": "T", "max_body_bytes": -1}, {"T": "x"}, "crm.max_body_bytes"),
    ],
)
def test_from_config_errors_name_the_key(section: dict[str, object], environ: dict[str, str], message: str) -> None:
    """Every configuration problem is a ValueError naming the crm.* key at fault."""
    with pytest.raises(ValueError, match=message):
        HttpCRM.from_config(section, environ=environ)


def test_token_is_not_in_repr() -> None:
    """Printing the client or its session auth does not reveal the token."""
    crm = HttpCRM("http://crm.example", TOKEN)
    assert TOKEN not in repr(crm)
    assert TOKEN not in repr(vars(crm))


# -- Customer.from_json ----------------------------------------------------------------


def test_customer_from_json_reads_nulls_and_numeric_extensions() -> None:
    """Null text fields read as "", integer extensions as strings, unknown roles ignored."""
    customer = Customer.from_json(
        {
            "id": "1",
            "number": "",
            "name": None,
            "type": None,
            "mobile": None,
            "responsible": {"sales": 1001, "support": None, "other": "", "boss": "9"},
        }
    )
    assert customer == Customer(id="1", number="", name="", type="", mobile="", responsible={"sales": "1001"})


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "customer",
        {},
        {**CUSTOMER, "id": ""},
        {**CUSTOMER, "id": 7},
        {**CUSTOMER, "number": None},
        {**CUSTOMER, "name": 3},
        {**CUSTOMER, "phones": [1]},
        {**CUSTOMER, "responsible": ["1001"]},
        {**CUSTOMER, "responsible": {"sales": True}},
        {**CUSTOMER, "responsible": {"sales": {"ext": "1"}}},
    ],
)
def test_customer_from_json_rejects_wrong_shapes(data: object) -> None:
    """Anything but the contract's customer object is CRMError("malformed customer: ...")."""
    with pytest.raises(CRMError, match=r"^malformed customer: "):
        Customer.from_json(data)


def test_crm_error_message_names_operation() -> None:
    """CRMError's text starts with the operation; reason and operation stay apart."""
    error = CRMError("HTTP 500", operation="balance", status=500)
    assert str(error) == "balance: HTTP 500"
    assert (error.reason, error.operation, error.status, error.retry_after) == ("HTTP 500", "balance", 500, None)
