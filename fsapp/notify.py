"""The reviewer's notification: ``[journal] notify_command``, for a call too long or flagged."""

from __future__ import annotations

import os
import shlex
from typing import Any

from fsapp.spawn import Child  # no fork of the daemon; a stdlib Popen in a greenlet of it never returns


def notify_reviewer(cmd: str, row: dict[str, Any], log: Any, *, reason: str, flags: tuple[str, ...] = ()) -> None:
    """Run ``[journal] notify_command`` for a call a reviewer should see (too long, or flagged).

    Its environment names the call: FSAPP_UUID, FSAPP_CALLER, FSAPP_TALK_SECONDS,
    FSAPP_CUSTOMER_ID, FSAPP_REASON (too_long | flagged) and FSAPP_FLAGS (comma-separated).
    """
    if not cmd:
        return
    env = {**os.environ, "FSAPP_UUID": row["uuid"], "FSAPP_CALLER": row.get("caller", ""),
           "FSAPP_TALK_SECONDS": str(row.get("talk_seconds", 0)), "FSAPP_CUSTOMER_ID": row.get("customer_id", ""),
           "FSAPP_REASON": reason, "FSAPP_FLAGS": ",".join(flags)}
    try:
        Child(shlex.split(cmd), env=env)  # reaped by the event loop when it ends
    except OSError as exc:
        log.error("notify_failed", command=cmd, reason=str(exc))
