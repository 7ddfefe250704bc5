"""``customer_club`` (seed 002): identify the caller against the CRM.

``auth = "phone"``: the caller ID must be a phone registered for a customer
(national and international forms match). ``"customer_number"``: the caller types
it (``customer_number_prefix`` is prepended). ``"pin"``: customer number, then the
phone PIN, with a lockout counted across calls and daemons.
Identified -> ``next`` with ``ctx.customer`` set; not -> ``auth_failed``, ``error``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fsapp import phones
from fsapp.crm import CRMError, Customer
from fsapp.options import Opt, dest, prompt

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.options import ModuleConfig

SCHEMA = {
    "auth": Opt(str, "phone", choices=("phone", "customer_number", "pin")),
    "customer_number_prefix": Opt(str, ""),
    "number_max_digits": Opt(int, 12, minimum=1),
    "pin_max_digits": Opt(int, 8, minimum=4),
    "max_attempts": Opt(int, 3, minimum=1),
    "timeout_ms": Opt(int, 6000, minimum=500),
    "recovery_digit": Opt(str, ""),
    "recovery": dest(),
    "register_unknown": Opt(bool, False),
    "unknown": dest(),
    "intro": prompt(),
    "welcome": prompt(),
    "enter_number": prompt(),
    "wrong_number": prompt(),
    "enter_pin": prompt(),
    "wrong_pin": prompt(),
    "auth_failed": prompt(),
    "locked": prompt(),
}


def validate(module: ModuleConfig) -> list[str]:
    problems = []
    digit = module["recovery_digit"]
    if digit and (len(digit) != 1 or digit not in "0123456789*#"):
        problems.append("recovery_digit: one DTMF key (0-9, * or #)")
    if digit == "#":
        problems.append("recovery_digit: '#' ends the input; use * or a digit")
    if digit and not module["recovery"]:
        problems.append("recovery: needed when recovery_digit is set")
    if module["auth"] == "phone" and module["recovery_digit"]:
        problems.append("recovery_digit: phone authentication asks for no digits")
    return problems


class _Done(Exception):
    """Leave the module for ``dest``."""

    def __init__(self, dest: str) -> None:
        self.dest = dest


def run(ctx: CallContext, m: ModuleConfig) -> str:
    ctx.auth_method = m["auth"]
    try:
        if m["auth"] == "phone":
            ctx.io.play(m["intro"])  # played while the CRM is asked
            customer = _by_phone(ctx, m)
        else:
            ctx.io.lead(m["intro"])  # goes out with the first prompt for the number
            customer = _by_number(ctx, m)
            if m["auth"] == "pin":
                _check_pin(ctx, m, customer)
    except _Done as done:
        return done.dest
    except CRMError as exc:
        ctx.log.warning("club_crm_failed", module=m.code, operation=exc.operation, reason=exc.reason)
        ctx.auth_result = "crm_error"
        ctx.error_reason = f"crm {exc.operation or 'request'} failed"
        return m.error
    ctx.customer = customer
    ctx.auth_result = "ok"
    ctx.log.info("club_identified", module=m.code, customer_id=customer.id, auth=m["auth"])
    ctx.io.play(m["welcome"])
    return m.next


def _fail(ctx: CallContext, m: ModuleConfig, result: str) -> _Done:
    ctx.auth_result = result
    ctx.log.info("club_not_identified", module=m.code, result=result)
    ctx.io.play(m["auth_failed"])
    return _Done(m.error)


def _by_phone(ctx: CallContext, m: ModuleConfig) -> Customer:
    region = ctx.cfg.crm.region
    number = phones.normalize(ctx.caller, region)
    customer = ctx.app.crm.find_by_phone(number) if number else None
    if customer is not None:
        return customer
    if m["register_unknown"] and number:
        customer = ctx.app.crm.register(number)
        ctx.claimed = customer  # journaled with its new id; not identified
        ctx.auth_result = "registered"
        ctx.log.info("club_registered", module=m.code, customer_id=customer.id)
        raise _Done(m["unknown"] or m.error)
    raise _fail(ctx, m, "unknown_phone")


def _ask(ctx: CallContext, m: ModuleConfig, prompt_name: str, max_digits: int) -> str:
    """Digits typed at a prompt; the recovery digit leaves for ``recovery`` at once."""
    digits = ctx.io.ask(prompt_name, min_digits=1, max_digits=max_digits, timeout_ms=m["timeout_ms"],
                        regex=r"^[0-9*]+$")
    if m["recovery_digit"] and digits == m["recovery_digit"]:
        ctx.auth_result = "recovery"
        ctx.log.info("club_recovery", module=m.code)
        raise _Done(m["recovery"])
    return digits


def _by_number(ctx: CallContext, m: ModuleConfig) -> Customer:
    attempts = m["max_attempts"]
    for attempt in range(1, attempts + 1):
        digits = _ask(ctx, m, m["enter_number"], m["number_max_digits"])
        if digits and digits.isdigit():
            customer = ctx.app.crm.find_by_number(m["customer_number_prefix"] + digits)
            if customer is not None:
                return customer
            ctx.log.info("club_wrong_number", module=m.code, attempt=attempt)
        else:
            ctx.log.info("club_no_input", module=m.code, attempt=attempt)
        if attempt < attempts:
            ctx.io.play(m["wrong_number"])
    raise _fail(ctx, m, "wrong_number")


def _check_pin(ctx: CallContext, m: ModuleConfig, customer: Customer) -> None:
    sec = ctx.cfg.security
    store = ctx.app.store
    attempts = m["max_attempts"]
    for attempt in range(1, attempts + 1):
        # Checked before every try, not once: another call or daemon may lock the customer
        # meanwhile, and its lockout must stop this call's guesses too.
        if store.locked_until(customer.id, time.time()):
            _locked(ctx, m, customer)
        pin = _ask(ctx, m, m["enter_pin"], m["pin_max_digits"])
        typed = bool(pin)
        if typed and store.locked_until(customer.id, time.time()):
            _locked(ctx, m, customer)
        ok = typed and pin.isdigit() and ctx.app.crm.verify_pin(customer.id, pin)
        del pin
        if ok:
            store.clear_pin_failures(customer.id)
            return
        if typed:
            # Only a typed PIN is a guess; silence costs an attempt but not toward the lockout.
            ctx.log.info("club_wrong_pin", module=m.code, attempt=attempt, customer_id=customer.id)
            locked = store.record_pin_failure(customer.id, time.time(), sec.pin_window_seconds,
                                              sec.pin_max_failures, sec.pin_lockout_seconds)
            if locked:
                _locked(ctx, m, customer)
        else:
            ctx.log.info("club_no_input", module=m.code, attempt=attempt, customer_id=customer.id)
        if attempt < attempts:
            ctx.io.play(m["wrong_pin"])
    ctx.claimed = customer  # known by number, not authenticated: journaled, never passed on
    raise _fail(ctx, m, "wrong_pin")


def _locked(ctx: CallContext, m: ModuleConfig, customer: Customer) -> None:
    ctx.claimed = customer
    ctx.auth_result = "locked"
    ctx.log.warning("club_locked", module=m.code, customer_id=customer.id)
    ctx.io.play(m["locked"] or m["auth_failed"])
    raise _Done(m.error)
