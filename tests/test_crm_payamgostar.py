"""The payamgostar CRM over real HTTP against a local stand-in of Payamgostar's web services."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog.testing

from fsapp import journal
from fsapp.config import ConfigError, CRMConfig
from fsapp.crm import CRM, CRMError, Customer
from fsapp.crm.payamgostar import PayamgostarCRM
from tests.helpers import HANGUP_MENU, balance_flow
from tests.payamgostar_standin import PayamgostarStandIn, _soap_fault

TIMEOUT = 1.0
PIN = "40960"
TS_KEY = "fs-main"
CALL_UUID = "5f0c2f5e-1d7a-4a53-9c39-0a5f4c1e2b77"


@pytest.fixture
def pg() -> Iterator[PayamgostarStandIn]:
    standin = PayamgostarStandIn().start()
    standin.add_user("sara.sales", {TS_KEY: ["1001"]})
    standin.add_user("reza.support", {"old-pbx": ["77"], TS_KEY: ["1002", "1012"]})
    standin.add_user("mina.other", {TS_KEY: ["1003"]})
    standin.add_user("no.phone", {})
    yield standin
    standin.stop()


@pytest.fixture
def sara(pg: PayamgostarStandIn) -> str:
    return pg.add_identity(
        "Sara Ahmadi",
        phones=["0912-123-4567", "+98 21 8877 6655"],
        customer_number="C-1001",
        classification="gold",
        balance="-25000.0000",
        sale="sara.sales",
        support="reza.support",
        other="mina.other",
        extended={"PhonePin": PIN, "ClubNo": "77001"},
    )


def make_crm(pg: PayamgostarStandIn, **options: Any) -> PayamgostarCRM:
    settings: dict[str, Any] = {
        "pin_field": "PhonePin", "telephony_key": TS_KEY, "timeout_seconds": TIMEOUT,
        "connect_timeout_seconds": 0.5, **options,
    }
    return PayamgostarCRM(pg.url, pg.username, pg.password, **settings)


@pytest.fixture
def crm(pg: PayamgostarStandIn) -> Iterator[PayamgostarCRM]:
    client = make_crm(pg)
    yield client
    client.close()


def fails_within(call: Callable[[], object], limit: float) -> CRMError:
    """Run `call`, assert it raises CRMError before `limit` seconds, return the error."""
    started = time.monotonic()
    with pytest.raises(CRMError) as info:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.2f}s"
    return info.value


def invoice(customer_id: str, amount: int = 30000) -> dict[str, object]:
    return {
        "customer_id": customer_id, "product_code": "TB-1", "product_name": "Talk time", "invoice_type": "SaleInv",
        "amount": amount, "account": "melli-1", "call_uuid": CALL_UUID, "talk_seconds": 185, "units": 3,
    }


def call_row(customer_id: str = "", **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "uuid": CALL_UUID, "direction": "inbound", "caller": "+989121234567", "called": "2191001000",
        "extension": "1001", "status": "answered", "started_at": "2024-05-01T10:00:00+03:30",
        "answered_at": "2024-05-01T10:00:12+03:30", "ended_at": "2024-05-01T10:03:17+03:30",
        "recording": "2024/05/01/5f0c2f5e.wav", "hangup_cause": "NORMAL_CLEARING", "customer_id": customer_id,
    }
    row.update(changes)
    return row


# -- lookups ------------------------------------------------------------------------------


def test_payamgostar_crm_satisfies_the_crm_protocol(crm: PayamgostarCRM) -> None:
    """PayamgostarCRM has every method of the CRM interface, plus push_call."""
    assert isinstance(crm, CRM)
    assert callable(crm.push_call)


def test_find_by_phone_returns_the_identity_with_responsible_extensions(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str
) -> None:
    """A caller's E.164 number finds the identity; Sale/Support/Other users become extensions."""
    customer = crm.find_by_phone("+989121234567")
    assert customer == Customer(
        id=sara, number="C-1001", name="Sara Ahmadi", type="gold", mobile="+989121234567",
        phones=("+989121234567", "+982188776655"),
        responsible={"sales": "1001", "support": "1002", "other": "1003"},
    )
    assert "IIdentity.FindIdentityByPhoneNumber" in pg.seen
    assert pg.logins == 0, "SOAP lookups carry credentials and need no token"


@pytest.mark.parametrize(("role", "user", "extension"), [
    ("sales", "sara.sales", "1001"), ("support", "reza.support", "1002"), ("other", "mina.other", "1003"),
])
def test_each_role_maps_to_its_users_extension_alone(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, role: str, user: str, extension: str
) -> None:
    """Each of SaleUsername, SupportUsername and OtherUsername gives that role only."""
    field = {"sales": "sale", "support": "support", "other": "other"}[role]
    pg.add_identity("Ali", phones=["09350000001"], **{field: user})
    customer = crm.find_by_phone("+989350000001")
    assert customer is not None
    assert dict(customer.responsible) == {role: extension}


def test_extension_comes_from_the_configured_telephony_system(pg: PayamgostarStandIn, sara: str) -> None:
    """With telephony_key unset the first system with an extension is used; set, only that one."""
    first = make_crm(pg, telephony_key="")
    chosen = make_crm(pg, telephony_key="old-pbx")
    assert first.find_by_phone("+989121234567").responsible["support"] == "77"  # type: ignore[union-attr]
    assert dict(chosen.find_by_phone("+989121234567").responsible) == {"support": "77"}  # type: ignore[union-attr]


def test_user_without_extension_leaves_the_role_empty(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """A responsible user with no extension, or unknown to the CRM, is no one to transfer to."""
    pg.add_identity("Ali", phones=["09350000002"], sale="no.phone", support="ghost.user")
    customer = crm.find_by_phone("+989350000002")
    assert customer is not None
    assert dict(customer.responsible) == {}


def test_extensions_are_cached(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """A second lookup within extension_cache_seconds asks IUser nothing."""
    crm.find_by_phone("+989121234567")
    asked = pg.seen.count("IUser.GetUserExtensions")
    crm.find_by_phone("+989121234567")
    assert asked == 3
    assert pg.seen.count("IUser.GetUserExtensions") == 3


def test_failed_extension_lookup_keeps_the_customer(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """An IUser failure drops that role's extension but the caller is still identified."""
    original = pg._soap_GetUserExtensions
    answers = iter([None])

    def flaky(action: str, params: Any) -> Any:
        if next(answers, "ok") is None:
            return _soap_fault("boom")
        return original(action, params)

    pg._soap_GetUserExtensions = flaky  # type: ignore[method-assign]
    customer = crm.find_by_phone("+989121234567")
    assert customer is not None and customer.id == sara
    assert dict(customer.responsible) == {"support": "1002", "other": "1003"}
    assert crm.breaker.state == "closed"


def test_unknown_phone_is_none(crm: PayamgostarCRM, sara: str) -> None:
    """A number no identity has is an unknown caller, not a failure."""
    assert crm.find_by_phone("+989359999999") is None
    assert crm.breaker.state == "closed"


def test_phone_is_sent_in_national_digits_or_e164(pg: PayamgostarStandIn, sara: str) -> None:
    """phone_format national sends 09121234567; e164 sends +989121234567 (found either way)."""
    assert make_crm(pg).find_by_phone("+989121234567") is not None
    assert make_crm(pg, phone_format="e164").find_by_phone("+989121234567") is not None


def test_find_by_number(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """SearchIdentity with CustomerNumber=="C-1001" finds the identity; an unknown number is None."""
    customer = crm.find_by_number("C-1001")
    assert customer is not None and customer.id == sara and customer.number == "C-1001"
    assert crm.find_by_number("C-9999") is None
    assert "IIdentity.SearchIdentity" in pg.seen


def test_customer_number_and_type_can_be_custom_fields(pg: PayamgostarStandIn, sara: str) -> None:
    """customer_number_field/type_field naming an extended property read and search that property."""
    client = make_crm(pg, customer_number_field="ClubNo", type_field="ClubNo")
    customer = client.find_by_number("77001")
    assert customer is not None and customer.id == sara
    assert (customer.number, customer.type) == ("77001", "77001")
    assert client.find_by_number("C-1001") is None


def test_customer_number_with_query_characters_is_refused(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """A number that could break out of the query string is never sent."""
    with pytest.raises(CRMError, match="find_by_number"):
        crm.find_by_number('1" || CustomerNumber!="')
    assert "IIdentity.SearchIdentity" not in pg.seen


# -- PIN and balance ---------------------------------------------------------------------


@pytest.mark.parametrize(("pin", "ok"), [(PIN, True), ("40961", False), ("", False)])
def test_verify_pin_compares_with_the_pin_field(crm: PayamgostarCRM, sara: str, pin: str, ok: bool) -> None:
    """The PIN is checked against the identity's `pin_field` extended property."""
    assert crm.verify_pin(sara, pin) is ok


def test_verify_pin_without_a_pin_on_file_is_false(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """An identity with no PIN in the field, or an unknown id, never verifies."""
    bare = pg.add_identity("Ali", phones=["09350000003"])
    assert crm.verify_pin(bare, PIN) is False
    assert crm.verify_pin("00000000-0000-0000-0000-000000000000", PIN) is False


def test_verify_pin_needs_pin_field(pg: PayamgostarStandIn, sara: str) -> None:
    """Without crm.pin_field the error names the key."""
    with pytest.raises(CRMError, match="crm.pin_field"):
        make_crm(pg, pin_field="").verify_pin(sara, PIN)


@pytest.mark.parametrize(("balance", "debt"), [("-25000.0000", 25000), ("5000", -5000), ("", 0)])
def test_balance_is_minus_the_identity_balance(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, balance: str, debt: int
) -> None:
    """A negative Balance is money owed (debt > 0); a positive one is credit."""
    customer_id = pg.add_identity("Ali", phones=["09350000004"], balance=balance)
    assert crm.balance(customer_id, "SaleInv") == debt


def test_non_guid_customer_id_is_refused(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """Ids that are not Payamgostar GUIDs fail before anything is sent."""
    with pytest.raises(CRMError, match="identity id"):
        crm.balance("cus-7", "SaleInv")
    assert pg.seen == []


# -- writes -------------------------------------------------------------------------------


def test_create_invoice_posts_a_sales_invoice(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """invoice/sales/create gets the type, identity, refId = key and one service line."""
    invoice_id = crm.create_invoice(invoice(sara), f"{CALL_UUID}-bill-invoice")
    assert len(pg.invoices) == 1
    sent = pg.invoices[0]
    assert invoice_id == sent["crmId"]
    assert sent["crmObjectTypeCode"] == "SaleInv"
    assert sent["identityId"] == sara
    assert sent["refId"] == f"{CALL_UUID}-bill-invoice"
    assert sent["finalValue"] == sent["totalValue"] == 30000
    assert sent["details"] == [{
        "productCode": "TB-1", "productName": "Talk time", "isService": True, "count": 3, "baseUnitPrice": 10000,
        "finalUnitPrice": 10000, "totalUnitPrice": 30000, "returnedCount": 0, "totalDiscount": 0, "totalVat": 0,
        "totalToll": 0,
    }]
    assert pg.logins == 1


def test_create_invoice_carries_the_invoice_search_field_in_its_description(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str
) -> None:
    """The published invoice model has no member for the module's search field: it follows the call in the text."""
    crm.create_invoice({**invoice(sara), "invoice_search_field": "InvoiceNumber"}, "k-desc")
    crm.create_invoice(invoice(sara), "k-plain")
    assert [i["description"] for i in pg.invoices] == [
        f"call {CALL_UUID}, talk 185 s; invoice_search_field=InvoiceNumber", f"call {CALL_UUID}, talk 185 s",
    ]


def test_create_invoice_is_not_repeated_for_the_same_key(pg: PayamgostarStandIn, sara: str) -> None:
    """A retry (even from a new daemon) finds the invoice by refId instead of making another."""
    first = make_crm(pg).create_invoice(invoice(sara), "k-1")
    again = make_crm(pg).create_invoice(invoice(sara), "k-1")
    assert again == first
    assert len(pg.invoices) == 1


def test_create_invoice_proceeds_when_the_refid_query_is_refused(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str
) -> None:
    """If the CRM rejects the refId find (HTTP 400), the invoice is still created."""
    pg.refuse_invoice_find = True
    assert crm.create_invoice(invoice(sara), "k-2")
    assert len(pg.invoices) == 1


def test_create_invoice_needs_an_invoice_type(pg: PayamgostarStandIn, sara: str) -> None:
    """The module's invoice_type is used, else crm.invoice_type; with neither it is an error."""
    data = {**invoice(sara), "invoice_type": ""}
    with pytest.raises(CRMError, match="invoice_type"):
        make_crm(pg).create_invoice(data, "k-3")
    make_crm(pg, invoice_type="DefaultInv").create_invoice(data, "k-3")
    assert pg.invoices[0]["crmObjectTypeCode"] == "DefaultInv"


# -- prices -------------------------------------------------------------------------------


def test_product_price_is_the_line_of_the_invoice_types_price_list(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """IProduct.FindProductByCode: the product's amount in the price list of the invoice type, in integer rial."""
    pg.add_product("BAL-1", unit_price="450000.0000", price_lists={"SaleInv": "500000.0000", "PreInv": "480000"})
    assert crm.product_price("BAL-1", "SaleInv") == 500_000
    assert crm.product_price("BAL-1", "PreInv") == 480_000
    assert pg.seen == ["IProduct.FindProductByCode", "IProduct.FindProductByCode"]


def test_product_price_without_a_price_list_for_the_type_is_its_unit_price(pg: PayamgostarStandIn) -> None:
    """No price list of that invoice type (or no type at all): UnitPrice; crm.invoice_type stands in for none."""
    pg.add_product("BAL-1", unit_price="450000.5", price_lists={"PreInv": "480000"})
    assert make_crm(pg).product_price("BAL-1", "SaleInv") == 450_000  # half to even
    assert make_crm(pg).product_price("BAL-1", "") == 450_000
    assert make_crm(pg, invoice_type="PreInv").product_price("BAL-1", "") == 480_000


@pytest.mark.parametrize(("unit_price", "lists", "reason"), [
    (None, {}, "no product with this code"),
    ("", {}, "the product has no price"),
    ("0", {"SaleInv": "0"}, "the product has no price"),
    ("abc", {}, "the product's price is not a number"),
])
def test_product_price_refuses_what_is_no_price(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, unit_price: str | None, lists: dict[str, str], reason: str,
) -> None:
    """An unknown product, a product without a price, a zero or unreadable one: a CRMError naming it."""
    if unit_price is not None:
        pg.add_product("BAL-1", unit_price=unit_price, price_lists=lists)
    with pytest.raises(CRMError, match=reason) as err:
        crm.product_price("BAL-1", "SaleInv")
    assert err.value.operation == "product_price"


def test_product_price_with_a_wrong_password_finds_nothing(pg: PayamgostarStandIn) -> None:
    """The SOAP service refuses the user inside its answer: no price, no guess."""
    pg.add_product("BAL-1", unit_price="450000")
    with pytest.raises(CRMError, match="no product"):
        PayamgostarCRM(pg.url, pg.username, "wrong", timeout_seconds=TIMEOUT).product_price("BAL-1", "SaleInv")


def test_send_payment_link(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """IEpay.CreatePaymentLink gets identity, amount, national mobile, money account and expiry."""
    link = {"customer_id": sara, "mobile": "+989121234567", "amount": 25000, "account": "melli-1"}
    crm.send_payment_link(link, f"{CALL_UUID}-balance-link")
    assert pg.payment_links == [{
        "Amount": "25000", "Description": f"fsapp {CALL_UUID}-balance-link", "ExpireAfterDays": "7",
        "IdentityId": sara, "MobilePhoneNumber": "09121234567", "MoneyAccountUserKey": "melli-1",
        "RegisterReceipt": "false",
    }]
    crm.send_payment_link(link, f"{CALL_UUID}-balance-link")
    assert len(pg.payment_links) == 1, "a delivered key is not sent twice"


def test_payment_link_refused_by_the_crm_is_an_error(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """Success=false from CreatePaymentLink is a CRMError, so the outbox retries it."""
    pg.payment_link_success = False
    link = {"customer_id": sara, "mobile": "+989121234567", "amount": 25000, "account": "melli-1"}
    with pytest.raises(CRMError, match="payment link"):
        crm.send_payment_link(link, "k-4")


def test_register_creates_a_person_once(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """An unknown caller becomes a person with that phone; registering again finds it."""
    customer = crm.register("+989351112233")
    assert customer.phones == ("+989351112233",) and customer.mobile == "+989351112233"
    assert pg.persons[0]["phoneContacts"] == [{"phoneNumber": "09351112233", "default": True}]
    again = crm.register("+989351112233")
    assert again.id == customer.id
    assert len(pg.persons) == 1


# -- call log -----------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "call_type", "response"), [
    ({}, 2, 2),
    ({"status": "missed", "answered_at": "", "hangup_cause": "USER_BUSY", "recording": ""}, 1, 3),
    ({"status": "missed", "answered_at": "", "hangup_cause": "NO_ANSWER", "recording": ""}, 1, 1),
    ({"direction": "outbound", "caller": "1001", "called": "+989121234567"}, 3, 2),
])
def test_push_call_writes_the_call_log(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str, changes: dict[str, object], call_type: int, response: int
) -> None:
    """Call type received/missed/outgoing, response answered/busy/not answered and the recording."""
    row = call_row(sara, **changes)
    crm.push_call(row, f"{CALL_UUID}-call")
    (call,) = pg.calls.values()
    assert call["tsKey"] == TS_KEY and call["sourceId"] == CALL_UUID and call["closed"]
    assert call["callTypeIndex"] == call_type
    assert call["phoneNumber"] == "09121234567"
    assert call["identityId"] == sara
    person = pg.channels[call["channels"][-1]]
    assert person["channelPeerName"] == "1001"
    assert person["channelPeerTypeIndex"] == 1
    assert person["channelResponseIndex"] == response
    assert person.get("recordedFileName", "") == row["recording"]
    assert (len(call["channels"]) == 1) == (row["direction"] == "outbound")


def test_push_call_sends_times_with_their_offset(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """The record the daemon queues (journal.export_row, Tehran) keeps +03:30; a naive one is the host's time."""
    stored = {**call_row(), "started_at": "2026-11-30T21:00:00Z", "answered_at": None,
              "ended_at": "2026-11-30T21:03:00Z"}
    record = journal.export_row(stored, journal.Clock(zoneinfo.ZoneInfo("Asia/Tehran")))
    crm.push_call({**record, "status": "missed", "recording": ""}, "k-tz")
    naive = call_row(started_at="2026-12-01T09:08:37", answered_at="", ended_at="2026-12-01T09:09:00")
    crm.push_call({**naive, "uuid": "5f0c2f5e-1d7a-4a53-9c39-0a5f4c1e2b78", "status": "missed"}, "k-naive")
    first, second = pg.calls.values()
    assert first["startDate"] == "2026-12-01T00:30:00+03:30" and first["endDate"] == "2026-12-01T00:33:00+03:30"
    host = dt.datetime.fromisoformat("2026-12-01T09:08:37").astimezone()
    assert second["startDate"] == host.isoformat()


def test_push_call_resumes_after_a_partial_failure(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """A failure after the call was created does not create it again on retry."""
    original = pg._channel_update
    pg._channel_update = lambda body: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    with pytest.raises(CRMError):
        crm.push_call(call_row(), "k-5")
    pg._channel_update = original  # type: ignore[method-assign]
    crm.push_call(call_row(), "k-5")
    assert len(pg.calls) == 1
    (call,) = pg.calls.values()
    assert call["closed"]


def test_push_call_needs_telephony_key(pg: PayamgostarStandIn) -> None:
    """Without crm.telephony_key the error names the key and nothing is sent."""
    with pytest.raises(CRMError, match="crm.telephony_key"):
        make_crm(pg, telephony_key="").push_call(call_row(), "k-6")
    assert pg.seen == []


def test_push_call_rejects_a_malformed_record(crm: PayamgostarCRM) -> None:
    """A record without a valid direction or start time is refused before sending."""
    with pytest.raises(CRMError, match="direction"):
        crm.push_call(call_row(direction="sideways"), "k-7")
    with pytest.raises(CRMError, match="started_at"):
        crm.push_call(call_row(started_at="yesterday"), "k-7")


# -- token ---------------------------------------------------------------------------------


def test_token_is_cached_between_rest_calls(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """Several REST writes log in once."""
    crm.create_invoice(invoice(sara), "k-8")
    crm.create_invoice(invoice(sara), "k-9")
    crm.push_call(call_row(sara), "k-10")
    assert pg.logins == 1


def test_expired_token_is_replaced_before_use(pg: PayamgostarStandIn, sara: str) -> None:
    """A token past its expiresAt (less a margin) is renewed by a new login, with no 401 seen."""
    pg.token_lifetime = 1.0
    client = make_crm(pg)
    client.create_invoice(invoice(sara), "k-11")
    time.sleep(1.1)
    client.create_invoice(invoice(sara), "k-12")
    assert pg.logins == 2
    assert pg.rejected == 0


def test_rejected_token_logs_in_again_and_retries_once(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """A 401 on a REST call means a new login and one retry of that call."""
    crm.create_invoice(invoice(sara), "k-13")
    pg.revoke_tokens()
    crm.create_invoice(invoice(sara), "k-14")
    assert pg.logins == 2
    assert pg.rejected == 1
    assert len(pg.invoices) == 2


def test_wrong_password_is_a_login_error_without_the_password(pg: PayamgostarStandIn, sara: str) -> None:
    """A refused login is a CRMError saying so, with status 401 and no secret in it."""
    client = PayamgostarCRM(pg.url, pg.username, "wrong-Pa55", pin_field="PhonePin", timeout_seconds=TIMEOUT)
    error = fails_within(lambda: client.create_invoice(invoice(sara), "k-15"), TIMEOUT + 1)
    assert error.operation == "create_invoice" and error.status == 401
    assert "wrong username or password" in str(error)
    assert "wrong-Pa55" not in str(error)
    assert client.breaker.state == "closed"
    assert client.ping() is False


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["find_by_phone", "find_by_number", "create_invoice", "push_call", "balance"])
def test_crm_down_is_crm_error_within_the_timeout(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str, operation: str
) -> None:
    """Connection refused fails every kind of call quickly, naming the operation."""
    pg.down()
    calls: dict[str, Callable[[], object]] = {
        "find_by_phone": lambda: crm.find_by_phone("+989121234567"),
        "find_by_number": lambda: crm.find_by_number("C-1001"),
        "create_invoice": lambda: crm.create_invoice(invoice(sara), "k-16"),
        "push_call": lambda: crm.push_call(call_row(sara), "k-17"),
        "balance": lambda: crm.balance(sara, "SaleInv"),
    }
    error = fails_within(calls[operation], TIMEOUT + 1)
    assert error.operation == operation
    assert "refused" in error.reason


@pytest.mark.parametrize("operation", ["find_by_phone", "create_invoice", "send_payment_link"])
def test_slow_crm_is_crm_error_within_the_timeout(
    crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str, operation: str
) -> None:
    """A CRM answering after the timeout gives CRMError by timeout + 1 s."""
    pg.delay = TIMEOUT * 3
    calls: dict[str, Callable[[], object]] = {
        "find_by_phone": lambda: crm.find_by_phone("+989121234567"),
        "create_invoice": lambda: crm.create_invoice(invoice(sara), "k-18"),
        "send_payment_link": lambda: crm.send_payment_link(
            {"customer_id": sara, "mobile": "+989121234567", "amount": 1000, "account": ""}, "k-19"),
    }
    error = fails_within(calls[operation], TIMEOUT + 1)
    assert error.operation == operation


def test_one_deadline_covers_the_whole_lookup(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """Identity and three extension lookups each just under the timeout still end by timeout + 1 s."""
    pg.delay = TIMEOUT * 0.4
    started = time.monotonic()
    try:
        crm.find_by_phone("+989121234567")
    except CRMError:
        pass
    assert time.monotonic() - started < TIMEOUT + 1


def test_server_errors_are_crm_errors_and_open_the_circuit(pg: PayamgostarStandIn, sara: str) -> None:
    """HTTP 500 (a SOAP fault) is a CRMError with the status; enough of them open the breaker."""
    client = make_crm(pg, breaker_threshold=2, breaker_cooldown_seconds=60)
    pg.fail_next(2)
    for _ in range(2):
        error = fails_within(lambda: client.find_by_phone("+989121234567"), TIMEOUT + 1)
        assert error.status == 500
    assert client.breaker.state == "open"
    seen = len(pg.seen)
    with pytest.raises(CRMError, match="circuit open"):
        client.find_by_phone("+989121234567")
    assert len(pg.seen) == seen


def test_ping(crm: PayamgostarCRM, pg: PayamgostarStandIn) -> None:
    """ping is IUser.CheckUserAuthentication: True when up, False when down."""
    assert crm.ping() is True
    pg.down()
    assert crm.ping() is False


def test_logs_carry_no_secrets(crm: PayamgostarCRM, pg: PayamgostarStandIn, sara: str) -> None:
    """crm_request/crm_failed events name operation and call, never password, token or PIN."""
    with structlog.testing.capture_logs() as logs:
        crm.find_by_phone("+989121234567")
        crm.verify_pin(sara, PIN)
        crm.create_invoice(invoice(sara), "k-20")
        pg.fail_next(1)
        with pytest.raises(CRMError):
            crm.balance(sara, "SaleInv")
    events = [entry["event"] for entry in logs]
    assert "crm_request" in events and "crm_failed" in events and "crm_login" in events
    text = repr(logs)
    tokens = list(pg.tokens)
    assert tokens
    for secret in [pg.password, PIN, *tokens]:
        assert secret not in text
    assert pg.password not in repr(crm)
    calls = {entry.get("call") for entry in logs if entry["event"] == "crm_request"}
    assert {"IIdentity.FindIdentityByPhoneNumber", "auth/login", "invoice/sales/create"} <= calls


def test_on_result_reports_each_operation(pg: PayamgostarStandIn, sara: str) -> None:
    """The metrics hook sees one result per operation, however many requests it took."""
    results: list[tuple[str, bool]] = []
    client = make_crm(pg, on_result=lambda op, seconds, ok: results.append((op, ok)))
    client.find_by_phone("+989121234567")
    assert results == [("find_by_phone", True)]


# -- configuration -------------------------------------------------------------------------


def test_from_config_reads_the_crm_section(pg: PayamgostarStandIn, sara: str) -> None:
    """The [crm] dataclass with payamgostar keys in `extra` and the password from the environment."""
    section = CRMConfig(
        kind="payamgostar", url=pg.url, timeout_seconds=TIMEOUT, region="IR",
        extra={"username": pg.username, "password_env": "PG_PASSWORD", "pin_field": "PhonePin",
               "telephony_key": TS_KEY, "customer_number_field": "ClubNo", "device_id": "fsapp-test"},
    )
    client = PayamgostarCRM.from_config(section, environ={"PG_PASSWORD": pg.password})
    assert client.timeout_seconds == TIMEOUT
    assert client.device_id == "fsapp-test"
    assert client.verify_pin(sara, PIN)
    customer = client.find_by_number("77001")
    assert customer is not None and customer.responsible["sales"] == "1001"


@pytest.mark.parametrize(("changes", "environ", "message"), [
    ({"password_env": None}, {}, "crm.password_env: missing"),
    ({}, {}, "crm.password_env: environment variable PG_PASSWORD"),
    ({"username": None}, {"PG_PASSWORD": "x"}, "crm.username"),
    ({"url": None}, {"PG_PASSWORD": "x"}, "crm.url"),
    ({"token_env": "PG_TOKEN"}, {"PG_PASSWORD": "x"}, "crm.token_env: not used"),
    ({"pin_feild": "PhonePin"}, {"PG_PASSWORD": "x"}, "crm.pin_feild: unknown key"),
    ({"pin_field": "Phone Pin"}, {"PG_PASSWORD": "x"}, "crm.pin_field"),
    ({"phone_format": "intl"}, {"PG_PASSWORD": "x"}, "crm.phone_format"),
    ({"payment_link_expire_days": 0}, {"PG_PASSWORD": "x"}, "crm.payment_link_expire_days"),
    ({"platform_type": "web"}, {"PG_PASSWORD": "x"}, "crm.platform_type"),
])
def test_from_config_errors_name_the_key(changes: dict[str, object], environ: dict[str, str], message: str) -> None:
    """Every configuration mistake is a ValueError naming the [crm] key."""
    section: dict[str, object] = {
        "kind": "payamgostar", "url": "https://crm.example.invalid", "username": "fsapp-ws",
        "password_env": "PG_PASSWORD",
    }
    section.update(changes)
    section = {key: value for key, value in section.items() if value is not None}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PayamgostarCRM.from_config(section, environ=environ)


def crm_table(pg: PayamgostarStandIn, *lines: str) -> str:
    """The [crm] table of a config on the stand-in (password from PG_PASSWORD), with more key lines."""
    return "\n".join([
        "[crm]", 'kind = "payamgostar"', f'url = "{pg.url}"', f"timeout_seconds = {TIMEOUT}",
        f'username = "{pg.username}"', 'password_env = "PG_PASSWORD"', f'telephony_key = "{TS_KEY}"', *lines, "",
    ])


def test_from_config_accepts_a_loaded_fsapp_toml(make_config: Callable[..., Any], pg: PayamgostarStandIn,
                                                 sara: str) -> None:
    """A [crm] table of kind payamgostar loads through fsapp's config reader unchanged."""
    crm = crm_table(pg, 'pin_field = "PhonePin"', 'invoice_type = "SaleInv"')
    cfg = make_config(crm + HANGUP_MENU)
    client = PayamgostarCRM.from_config(cfg.crm, environ={"PG_PASSWORD": pg.password})
    assert (client.pin_field, client.telephony_key, client.invoice_type) == ("PhonePin", TS_KEY, "SaleInv")
    assert client.find_by_phone("+989121234567") is not None


# -- the balance module in anonymous mode, through the socket -----------------------------------


def _anonymous_daemon(pg: PayamgostarStandIn, make_config: Callable[..., Any], daemon: Callable[..., Any],
                      monkeypatch: pytest.MonkeyPatch, *, amount: int = 450_000, product_code: str = "") -> Any:
    """A daemon whose entry is an anonymous balance module on the Payamgostar stand-in; outbox run by hand."""
    monkeypatch.setenv("PG_PASSWORD", pg.password)
    body = balance_flow(anonymous=True, require_mobile=True, link=True, amount=amount,
                        search_field="InvoiceNumber", product_code=product_code)
    d = daemon(make_config(body, entry="balance", extra=crm_table(pg)))
    d.app.outbox.stop()
    return d


def _links_delivered(d: Any, now: float | None = None) -> list[str]:
    """Run the outbox once (links and call-log rows alike); the payment-link keys now delivered."""
    d.app.outbox.run_once(now=now)
    return [r["idempotency_key"] for r in d.store.outbox_rows() if r["kind"] == "payment_link" and r["delivered_at"]]


def test_anonymous_link_for_a_stranger_goes_to_a_person_made_for_the_mobile(
    pg: PayamgostarStandIn, make_config: Callable[..., Any], daemon: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No identity has the caller ID or the typed mobile: a person is made for the mobile; the link names it, once."""
    d = _anonymous_daemon(pg, make_config, daemon, monkeypatch)
    fake, row = d.call(caller="02155550000", dtmf=["09127654321", "1"])
    assert row is not None and row["customer_id"] == "" and row["auth_result"] == "unknown_mobile"
    assert pg.persons == []  # nothing is written to the CRM during the call
    assert _links_delivered(d) == [f"{fake.uuid}-balance-link"]
    [person] = pg.persons
    assert person["phoneContacts"] == [{"phoneNumber": "09127654321", "default": True}]
    [link] = pg.payment_links
    assert link["IdentityId"] in pg.identities and link["Amount"] == "450000"
    assert link["MobilePhoneNumber"] == "09127654321"
    assert link["Description"] == (f"fsapp {fake.uuid}-balance-link; invoice_type=sales-invoice; "
                                   "invoice_search_field=InvoiceNumber")
    _links_delivered(d, now=time.time() + 3600)
    assert len(pg.payment_links) == 1

    # The same caller again: now an identity found by the mobile, owing nothing (the link is not paid
    # into a Balance here), so no_debt and error; no second person, no second link.
    again, row = d.call(caller="02155550000", dtmf=["09127654321", "1"])
    assert row is not None and row["customer_id"] == link["IdentityId"]
    assert again.steps[-1].arg == "CALL_REJECTED"
    _links_delivered(d)
    assert len(pg.persons) == 1 and len(pg.payment_links) == 1


def test_anonymous_link_without_invoice_amount_is_for_the_crms_price_of_the_product(
    pg: PayamgostarStandIn, make_config: Callable[..., Any], daemon: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """invoice_amount 0 and a product_code: the stranger's link is for the product's price for the invoice type."""
    pg.add_product("BAL-1", unit_price="450000", price_lists={"sales-invoice": "525000.0000"})
    d = _anonymous_daemon(pg, make_config, daemon, monkeypatch, amount=0, product_code="BAL-1")
    fake, row = d.call(caller="02155550000", dtmf=["09127654321", "1"])
    assert row is not None and row["auth_result"] == "unknown_mobile"
    assert fake.steps[-1].arg == "NORMAL_CLEARING"  # next: link_sent was played
    [queued] = [r for r in d.store.outbox_rows() if r["kind"] == "payment_link"]
    assert queued["payload"]["amount"] == 525_000  # priced during the call, so every retry sends the same
    assert "IProduct.FindProductByCode" in pg.seen
    assert _links_delivered(d) == [f"{fake.uuid}-balance-link"]
    [link] = pg.payment_links
    assert link["Amount"] == "525000"


def test_anonymous_link_for_a_product_the_crm_cannot_price_sends_the_caller_to_error(
    pg: PayamgostarStandIn, make_config: Callable[..., Any], daemon: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown product: no link is queued, the caller hears no link_sent and goes to error."""
    d = _anonymous_daemon(pg, make_config, daemon, monkeypatch, amount=0, product_code="NO-SUCH")
    fake, row = d.call(caller="02155550000", dtmf=["09127654321", "1"])
    assert fake.steps[-1].arg == "CALL_REJECTED"
    assert not any("link_sent" in str(step.arg) for step in fake.steps)
    assert row is not None and row["status"] == "failed"  # a CRM failure, not the caller's doing
    assert [r for r in d.store.outbox_rows() if r["kind"] == "payment_link"] == []


@pytest.mark.parametrize("crm_kind", ["local", "http"])
def test_product_code_instead_of_invoice_amount_needs_payamgostar(
    make_config: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, crm_kind: str,
) -> None:
    """The local and HTTP CRMs price nothing: invoice_amount stays required, the error names the key."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", "t")
    crm = "" if crm_kind == "local" else (
        '[crm]\nkind = "http"\nurl = "http://127.0.0.1:9/api"\ntoken_env = "FSAPP_TEST_CRM_TOKEN"\n')
    body = balance_flow(anonymous=True, require_mobile=True, link=True, amount=0, product_code="BAL-1")
    with pytest.raises(ConfigError) as err:
        make_config(body, entry="balance", extra=crm)
    assert any(p.endswith(f"modules[1].invoice_amount: needed with the {crm_kind} CRM, which prices no "
                          "product_code (only payamgostar does)") for p in err.value.problems), err.value.problems


def test_anonymous_mobile_of_an_identity_hears_its_balance(
    pg: PayamgostarStandIn, sara: str, make_config: Callable[..., Any], daemon: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The typed mobile is Sara's: her Balance is the debt, the link names her identity, no person is made."""
    d = _anonymous_daemon(pg, make_config, daemon, monkeypatch)
    fake, row = d.call(caller="02155550000", dtmf=["09121234567", "1"])
    assert row is not None and row["customer_id"] == sara and row["auth_method"] == "mobile"
    assert fake.steps[-1].arg == "NORMAL_CLEARING"
    assert _links_delivered(d) == [f"{fake.uuid}-balance-link"]
    [link] = pg.payment_links
    assert (link["IdentityId"], link["Amount"]) == (sara, "25000")
    assert pg.persons == []
