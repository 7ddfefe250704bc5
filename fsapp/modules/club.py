"""``customer_club`` (seed 002): identify the caller against the CRM.

``auth = "phone"``: the caller ID must be a phone registered for a customer
(national and international forms match). ``"customer_number"``: the caller types
it (``customer_number_prefix`` is prepended). ``"pin"``: customer number, then the
phone PIN, with lockouts per customer and per caller ID counted across calls and
daemons (each PIN takes its slot before it is verified) and a daemon-wide alarm.
Identified -> ``next`` with ``ctx.customer`` set; not -> ``auth_failed``, ``error``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fsapp import digits, phones, pins
from fsapp.crm import CRMError, Customer
from fsapp.options import Opt, dest, prompt

if TYPE_CHECKING:
    from fsapp.call import CallContext
    from fsapp.options import ModuleConfig

SCHEMA = {
    "auth": Opt(str, "phone", choices=("phone", "customer_number", "pin")),
    "customer_number_prefix": Opt(str, ""),
    "number_max_digits": Opt(int, 12, minimum=1, maximum=64),
    "pin_max_digits": Opt(int, 8, minimum=4, maximum=12),
    "max_attempts": Opt(int, 3, minimum=1, maximum=100),
    "timeout_ms": Opt(int, 6000, minimum=500, maximum=300_000),
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
    limits = pins.PinLimits.of(ctx.cfg.security, pins.caller_key(ctx.caller, ctx.cfg.crm.region))
    attempts = m["max_attempts"]
    for attempt in range(1, attempts + 1):
        # Checked before every try, not once: another call or daemon may lock the customer
        # (or this caller ID) meanwhile, and its lockout must stop this call's guesses too.
        scope = ctx.app.store.pin_locked(customer.id, limits.caller, time.time())
        if scope:
            _locked(ctx, m, customer, scope)
        pin = _ask(ctx, m, m["enter_pin"], m["pin_max_digits"])
        if not pin:  # only a typed PIN is a guess; silence costs an attempt but not toward the lockout
            ctx.log.info("club_no_input", module=m.code, attempt=attempt, customer_id=customer.id)
        elif _try_pin(ctx, m, customer, limits, pin, attempt):
            return
        del pin
        if attempt < attempts:
            ctx.io.play(m["wrong_pin"])
    ctx.claimed = customer  # known by number, not authenticated: journaled, never passed on
    raise _fail(ctx, m, "wrong_pin")


def _try_pin(ctx: CallContext, m: ModuleConfig, customer: Customer, limits: pins.PinLimits, pin: str,
             attempt: int) -> bool:
    """One typed PIN: its slot is taken before it is verified (see ``Store.pin_reserve``); True if right."""
    store = ctx.app.store
    slot, scope = store.pin_reserve(customer.id, limits, time.time())
    if not slot:
        _locked(ctx, m, customer, scope)
    try:
        ok = digits.only_ascii_digits(pin) and ctx.app.crm.verify_pin(customer.id, pin)
    except CRMError:
        store.pin_release(slot)  # no verdict reached the caller: not a guess
        raise
    if ok:
        store.pin_succeeded(slot, customer.id, time.time())
        return True
    ctx.log.info("club_wrong_pin", module=m.code, attempt=attempt, customer_id=customer.id)
    ctx.app.metrics.pin_failure("global")
    scope, alarm = store.pin_failed(slot, customer.id, limits, time.time())
    if alarm:
        ctx.log.error("pin_failure_alarm", failures=limits.alarm_failures, window_seconds=limits.alarm_window)
        ctx.app.metrics.pin_alarm()
    if scope:
        _locked(ctx, m, customer, scope)
    return False


def _locked(ctx: CallContext, m: ModuleConfig, customer: Customer, scope: str) -> None:
    ctx.claimed = customer
    ctx.auth_result = "locked"
    ctx.log.warning("club_locked", module=m.code, customer_id=customer.id, scope=scope)
    ctx.app.metrics.pin_failure(scope)
    ctx.io.play(m["locked"] or m["auth_failed"])
    raise _Done(m.error)
