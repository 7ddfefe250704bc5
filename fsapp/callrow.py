"""A call's journal row and the rules of its status, from FreeSWITCH's events and the call's context.

Pure functions of what the call carries: ``CallHandler`` writes the row, twice
(``active`` when the call starts, the final status when it ends).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fsapp import esl
from fsapp.store import now_iso

if TYPE_CHECKING:
    from fsapp.call import CallContext


def status(ctx: CallContext, outcome: str) -> str:
    """The journal status of a call that ended with ``outcome`` (caller_hangup, socket, crash, ...)."""
    if ctx.answered is not None:  # a person talked: answered, even if the flow then transferred it
        return "answered"
    if ctx.transferred:
        return "transferred"
    if ctx.io.attempts:
        return "missed"
    if ctx.rejected:
        return "rejected"  # turned away (above max_calls) before any person was rung
    if outcome == "crash" or (ctx.error_reason and outcome != "caller_hangup"):
        return "failed"
    if outcome in ("caller_hangup", "socket"):
        return "abandoned"
    return "completed"


def row(ctx: CallContext, s: esl.Session, *, status: str, too_long_seconds: int, daemon: str) -> dict[str, Any]:
    """The call's journal row as FreeSWITCH's events and the context tell it (``status`` given)."""
    done = s.hangup_complete
    started, ended, total = _times(s, active=status == "active")
    talk = talk_seconds(s, done)
    answered = ctx.answered
    answered_us = answered.start_us if answered else 0
    who = ctx.customer or ctx.claimed
    hangup_cause = s.hangup_cause
    if done is not None:
        hangup_cause = done.var("hangup_cause") or done.get("Hangup-Cause") or hangup_cause
    return {
        "uuid": ctx.uuid,
        "started_at": now_iso(started),
        "answered_at": now_iso(answered_us / 1e6) if answered_us else None,
        "ended_at": now_iso(ended) if ended else None,
        "direction": ctx.direction,
        "caller": ctx.caller,
        "caller_name": ctx.caller_name,
        "called": ctx.called,
        "extension": answered.extension if answered else "",
        "status": status,
        "total_seconds": total,
        "talk_seconds": talk,
        "too_long": talk > too_long_seconds,
        "customer_id": who.id if who else "",
        "customer_name": who.name if who else "",
        "customer_type": who.type if who else "",
        "modules": ctx.modules,
        "auth_method": ctx.auth_method,
        "auth_result": ctx.auth_result,
        "charge": ctx.charge,
        "recording": ctx.recording,
        "recording_customer": ctx.recording_customer,
        "hangup_cause": hangup_cause or "",
        "final_destination": ctx.final,
        "entry_module": ctx.modules[0] if ctx.modules else "",
        "daemon": daemon,
    }


def _times(s: esl.Session, *, active: bool) -> tuple[float, float | None, int]:
    """Start and end (epoch seconds; no end while ``active`` and not hung up) and total seconds."""
    ch = s.channel
    done = s.hangup_complete
    created_us = esl.epoch_us(ch.get("Caller-Channel-Created-Time")) or int(time.time() * 1e6)
    started = created_us / 1e6
    end_us = 0
    total: int | None = None
    if done is not None:
        end_us = esl.epoch_us(done.var("end_uepoch")) or esl.epoch_us(done.get("Caller-Channel-Hangup-Time"))
        duration = done.var("duration")
        if duration.isascii() and duration.isdigit() and len(duration) < 10:
            total = int(duration)
    if end_us and end_us < created_us:
        end_us = 0
    ended: float | None = end_us / 1e6 if end_us else None
    if not active and ended is None:
        ended = time.time()
        total = max(0, int(round(ended - started)))
    elif total is None:
        total = max(0, int(round(ended - started))) if ended is not None else 0
    return started, ended, total


def talk_seconds(s: esl.Session, done: esl.Event | None) -> int:
    """Bridged talk from FreeSWITCH's timestamps: BRIDGE..UNBRIDGE spans, else bridge..end epochs.

    Whole seconds rounded down, the rule billing charges by (``fsapp.billing.talk_seconds``)
    and FreeSWITCH's own billsec: 60.6 s of talk is 60 s in the journal and one minute billed.
    """
    total_us = 0
    for span in s.bridges:
        if not span.start_us:
            continue  # FreeSWITCH sent no usable time for it
        end = span.end_us or s.hangup_us or (esl.epoch_us(done.var("end_uepoch")) if done else 0)
        if end > span.start_us:
            total_us += end - span.start_us
    if not total_us and done is not None:
        bridge_us, end_us = esl.epoch_us(done.var("bridge_uepoch")), esl.epoch_us(done.var("end_uepoch"))
        if bridge_us and end_us > bridge_us:
            total_us = end_us - bridge_us
    return total_us // 1_000_000
