"""The legs of one call -> its journal row, as a manager reads it.

- **direction**: ``call_direction`` where the dialplan sets it (FusionPBX's
  ``call-direction`` extension; see ``dialplan/fsapp.xml``), else from the A leg:
  a registered user calling an extension is ``local``, calling anything else
  ``outbound``; everything else ``inbound``. FreeSWITCH's own ``direction`` is the
  channel's and is not used.
- **status**: ``answered`` when a person was bridged (a B leg answered, or the
  queue's ``cc_cause=answered``), ``missed`` when someone was rung and nobody
  answered (``missed_cause``: no_answer, busy, cancelled, unregistered, failed),
  else ``completed`` (the dialplan answered: an IVR-only call) or ``abandoned``.
  ``billsec`` is not used: fsapp answers every call it takes.
- **extension**: for outbound and local calls the agent who called; for inbound
  ones the agent who answered (the queue's ``cc_agent``, else the callee), or for
  a missed call the one that rang.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fsapp.store import now_iso

EXTENSION_RE = re.compile(r"\d{2,6}")
DIRECTIONS = ("inbound", "outbound", "local")
MISSED_CAUSES = ("no_answer", "busy", "cancelled", "unregistered", "failed")

_CAUSES = {
    "NO_ANSWER": "no_answer", "NOANSWER": "no_answer", "ALLOTTED_TIMEOUT": "no_answer",
    "PROGRESS_TIMEOUT": "no_answer", "NO_USER_RESPONSE": "no_answer", "RECOVERY_ON_TIMER_EXPIRE": "no_answer",
    "USER_BUSY": "busy", "BUSY": "busy", "CALL_REJECTED": "busy",
    "ORIGINATOR_CANCEL": "cancelled", "CANCEL": "cancelled", "LOSE_RACE": "cancelled",
    "USER_NOT_REGISTERED": "unregistered", "SUBSCRIBER_ABSENT": "unregistered",
    "UNALLOCATED_NUMBER": "unregistered", "NO_ROUTE_DESTINATION": "unregistered",
    "CHANUNAVAIL": "unregistered",
}
# mod_callcenter's cc_cause on a member that no agent answered
_CC_CAUSES = {"cancel": "cancelled", "timeout": "no_answer", "no agent timeout": "no_answer", "exit": "no_answer"}


def missed_cause(disposition: str) -> str:
    return _CAUSES.get(disposition.upper(), "failed") if disposition else ""


def call_row(legs: Iterable[dict[str, Any]], *, too_long_seconds: int) -> dict[str, Any]:
    """The journal row of one call from its legs (the A leg, if it has come, and its B legs)."""
    legs = list(legs)
    a = next((leg for leg in legs if leg["a_leg"]), None)
    bs = [leg for leg in legs if not leg["a_leg"]]
    first = a or min(bs, key=lambda leg: leg["times"]["created_time"] or 1 << 62)
    av = a["vars"] if a else {}
    person = _answered(a, bs)
    direction = _direction(a, bs)
    status, cause = _status(a, bs, person)
    start_us = first["times"]["created_time"] or _int(first["vars"].get("start_uepoch"))
    end_us = max((_end_us(leg) for leg in legs), default=0)
    talk = _talk_seconds(a, bs)
    answered_us = _answered_us(a, person)
    return {
        "uuid": first["call_uuid"],
        "started_at": now_iso(start_us / 1e6) if start_us else now_iso(),
        "answered_at": now_iso(answered_us / 1e6) if answered_us else None,
        "ended_at": now_iso(end_us / 1e6) if end_us else None,
        "direction": direction,
        "caller": first["caller"],
        "caller_name": first["caller_name"],
        "called": _called(a, bs, direction),
        "extension": _extension(a, bs, person, direction, status),
        "status": status,
        "missed_cause": cause,
        "total_seconds": _int(av.get("duration")) if a else _seconds(end_us - start_us),
        "talk_seconds": talk,
        "too_long": talk > too_long_seconds,
        "ring_seconds": _seconds(sum(_ring_us(b) for b in bs)),
        "wait_seconds": _seconds((answered_us or end_us) - start_us) if start_us else 0,
        "hold_seconds": max((_int(leg["vars"].get("hold_accum_seconds")) for leg in legs), default=0),
        "hangup_by": _hangup_by(a, bs),
        "queue": _queue(a, bs),
        "recording": next((leg["recording"] for leg in ([a] if a else []) + bs if leg["recording"]), ""),
        "hangup_cause": av.get("hangup_cause", "") if a else "",
        **_quality("caller", a),
        **_quality("callee", person or (bs[-1] if bs else None)),
        "cdr_legs": len(legs),
        "cdr_a_leg": a is not None,
    }


def attempts(legs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each B leg of a call (a bridge's callee, a queue's agent) as an attempt: where it rang,
    what came of it (answered, or its missed cause), ring and talk seconds, how it ended."""
    out = []
    for b in (leg for leg in legs if not leg["a_leg"]):
        answered = bool(b["times"]["answered_time"])
        out.append({"target": b["vars"].get("cc_agent") or b["channel"] or b["destination"],
                    "outcome": "answered" if answered else missed_cause(b["vars"].get("hangup_cause") or "NO_ANSWER"),
                    "ring_seconds": _seconds(_ring_us(b)), "talk_seconds": _bill_seconds(b) if answered else 0,
                    "hangup_cause": b["vars"].get("hangup_cause", ""),
                    "mos": _float(b["vars"].get("rtp_audio_in_mos"))})
    return out


def _answered(a: dict[str, Any] | None, bs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The B leg a person answered and was bridged on (the last one, after a transfer), if any."""
    answered = [b for b in bs if b["times"]["answered_time"] and (b["times"]["bridged_time"] or _bridged(b))]
    return answered[-1] if answered else None


def _bridged(leg: dict[str, Any]) -> bool:
    return bool(leg["vars"].get("bridge_uuid") or leg["vars"].get("last_bridge_to"))


def _person_answered(a: dict[str, Any] | None, person: dict[str, Any] | None) -> bool:
    if person is not None:
        return True
    if a is None:
        return False
    v = a["vars"]
    if v.get("cc_cause") == "answered" or v.get("cc_agent_bridged") == "true":
        return True
    return v.get("originate_disposition") == "SUCCESS" and bool(a["times"]["bridged_time"])


def _status(a: dict[str, Any] | None, bs: list[dict[str, Any]], person: dict[str, Any] | None) -> tuple[str, str]:
    if _person_answered(a, person):
        return "answered", ""
    av = a["vars"] if a else {}
    disposition = av.get("originate_disposition") or av.get("DIALSTATUS")
    if disposition:
        return "missed", missed_cause(disposition)
    if av.get("cc_cause"):
        return "missed", _CC_CAUSES.get(av["cc_cause"], "no_answer")
    if bs:
        b = bs[-1]
        return "missed", missed_cause(b["vars"].get("hangup_cause") or "NO_ANSWER")
    if a is not None and a["times"]["answered_time"]:
        return "completed", ""
    return "abandoned", ""


def _queue(a: dict[str, Any] | None, bs: list[dict[str, Any]]) -> str:
    """mod_callcenter's queue (``cc_queue``) without its ``@domain``: the name fsapp's ``queue:NAME`` uses."""
    for leg in ([a] if a else []) + bs:
        if leg["vars"].get("cc_queue"):
            return str(leg["vars"]["cc_queue"]).split("@", 1)[0]
    return ""


def _direction(a: dict[str, Any] | None, bs: list[dict[str, Any]]) -> str:
    for leg in ([a] if a else []) + bs:
        d = leg["vars"].get("call_direction", "").lower()
        if d in DIRECTIONS:
            return d
    if a is None or not _registered_user(a):
        return "inbound"
    return "local" if _to_extension(a, bs) else "outbound"


def _registered_user(leg: dict[str, Any]) -> bool:
    v = leg["vars"]
    return v.get("sip_authorized") == "true" or bool(v.get("user_name"))


def _to_extension(a: dict[str, Any], bs: list[dict[str, Any]]) -> bool:
    if a["vars"].get("dialed_user") or any(b["vars"].get("dialed_user") for b in bs):
        return True
    return bool(EXTENSION_RE.fullmatch(a["destination"]))


def _calling_agent(a: dict[str, Any] | None, bs: list[dict[str, Any]]) -> str:
    if a is None:  # a B leg's accountcode is the callee's: the caller is its caller profile
        return bs[0]["caller"] if bs else ""
    v = a["vars"]
    return v.get("user_name") or v.get("accountcode") or a["caller"]


def _extension(a: dict[str, Any] | None, bs: list[dict[str, Any]], person: dict[str, Any] | None,
               direction: str, status: str) -> str:
    if direction != "inbound":
        return _calling_agent(a, bs)
    av = a["vars"] if a else {}
    if av.get("cc_agent") or any(b["vars"].get("cc_agent") for b in bs):
        return av.get("cc_agent") or next(b["vars"]["cc_agent"] for b in bs if b["vars"].get("cc_agent"))
    callee = person or (bs[-1] if bs and status == "missed" else None)
    if callee is not None:
        v = callee["vars"]
        return v.get("dialed_user") or v.get("accountcode") or callee["destination"]
    if status == "answered":
        return av.get("last_sent_callee_id_number", "")
    return ""


def _called(a: dict[str, Any] | None, bs: list[dict[str, Any]], direction: str) -> str:
    if a is not None and direction == "inbound":
        return a["destination"]
    if direction == "outbound":
        if a is not None and a["vars"].get("callee_id_number"):
            return a["vars"]["callee_id_number"]
        if bs:
            return bs[-1]["destination"]
    if a is not None:
        return a["vars"].get("dialed_extension") or a["destination"]
    return bs[0]["destination"] if bs else ""


def _talk_seconds(a: dict[str, Any] | None, bs: list[dict[str, Any]]) -> int:
    billed = [b for b in bs if b["times"]["answered_time"]]
    if billed:
        return sum(_bill_seconds(b) for b in billed)
    if a is not None and a["times"]["bridged_time"] and a["times"]["hangup_time"] > a["times"]["bridged_time"]:
        return _seconds(a["times"]["hangup_time"] - a["times"]["bridged_time"])
    return 0


def _bill_seconds(leg: dict[str, Any]) -> int:
    v = leg["vars"]
    if v.get("billusec"):
        return _seconds(_int(v["billusec"]))
    if v.get("billmsec"):
        return _seconds(_int(v["billmsec"]) * 1000)
    return _int(v.get("billsec"))


def _answered_us(a: dict[str, Any] | None, person: dict[str, Any] | None) -> int:
    if a is not None and a["times"]["bridged_time"]:
        return a["times"]["bridged_time"]
    if person is not None:
        return person["times"]["bridged_time"] or person["times"]["answered_time"]
    return 0


def _ring_us(b: dict[str, Any]) -> int:
    t = b["times"]
    stop = t["answered_time"] or t["hangup_time"]
    return max(0, stop - t["created_time"]) if t["created_time"] and stop else 0


def _end_us(leg: dict[str, Any]) -> int:
    return leg["times"]["hangup_time"] or _int(leg["vars"].get("end_uepoch"))


def _hangup_by(a: dict[str, Any] | None, bs: list[dict[str, Any]]) -> str:
    """caller, callee or system (fsapp or the dialplan), from sip_hangup_disposition."""
    if a is not None and a["vars"].get("sip_hangup_disposition") in ("recv_bye", "recv_cancel"):
        return "caller"
    if any(b["vars"].get("sip_hangup_disposition") == "recv_bye" for b in bs):
        return "callee"
    return "system" if a is not None or bs else ""


def _quality(side: str, leg: dict[str, Any] | None) -> dict[str, Any]:
    """The RTP figures FreeSWITCH measured on what it received on ``leg`` (None: no media)."""
    v = leg["vars"] if leg else {}
    return {
        f"{side}_mos": _float(v.get("rtp_audio_in_mos")),
        f"{side}_quality": _float(v.get("rtp_audio_in_quality_percentage")),
        f"{side}_flaws": _int_or_none(v.get("rtp_audio_in_flaw_total")),
        f"{side}_jitter": _float(v.get("rtp_audio_in_jitter_max_variance")),
    }


def _seconds(us: int) -> int:
    return max(0, int(round(us / 1e6)))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        return None
