"""A call's journal row and the rules of its status, from FreeSWITCH's events and the call's context.

Pure functions of what the call carries: ``CallHandler`` writes the row, twice
(``active`` when the call starts, the final status when it ends); a later session of
the same call continues the row its earlier ones left (``continued``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fsapp import esl, instants
from fsapp.store import now_iso

if TYPE_CHECKING:
    from fsapp.call import BridgeResult, CallContext


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


def row(ctx: CallContext, s: esl.Session, *, status: str, too_long_seconds: int, daemon: str,
        since_us: int | None = None) -> dict[str, Any]:
    """The call's journal row as FreeSWITCH's events and the context tell it (``status`` given).

    ``since_us``: an earlier session's row is continued; only talk bridged from then on is this one's."""
    done = s.hangup_complete
    started, ended, total = _times(s, active=status == "active")
    talk = talk_seconds(s, done, since_us)
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
        "queue": next((a.target[6:] for a in reversed(ctx.io.attempts) if a.target.startswith("queue:")), ""),
        "attempts": [attempt_row(a) for a in ctx.io.attempts],
        "recording": ctx.recording,
        "recording_customer": ctx.recording_customer,
        "hangup_cause": hangup_cause or "",
        "final_destination": ctx.final,
        "entry_module": ctx.modules[0] if ctx.modules else "",
        "daemon": daemon,
    }


def attempt_row(a: BridgeResult) -> dict[str, Any]:
    """One bridge or queue attempt as the journal keeps it: where, what it came to, who answered, talk."""
    talk = (a.end_us - a.start_us) // 1_000_000 if a.start_us and a.end_us > a.start_us else 0
    return {"target": a.target, "outcome": a.outcome, "cause": a.hangup_cause or a.disposition,
            "extension": a.extension, "talk_seconds": talk}


# What a later session of a call keeps from the row its earlier sessions left, when it has none of its own.
_KEPT = ("caller", "caller_name", "called", "customer_id", "customer_name", "customer_type", "auth_method",
         "auth_result", "recording", "recording_customer", "entry_module", "queue")


def continued(prior: dict[str, Any], ctx: CallContext, s: esl.Session, *, status: str, too_long_seconds: int,
              daemon: str) -> dict[str, Any]:
    """The journal row of a later session of a call (FreeSWITCH ran a second ``socket`` line, or resumed
    the call after a daemon died) that goes on from ``prior``, the row its earlier sessions left.

    It starts when the call started; its modules follow the earlier ones; its talk adds only what was
    bridged after the earlier session ended (a replayed session's talk is not counted twice); a call
    someone answered stays answered. The charge is the ledger's, summed when the row is written."""
    since = _epoch_us(prior.get("ended_at"))
    out = row(ctx, s, status=status, too_long_seconds=too_long_seconds, daemon=daemon, since_us=since)
    out["started_at"] = prior["started_at"]
    out["modules"] = [*prior["modules"], *out["modules"]]
    out["attempts"] = [*prior.get("attempts", []), *out["attempts"]]
    for key in _KEPT:
        out[key] = out[key] or prior.get(key) or ""
    out["talk_seconds"] += int(prior.get("talk_seconds") or 0)
    out["too_long"] = out["talk_seconds"] > too_long_seconds
    if out["answered_at"] is None and prior.get("answered_at"):
        out["answered_at"], out["extension"] = prior["answered_at"], prior.get("extension", "")
        if prior.get("status") == "answered":
            out["status"] = "answered"
    out["total_seconds"] = max(out["total_seconds"], int(prior.get("total_seconds") or 0))
    return out


def _epoch_us(iso: str | None) -> int:
    """A journal time (``now_iso``: UTC, or naive local from before; whole seconds) in microseconds; 0 for none."""
    try:
        when = instants.parse(iso)
    except (ValueError, OverflowError):
        return 0
    return int(when.timestamp()) * 1_000_000 if when is not None else 0


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


def talk_seconds(s: esl.Session, done: esl.Event | None, since_us: int | None = None) -> int:
    """Bridged talk from FreeSWITCH's timestamps: BRIDGE..UNBRIDGE spans, else bridge..end epochs.

    Whole seconds rounded down, the rule billing charges by (``fsapp.billing.talk_seconds``)
    and FreeSWITCH's own billsec: 60.6 s of talk is 60 s in the journal and one minute billed.
    ``since_us`` (a later session of the call): spans bridged before it are not counted, nor the
    channel's bridge..end epochs (which cover every session of the call).
    """
    total_us = 0
    for span in s.bridges:
        if not span.start_us or span.start_us < (since_us or 0):
            continue  # FreeSWITCH sent no usable time for it, or an earlier session counted it
        end = span.end_us or s.hangup_us or (esl.epoch_us(done.var("end_uepoch")) if done else 0)
        if end > span.start_us:
            total_us += end - span.start_us
    if not total_us and done is not None and since_us is None:
        bridge_us, end_us = esl.epoch_us(done.var("bridge_uepoch")), esl.epoch_us(done.var("end_uepoch"))
        if bridge_us and end_us > bridge_us:
            total_us = end_us - bridge_us
    return total_us // 1_000_000
