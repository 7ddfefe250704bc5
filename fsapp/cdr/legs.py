"""One mod_json_cdr leg: the body as posted (or as left on disk) -> a flat record.

mod_json_cdr sends the JSON raw (``encode=false``, ``Content-Type: application/json``),
as ``cdr=`` + the URL-encoded JSON (``encode=true``), or as ``cdr=`` + base64
(``encode=base64``). The files it writes to ``err-log-dir`` hold the same text
without the ``cdr=``. With ``encode-values=true`` (its default) every value under
``variables`` is itself URL-encoded (``%20`` for a space, never ``+``); values are
decoded here whichever way the module is set, since the encoder never leaves a
``%`` that is not followed by two hex digits.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import orjson


class LegError(ValueError):
    """The body is not a CDR fsapp can read; the message says why."""


_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")

# Variables a call's row is built from (everything else stays in the raw body).
WANTED = frozenset(
    "uuid direction call_direction accountcode user_name dialed_user dialed_extension user_context sip_authorized "
    "domain_name cc_agent cc_agent_bridged cc_cause cc_queue cc_side cc_member_session_uuid cc_agent_uuid "
    "cc_record_filename last_sent_callee_id_number callee_id_number originator originating_leg_uuid bridge_uuid "
    "last_bridge_to signal_bond originate_disposition DIALSTATUS originate_failed_cause hangup_cause "
    "sip_hangup_disposition sip_invite_failure_status billusec billmsec billsec duration hold_accum_seconds "
    "start_uepoch answer_uepoch bridge_uepoch end_uepoch record_path record_name rtp_audio_in_mos "
    "rtp_audio_in_quality_percentage rtp_audio_in_flaw_total rtp_audio_in_jitter_max_variance".split()
)
_WANTED = tuple(sorted(WANTED))
TIMES = ("created_time", "answered_time", "bridged_time", "progress_time", "hangup_time")


def body_json(body: bytes, content_type: str = "") -> bytes:
    """The JSON text of a posted body or an err-log-dir file, whichever encoding it came in."""
    text = body.strip()
    if text.startswith(b"cdr="):
        text = text[4:]
        if "base64" in content_type:
            return _base64(text)
    if text[:1] in (b"{", b"["):
        return text
    if text[:3].upper() == b"%7B":
        return unquote_to_bytes(text)
    if text.startswith(b"ey"):  # '{"' in base64
        return _base64(text)
    raise LegError("not a CDR: expected JSON, or mod_json_cdr's cdr= form body")


def _base64(text: bytes) -> bytes:
    try:
        return base64.b64decode(unquote_to_bytes(text), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise LegError(f"cdr= is not valid base64: {exc}") from None


def parse(body: bytes, content_type: str = "") -> dict[str, Any]:
    """A leg's flat record: ``uuid``, ``call_uuid``, ``a_leg``, ``vars``, ``times``, ``profile``..."""
    try:
        doc = orjson.loads(body_json(body, content_type))
    except orjson.JSONDecodeError as exc:
        raise LegError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise LegError("not a CDR: the JSON is not an object")
    raw = doc.get("variables")
    if not isinstance(raw, dict):
        raise LegError("not a CDR: no \"variables\" object")
    flow = _first_callflow(doc.get("callflow"))
    profile = flow.get("caller_profile") if isinstance(flow.get("caller_profile"), dict) else {}
    v = {k: raw[k] for k in _WANTED if k in raw}  # a look-up each: cheaper than a set operation over every variable
    for k, value in v.items():
        if type(value) is not str or "%" in value or "\x00" in value:  # the few that need more than a look
            v[k] = _value(value)
    uuid = v.get("uuid") or str(profile.get("uuid") or "")
    if not uuid:
        raise LegError("not a CDR: no variables.uuid")
    is_b, originator = _originator(profile)
    a_leg = not is_b and not v.get("originator") and not v.get("cc_member_session_uuid")
    return {
        "uuid": uuid,
        "call_uuid": uuid if a_leg else _a_uuid(v, originator),
        "a_leg": a_leg,
        "vars": v,
        "times": _times(flow.get("times")),
        "caller": _text(profile.get("caller_id_number")),
        "caller_name": _text(profile.get("caller_id_name")),
        "destination": _text(profile.get("destination_number")),
        "context": _text(profile.get("context")),
        "channel": _text(profile.get("chan_name")),
        "recording": _recording(v, doc.get("app_log")),
    }


def _first_callflow(callflow: Any) -> dict[str, Any]:
    if isinstance(callflow, list):  # newest profile first
        callflow = callflow[0] if callflow else {}
    return callflow if isinstance(callflow, dict) else {}


def _originator(profile: dict[str, Any]) -> tuple[bool, str]:
    """(a B leg, the uuid of the leg that originated it) from its caller profile."""
    originator = profile.get("originator")
    if not isinstance(originator, dict):
        return False, ""
    profiles = originator.get("originator_caller_profiles")
    first = profiles[0] if isinstance(profiles, list) and profiles else {}
    return True, _text(first.get("uuid")) if isinstance(first, dict) else ""


def _a_uuid(v: dict[str, str], originator: str) -> str:
    for key in ("cc_member_session_uuid", "originating_leg_uuid", "originator"):
        if v.get(key):
            return v[key]
    return originator or v.get("bridge_uuid") or v.get("last_bridge_to") or v.get("signal_bond") or v["uuid"]


def _times(times: Any) -> dict[str, int]:
    times = times if isinstance(times, dict) else {}
    return {k: _int(times.get(k)) for k in TIMES}


def _recording(v: dict[str, str], app_log: Any) -> str:
    if v.get("record_path") and v.get("record_name"):
        return f"{v['record_path'].rstrip('/')}/{v['record_name']}"
    if v.get("cc_record_filename"):
        return v["cc_record_filename"]
    apps = app_log.get("applications") if isinstance(app_log, dict) else None
    for app in apps if isinstance(apps, list) else ():
        if isinstance(app, dict) and app.get("app_name") == "record_session" and app.get("app_data"):
            return _value(app["app_data"]).split(" ", 1)[0]
    return ""


def _value(value: Any) -> str:
    text = _text(value)
    return unquote(text) if "%" in text and _PERCENT.search(text) else text


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "") if "\x00" in text else text  # no database column takes a NUL


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
