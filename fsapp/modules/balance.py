"""``balance`` (seed 001): tell the caller their balance; have the CRM send a payment link.

Debt announced -> ``next``; no debt (or a credit), an unknown caller, or a CRM failure
-> ``error``. With ``anonymous`` the module serves callers who are not customers: the
caller is looked up by caller ID, then (with ``require_mobile``) by the mobile they
type; a caller still unknown is sent a payment link for ``invoice_amount`` (or, when it
is 0, the CRM's price of ``product_code`` for ``invoice_type``) -> ``next``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fsapp import billing, phones
from fsapp.crm import CRMError
from fsapp.options import Opt, field_name, prompt

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.crm import Customer
    from fsapp.options import ModuleConfig

# An invoice amount above this (integer rial) is a typo, not a price.
MAX_INVOICE_AMOUNT = 100_000_000_000
# The CRM kinds that answer product_price(product_code, invoice_type).
PRICING_CRMS = ("payamgostar",)

SCHEMA = {
    "anonymous": Opt(bool, False),
    "require_mobile": Opt(bool, False),
    "send_payment_link": Opt(bool, False),
    "invoice_type": Opt(str, "invoice"),
    "invoice_amount": Opt(int, 0, minimum=0, maximum=billing.MAX_RIAL),  # then MAX_INVOICE_AMOUNT, below
    "invoice_search_field": Opt(str, ""),
    "product_code": Opt(str, ""),  # priced by the CRM when invoice_amount is 0
    "account": Opt(str, ""),
    "max_attempts": Opt(int, 3, minimum=1, maximum=100),
    "timeout_ms": Opt(int, 8000, minimum=500, maximum=300_000),
    "confirm_digit": Opt(str, "1"),
    "intro": prompt(),
    "balance_is": prompt(),
    "debt": prompt(),
    "credit": prompt(),
    "no_debt": prompt(),
    "enter_mobile": prompt(),
    "confirm_mobile": prompt(),
    "invalid_mobile": prompt(),
    "link_sent": prompt(),
}


def validate(m: ModuleConfig) -> list[str]:
    problems = []
    if m["require_mobile"] and not m["enter_mobile"]:
        problems.append("enter_mobile: needed when require_mobile is on")
    if len(m["confirm_digit"]) != 1 or m["confirm_digit"] not in "0123456789*#":
        problems.append("confirm_digit: one DTMF key")
    if m["anonymous"] and m["send_payment_link"]:
        if not m["require_mobile"]:
            problems.append("require_mobile: needed when anonymous and send_payment_link are on "
                            "(a caller who is not a customer gets the link at the mobile they type)")
        if not m["invoice_amount"] and not m["product_code"].strip():
            problems.append("invoice_amount: needed when anonymous and send_payment_link are on "
                            "(the rial amount of the link sent to a caller who is not a customer), "
                            "or product_code for the CRM to price")
    if m["invoice_amount"] > MAX_INVOICE_AMOUNT:
        problems.append(f"invoice_amount: at most {MAX_INVOICE_AMOUNT} rial, not {m['invoice_amount']}")
    problems.extend(field_name("invoice_search_field", m["invoice_search_field"]))
    return problems


def crm_rules(m: ModuleConfig, crm_kind: str) -> list[str]:
    """Only Payamgostar prices a product: any other CRM needs the amount itself."""
    priced = m["anonymous"] and m["send_payment_link"] and not m["invoice_amount"] and m["product_code"].strip()
    if priced and crm_kind not in PRICING_CRMS:
        return [f"invoice_amount: needed with the {crm_kind} CRM, which prices no product_code "
                f"(only {', '.join(PRICING_CRMS)} does)"]
    return []


def run(ctx: CallContext, m: ModuleConfig) -> str:
    intro: tuple[str, ...] = (m["intro"],)
    mobile = ""
    try:
        customer = ctx.customer or _by_caller_id(ctx, m)
        if customer is None and m["anonymous"] and m["require_mobile"]:
            ctx.io.lead(m["intro"])  # goes out with the prompt for the mobile
            intro = ()
            mobile = _ask_mobile(ctx, m)
            if not mobile:
                return m.error
            customer = _by_mobile(ctx, m, mobile)
            if customer is None:
                return _link_for_stranger(ctx, m, mobile)
        if customer is None:
            ctx.log.info("balance_unknown_caller", module=m.code)
            return m.error
        debt = ctx.app.crm.balance(customer.id, m["invoice_type"])
    except CRMError as exc:
        ctx.log.warning("balance_crm_failed", module=m.code, operation=exc.operation, reason=exc.reason)
        ctx.error_reason = f"crm {exc.operation or 'request'} failed"
        return m.error
    ctx.log.debug("balance_read", module=m.code, customer_id=customer.id, debt=debt)
    return _announce(ctx, m, customer, debt, intro, mobile)


def _by_caller_id(ctx: CallContext, m: ModuleConfig) -> Customer | None:
    if not m["anonymous"]:
        return None
    number = phones.normalize(ctx.caller, ctx.cfg.crm.region)
    return ctx.app.crm.find_by_phone(number) if number else None


def _by_mobile(ctx: CallContext, m: ModuleConfig, mobile: str) -> Customer | None:
    """The customer whose phone is the typed mobile: journaled with it, not passed on as identified."""
    customer = ctx.app.crm.find_by_phone(mobile)
    ctx.auth_method = "mobile"
    ctx.auth_result = "ok" if customer is not None else "unknown_mobile"
    if customer is not None:
        ctx.claimed = customer  # a typed number is no proof of identity for the modules after
    ctx.log.info("balance_mobile_lookup", module=m.code, found=customer is not None,
                 customer_id=customer.id if customer else "")
    return customer


def _link_for_stranger(ctx: CallContext, m: ModuleConfig, mobile: str) -> str:
    """A caller who is no customer: a link for the module's invoice amount, if it sends links."""
    if not m["send_payment_link"]:
        ctx.log.info("balance_unknown_caller", module=m.code)
        return m.error
    _queue_link(ctx, m, None, mobile, m["invoice_amount"] or _price(ctx, m))
    ctx.io.play(m["link_sent"])
    return m.next


def _price(ctx: CallContext, m: ModuleConfig) -> int:
    """The CRM's price of the module's product for its invoice type (CRMError if it has none)."""
    price = getattr(ctx.app.crm, "product_price", None)
    if price is None:
        raise CRMError("the CRM prices no products", operation="product_price")
    amount = price(m["product_code"], m["invoice_type"])
    if amount > MAX_INVOICE_AMOUNT:
        raise CRMError(f"the product's price is above {MAX_INVOICE_AMOUNT} rial", operation="product_price")
    ctx.log.info("balance_product_priced", module=m.code, product_code=m["product_code"], amount=amount)
    return amount


def _announce(ctx: CallContext, m: ModuleConfig, customer: Customer, debt: int, intro: tuple[str, ...],
              mobile: str) -> str:
    """Intro and amount as one playback (the balance is known before it plays); the link for a debt."""
    if debt <= 0:
        if debt < 0:
            ctx.io.say_amount(-debt, before=(*intro, m["balance_is"]), after=m["credit"])
        else:
            ctx.io.play([*intro, m["no_debt"]])
        return m.error
    ctx.io.say_amount(debt, before=(*intro, m["balance_is"]), after=m["debt"])
    if m["send_payment_link"]:
        if not mobile:
            mobile = _ask_mobile(ctx, m) if m["require_mobile"] else customer.mobile
        if mobile:
            _queue_link(ctx, m, customer, mobile, debt)
            ctx.io.play(m["link_sent"])
        else:
            ctx.log.info("balance_no_mobile", module=m.code, customer_id=customer.id)
    return m.next


def _ask_mobile(ctx: CallContext, m: ModuleConfig) -> str:
    """Ask for a mobile number, read it back, confirm; re-ask on invalid input."""
    region = ctx.cfg.crm.region
    for attempt in range(1, m["max_attempts"] + 1):
        typed = ctx.io.ask(m["enter_mobile"], min_digits=4, max_digits=15, timeout_ms=m["timeout_ms"])
        number = phones.normalize(typed, region) if typed else None
        if number and phones.is_mobile(number, region):
            national = phones.to_national(number, region).replace(" ", "")
            digits = [f"digits/{d}" for d in national if d.isdigit()]
            ctx.io.play(digits)
            answer = ctx.io.ask(m["confirm_mobile"], min_digits=1, max_digits=1, timeout_ms=m["timeout_ms"],
                                regex=r"^[0-9*#]$")
            if answer == m["confirm_digit"]:
                ctx.mobile = number
                return number
            ctx.log.info("balance_mobile_not_confirmed", module=m.code, attempt=attempt)
            continue
        ctx.log.info("balance_mobile_invalid", module=m.code, attempt=attempt, got="none" if not typed else "invalid")
        if attempt < m["max_attempts"]:
            ctx.io.play(m["invalid_mobile"])
    return ""


def _queue_link(ctx: CallContext, m: ModuleConfig, customer: Customer | None, mobile: str, amount: int) -> None:
    """Queue the link in the outbox (durable before the caller hears it was sent).

    The payload is the whole request, so a retry after a restart sends the same one.
    """
    payload = {"customer_id": customer.id if customer else "", "mobile": mobile, "amount": amount,
               "account": m["account"], "invoice_type": m["invoice_type"],
               "invoice_search_field": m["invoice_search_field"], "call_uuid": ctx.uuid}
    ctx.app.store.outbox_add("payment_link", f"{ctx.uuid}-{m.code}-link", payload, time.time())
    ctx.app.outbox.poke()
    ctx.log.info("payment_link_queued", module=m.code, customer_id=payload["customer_id"], amount=amount)
