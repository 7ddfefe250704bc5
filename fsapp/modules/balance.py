"""``balance`` (seed 001): tell the caller their balance; have the CRM send a payment link.

Debt announced -> ``next``; no debt (or a credit), an unknown caller (unless
``anonymous``), or a CRM failure -> ``error``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fsapp import phones
from fsapp.crm import CRMError
from fsapp.options import Opt, prompt

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.crm import Customer
    from fsapp.options import ModuleConfig

SCHEMA = {
    "anonymous": Opt(bool, False),
    "require_mobile": Opt(bool, False),
    "send_payment_link": Opt(bool, False),
    "invoice_type": Opt(str, "invoice"),
    "account": Opt(str, ""),
    "max_attempts": Opt(int, 3, minimum=1),
    "timeout_ms": Opt(int, 8000, minimum=500),
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
    return problems


def run(ctx: CallContext, m: ModuleConfig) -> str:
    crm = ctx.app.crm
    try:
        customer = ctx.customer
        if customer is None and m["anonymous"]:
            number = phones.normalize(ctx.caller, ctx.cfg.crm.region)
            customer = crm.find_by_phone(number) if number else None
        if customer is None:
            ctx.log.info("balance_unknown_caller", module=m.code)
            return m.error
        debt = crm.balance(customer.id, m["invoice_type"])
    except CRMError as exc:
        ctx.log.warning("balance_crm_failed", module=m.code, operation=exc.operation, reason=exc.reason)
        ctx.error_reason = f"crm {exc.operation or 'request'} failed"
        return m.error
    ctx.log.debug("balance_read", module=m.code, customer_id=customer.id, debt=debt)
    # The balance is known before the intro plays: intro and amount are one playback.
    if debt <= 0:
        if debt < 0:
            ctx.io.say_amount(-debt, before=(m["intro"], m["balance_is"]), after=m["credit"])
        else:
            ctx.io.play([m["intro"], m["no_debt"]])
        return m.error
    ctx.io.say_amount(debt, before=(m["intro"], m["balance_is"]), after=m["debt"])
    if m["send_payment_link"]:
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


def _queue_link(ctx: CallContext, m: ModuleConfig, customer: Customer, mobile: str, amount: int) -> None:
    """Queue the link in the outbox (durable before the caller hears it was sent)."""
    payload = {"customer_id": customer.id, "mobile": mobile, "amount": amount, "account": m["account"],
               "invoice_type": m["invoice_type"], "call_uuid": ctx.uuid}
    ctx.app.store.outbox_add("payment_link", f"{ctx.uuid}-{m.code}-link", payload, time.time())
    ctx.app.outbox.poke()
    ctx.log.info("payment_link_queued", module=m.code, customer_id=customer.id, amount=amount)
