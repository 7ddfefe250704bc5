"""The door for a site's own speech-to-text engine: ``[analysis] transcribe_command``.

The command runs once per recording with the file's path as its last argument and the
channel map in its environment (FSAPP_CUSTOMER_CHANNEL, FSAPP_AGENT_CHANNEL: left or
right; FSAPP_UUID), bounded by ``transcribe_timeout_seconds``. Its standard output is
either plain text, or JSON: a list of ``{"start", "end", "channel", "text"}`` segments
(or an object with such a list under ``"segments"``). What it printed is stored and
searchable (``fsapp calls --text``); a failure is stored on the call instead.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any

OUTPUT_LIMIT = 4_000_000  # characters kept of what the engine printed


def transcribe(cmd: str, path: str, customer: str, uuid: str, timeout: float) -> dict[str, Any]:
    """The columns to store: ``transcript_state`` ok | failed, the text, its segments, the error."""
    agent = "right" if customer == "left" else "left"
    env = {**os.environ, "FSAPP_UUID": uuid, "FSAPP_RECORDING": path, "FSAPP_CUSTOMER_CHANNEL": customer,
           "FSAPP_AGENT_CHANNEL": agent}
    try:
        done = subprocess.run([*shlex.split(cmd), path], env=env, stdin=subprocess.DEVNULL,  # noqa: S603
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return _failed(f"timed out after {timeout:g} s")
    except OSError as exc:
        return _failed(f"cannot run {cmd!r}: {exc.strerror or exc}")
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
        return _failed(f"exit status {done.returncode}" + (f": {tail}" if tail else ""))
    out = done.stdout.decode("utf-8", "replace")[:OUTPUT_LIMIT]
    try:
        text, segments = parse_output(out, customer)
    except ValueError as exc:
        return _failed(f"unreadable output: {exc}")
    return {"transcript_state": "ok", "transcript": text, "transcript_error": "",
            "transcript_segments": json.dumps(segments, ensure_ascii=False) if segments else ""}


def _failed(reason: str) -> dict[str, Any]:
    return {"transcript_state": "failed", "transcript_error": reason[:500]}


def parse_output(out: str, customer: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, segments) from the engine's output; channels may be left/right or customer/agent."""
    stripped = out.strip()
    if not stripped.startswith(("[", "{")):
        return stripped, []
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        return stripped, []  # text that happens to start with a bracket
    items = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("JSON without a list of segments")
    names = {"left": "customer" if customer == "left" else "agent",
             "right": "agent" if customer == "left" else "customer", "customer": "customer", "agent": "agent"}
    segments = []
    for i, seg in enumerate(items):
        if not isinstance(seg, dict) or not isinstance(seg.get("text"), str):
            raise ValueError(f"segment {i} has no text")
        segments.append({"channel": names.get(str(seg.get("channel", "")), ""),
                         "start": _seconds(seg.get("start")), "end": _seconds(seg.get("end")),
                         "text": seg["text"].strip()})
    return "\n".join(s["text"] for s in segments if s["text"]), segments


def _seconds(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
