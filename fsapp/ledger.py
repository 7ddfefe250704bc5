"""Meters, charges and reconciliation.

A billed bridge is metered in the store before it starts, stamped with
FreeSWITCH's CHANNEL_BRIDGE time when the callee answers, and re-stamped every
``[billing] meter_heartbeat_seconds`` while it lasts. When the talk ends the meter
is settled from FreeSWITCH's timestamps. If the daemon dies mid-bridge, the meter
stays open; ``reconcile`` (run by every daemon at start and periodically, and by
``fsapp ledger reconcile``) charges it from the last stamp, exactly once: a crash
loses at most one heartbeat interval of talk.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from fsapp import billing
from fsapp.store import Store, now_iso


def outbox_for(
    meter: dict[str, Any], units: int, amount: int, talk_seconds: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """The CRM writes a charge causes: an invoice, and a payment link if asked for."""
    if not amount:
        return []
    uuid, module = meter["call_uuid"], meter["module"]
    rows: list[tuple[str, str, dict[str, Any]]] = [(
        "invoice", f"{uuid}-{module}-invoice", {
            "customer_id": meter["customer_id"], "product_code": meter["product_code"],
            "product_name": meter["product_name"], "invoice_type": meter["invoice_type"],
            "invoice_search_field": meter.get("invoice_search_field", ""), "amount": amount,
            "account": meter["account"], "call_uuid": uuid, "talk_seconds": talk_seconds, "units": units,
        },
    )]
    if meter["send_payment_link"] and meter["mobile"]:
        rows.append(("payment_link", f"{uuid}-{module}-link", {
            "customer_id": meter["customer_id"], "mobile": meter["mobile"], "amount": amount,
            "account": meter["account"], "invoice_type": meter["invoice_type"],
            "invoice_search_field": meter.get("invoice_search_field", ""),
        }))
    return rows


def settle(store: Store, meter: dict[str, Any], talk_seconds: int, *, source: str = "call",
           now: float | None = None) -> dict[str, Any] | None:
    """Charge a meter for ``talk_seconds`` (once); None if it was already settled."""
    units, amount = billing.charge(talk_seconds, meter["interval_minutes"], meter["amount_per_interval"])
    return store.settle(meter, talk_seconds=talk_seconds, units=units, amount=amount, source=source,
                        outbox=outbox_for(meter, units, amount, talk_seconds),
                        now=time.time() if now is None else now)


def _daemon_alive(daemon: str, me: str) -> bool:
    """Whether the daemon ``host:pid:started`` still runs (another host: assumed yes)."""
    host, _, rest = daemon.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: judged by its heartbeat age only
    if int(pid) == os.getpid():
        return daemon == me  # an earlier daemon that had our pid (a restarted container)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_dead_calls(store: Store, *, me: str, max_age_seconds: float, now: float | None = None) -> int:
    """Journal rows a dead daemon left 'active' become 'failed'; so do any older than a call can last."""
    now = time.time() if now is None else now
    closed = 0
    for daemon in store.active_call_daemons():
        if daemon != me and not _daemon_alive(daemon, me):
            closed += store.close_stale_calls(daemon)
    closed += store.fail_calls_started_before(now_iso(now - max_age_seconds))
    return closed


def reconcile(store: Store, *, heartbeat_seconds: float, me: str = "", busy: frozenset[str] | None = None,
              now: float | None = None, log: Any = None) -> list[dict[str, Any]]:
    """Settle the meters that dead daemons left open; return the charges made.

    Given ``busy`` (``me``'s live calls and the charges it keeps for later), ``me``'s own meters
    are settled too when their call is not in it: a call that ended without settling its meter."""
    now = time.time() if now is None else now
    stale_before = now - 3 * heartbeat_seconds
    made = []
    for meter in store.open_meters():
        if meter["daemon"] == me:
            dead = busy is not None and meter["call_uuid"] not in busy
        elif meter["daemon"].partition(":")[0] == socket.gethostname():
            dead = not _daemon_alive(meter["daemon"], me)  # this host: its process tells
        else:
            dead = meter["beat_at"] < stale_before  # another host: its heartbeat tells
        if not dead:
            continue
        talk = billing.talk_seconds(meter["bridge_us"], meter["seen_us"]) if meter["bridge_us"] else 0
        with store.transaction():  # the charge and the journal's record of it, together
            charge = settle(store, meter, talk, source="reconciled", now=now)
            if charge is not None:
                store.call_reconciled(meter["call_uuid"], charge["amount"], talk)
        if charge is not None:
            made.append(charge)
            if log is not None:
                log.warning("meter_reconciled", call_uuid=meter["call_uuid"], module=meter["module"],
                            daemon=meter["daemon"], talk_seconds=talk, amount=charge["amount"])
    return made
