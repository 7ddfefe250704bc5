"""``telephone_bill`` (seed 000): paid service billed by bridged talk time.

Debt above ``max_debt``: ``debt_prompt`` and the amount, then ``error``. Otherwise
the call is metered (see ``fsapp.ledger``) and bridged to ``targets`` in order until
one answers; the talk is charged from FreeSWITCH's CHANNEL_BRIDGE/UNBRIDGE (or
hangup) timestamps: ceil(talk / interval) * amount_per_interval rial, into the
ledger and, through the outbox, an invoice in the CRM (and a payment link).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fsapp import billing, flow, ledger
from fsapp.crm import CRMError
from fsapp.options import Opt, field_name, prompt
from fsapp.store import StorageError

if TYPE_CHECKING:
    from fsapp.call import BridgeResult, CallContext
    from fsapp.options import ModuleConfig

SCHEMA = {
    "product_name": Opt(str, ""),
    "product_code": Opt(str, "", required=True),
    "invoice_type": Opt(str, "invoice"),
    "invoice_search_field": Opt(str, ""),
    "interval_minutes": Opt(int, 1, minimum=1, maximum=1440),
    "amount_per_interval": Opt(int, 0, minimum=0, required=True, maximum=billing.MAX_AMOUNT_PER_INTERVAL),
    "send_payment_link": Opt(bool, False),
    "account": Opt(str, ""),
    "max_debt": Opt(int, 0, minimum=-billing.MAX_RIAL, maximum=billing.MAX_RIAL),
    "ring_seconds": Opt(int, 25, minimum=1, maximum=3600),
    "targets": Opt(list, (), "destlist"),
    "debt_prompt": prompt(),
    "connecting": prompt(),
}


def validate(m: ModuleConfig) -> list[str]:
    problems = []
    if not m["targets"]:
        problems.append("targets: at least one ext: or queue: destination")
    for i, t in enumerate(m["targets"]):
        try:
            d = flow.parse_dest(t)
        except ValueError:
            continue  # reported by the graph check
        if d.kind not in ("ext", "queue"):
            problems.append(f"targets[{i}]: {t!r} is not an ext: or queue: destination")
    problems.extend(field_name("invoice_search_field", m["invoice_search_field"]))
    return problems


def run(ctx: CallContext, m: ModuleConfig) -> str:
    customer = ctx.customer
    if customer is None:
        ctx.log.info("bill_no_customer", module=m.code)
        return m.error
    try:
        debt = ctx.app.crm.balance(customer.id, m["invoice_type"])
    except CRMError as exc:
        ctx.log.warning("bill_crm_failed", module=m.code, operation=exc.operation, reason=exc.reason)
        ctx.error_reason = f"crm {exc.operation or 'request'} failed"
        return m.error
    if debt > m["max_debt"]:
        ctx.log.info("bill_debt_exceeded", module=m.code, customer_id=customer.id, debt=debt, max_debt=m["max_debt"])
        ctx.io.say_amount(debt, before=m["debt_prompt"])
        return m.error

    ctx.io.lead(m["connecting"])  # goes out with the bridge
    store = ctx.app.store
    now = time.time()
    meter = {
        "call_uuid": ctx.uuid, "module": m.code, "customer_id": customer.id,
        "interval_minutes": m["interval_minutes"], "amount_per_interval": m["amount_per_interval"],
        "product_code": m["product_code"], "product_name": m["product_name"], "invoice_type": m["invoice_type"],
        "invoice_search_field": m["invoice_search_field"], "account": m["account"],
        "send_payment_link": int(m["send_payment_link"]),
        "mobile": ctx.mobile or customer.mobile, "target": "", "bridge_us": 0, "seen_us": 0, "state": "open",
        "daemon": ctx.app.daemon_id, "opened_at": now, "beat_at": now,
    }
    visit = 1
    while not store.meter_open(meter):
        # Taken: the call came back here, or a daemon that died mid-call metered it
        # before FreeSWITCH resumed the call on this one. Each talk is its own meter.
        visit += 1
        meter["module"] = f"{m.code}#{visit}"
    heartbeat = ctx.cfg.billing.meter_heartbeat_seconds
    bridged_at: list[float] = []  # monotonic time of CHANNEL_BRIDGE, to stamp heartbeats

    def on_answer(bridge_us: int) -> None:
        meter["bridge_us"] = bridge_us
        bridged_at.append(time.monotonic())
        _stamp(ctx, m, store.meter_bridged, ctx.uuid, meter["module"], bridge_us, time.time())

    def beat() -> None:
        # Stamped while ringing too: a meter whose beat is stale is taken for a dead
        # daemon's and reconciled, which would leave the talk that follows unbilled.
        seen = 0
        if meter["bridge_us"] and bridged_at:
            seen = meter["bridge_us"] + int((time.monotonic() - bridged_at[-1]) * 1_000_000)
        _stamp(ctx, m, store.meter_beat, ctx.uuid, meter["module"], seen, time.time())

    result: BridgeResult | None = None
    try:
        for target in m["targets"]:
            dest = flow.parse_dest(target)
            ctx.log.info("bridge_started", module=m.code, target=target)
            result = ctx.io.bridge(dest, m["ring_seconds"], on_answer=on_answer, tick=(heartbeat, beat))
            ctx.log.info("bridge_ended", module=m.code, target=target, outcome=result.outcome,
                         disposition=result.disposition, talk_seconds=result.talk_seconds)
            if result.answered:
                break
    except BaseException:
        # The caller hung up, the socket went or the daemon cut the call (drain), maybe
        # mid-talk: charge what FreeSWITCH timestamped (the cut time if it said nothing), then end.
        _settle(ctx, m, meter)
        raise
    _settle(ctx, m, meter, result)
    return m.next if result is not None and result.answered else m.error


def _stamp(ctx: CallContext, m: ModuleConfig, write: Callable[..., None], *args: object) -> None:
    """A meter stamp that fails must not cut the talk: the settle at the end still charges it."""
    try:
        write(*args)
    except StorageError as exc:
        ctx.log.warning("meter_stamp_failed", module=m.code, reason=str(exc))


def _settle(ctx: CallContext, m: ModuleConfig, meter: dict, result: BridgeResult | None = None) -> None:
    if result is not None and result.answered:
        start, end = result.start_us, result.end_us
    elif meter["bridge_us"]:
        start, end = ctx.io.talk_span()  # the caller hung up mid-talk
    else:
        start = end = 0
    talk = billing.talk_seconds(start, end)
    try:
        charge = ledger.settle(ctx.app.store, meter, talk)
    except StorageError as exc:
        # The talk is known from FreeSWITCH's timestamps: keep it, charge it when the database is back.
        ctx.log.error("bill_settle_failed", module=m.code, talk_seconds=talk, reason=str(exc))
        ctx.app.settle_later(meter, talk)
        return
    if charge is None:
        ctx.log.warning("bill_already_settled", module=m.code)
        return
    ctx.charge += charge["amount"]
    if charge["amount"]:
        ctx.app.metrics.charge(charge["amount"])
        ctx.app.outbox.poke()
    ctx.log.info("call_charged", module=m.code, customer_id=meter["customer_id"], talk_seconds=talk,
                 units=charge.get("units", 0), amount=charge["amount"])
