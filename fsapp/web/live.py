"""The live page: the calls in progress now and the daemon's health, refreshed every few seconds.

The calls are the journal's 'active' rows with the open meters beside them (a billed
talk's customer, module and talk so far); a meter without a row (its start could not be
journaled) is shown too. The health is the daemon's own ``/healthz``: called in-process
inside ``fsapp serve`` (``[web] in_serve``), else fetched from ``[web] daemon_health_url``
(by default ``/healthz`` on ``[server] metrics_listen``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from flask import Blueprint, current_app, render_template

from fsapp import instants
from fsapp.metrics import healthy
from fsapp.store import Store, now_iso
from fsapp.web.context import current_config, current_store

live = Blueprint("live", __name__)

LIMIT = 500  # rows shown; a site with more calls at once reads the count in the health box
REFRESH_SECONDS = 5
HEALTH_TIMEOUT_SECONDS = 2.0
STALE_BEATS = 3  # a meter not stamped for this many heartbeats: its daemon may be gone


@live.route("/live")
def page() -> Any:
    store, now = current_store(), time.time()
    calls = in_progress(store, now, current_config().billing.meter_heartbeat_seconds)
    depth, oldest = store.outbox_stats(now)
    return render_template("live.html", calls=calls[:LIMIT], count=len(calls), health=daemon_health(),
                           outbox_depth=depth, outbox_age=int(oldest), daemons=store.active_call_daemons(),
                           refresh=REFRESH_SECONDS)


def in_progress(store: Store, now: float, heartbeat: float) -> list[dict[str, Any]]:
    """The calls in progress, newest first: each 'active' journal row with its open meter, if any."""
    meters: dict[str, dict[str, Any]] = {}
    for m in store.open_meters():  # oldest first: a call's latest meter wins
        meters[m["call_uuid"]] = m
    names: dict[str, str] = {}
    out = [_entry(store, row, meters.pop(row["uuid"], None), now, heartbeat, names)
           for row in store.list_calls(status="active", order="started_at", descending=True, limit=LIMIT)]
    out += [_entry(store, {"uuid": m["call_uuid"], "started_at": now_iso(m["opened_at"]), "daemon": m["daemon"]},
                   m, now, heartbeat, names) for m in meters.values()]
    return sorted(out, key=lambda e: e["started_at"] or "", reverse=True)


def _entry(store: Store, row: dict[str, Any], meter: dict[str, Any] | None, now: float, heartbeat: float,
           names: dict[str, str]) -> dict[str, Any]:
    customer = row.get("customer_id") or (meter or {}).get("customer_id", "")
    if customer and customer not in names:
        found = store.customer(customer)
        names[customer] = found["name"] if found else ""
    modules = row.get("modules") or []
    started = instants.parse(row.get("started_at"))
    return {
        "uuid": row["uuid"], "started_at": row.get("started_at", ""), "caller": row.get("caller", ""),
        "caller_name": row.get("caller_name", ""), "called": row.get("called", ""),
        "direction": row.get("direction", ""), "customer_id": customer,
        "customer_name": row.get("customer_name") or names.get(customer, ""),
        "module": meter["module"] if meter else (modules[-1] if modules else row.get("entry_module", "")),
        "since_seconds": max(0, int(now - started.timestamp())) if started else None,
        "talk_seconds": talk_so_far(meter, now), "daemon": row.get("daemon", ""),
        "stale": meter is not None and now - float(meter["beat_at"]) > STALE_BEATS * heartbeat,
        "journaled": "caller" in row,
    }


def talk_so_far(meter: dict[str, Any] | None, now: float) -> int | None:
    """A metered bridge's talk now: what its last heartbeat stamped plus the time since; None before it is bridged."""
    if not meter or not meter["bridge_us"]:
        return None
    stamped = max(0, int(meter["seen_us"]) - int(meter["bridge_us"])) / 1_000_000
    return int(stamped + max(0.0, now - float(meter["beat_at"])))


def daemon_health() -> dict[str, Any]:
    """The daemon's health: ``state`` (its /healthz JSON), ``up``, ``source``; ``error`` when unreachable."""
    own = current_app.config.get("FSAPP_HEALTH")
    if own is not None:
        state = own()
        return {"source": "serve", "state": state, "up": healthy(state), "error": ""}
    url = current_config().web.daemon_health_url
    if not url:
        return {"source": "", "state": {}, "up": None, "error": ""}
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_SECONDS) as r:  # noqa: S310 - the site's own URL
            return _answer(url, r.read())
    except urllib.error.HTTPError as exc:  # 503: the body still says which part failed
        return _answer(url, exc.read(), status=exc.code)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"source": url, "state": {}, "up": False, "error": f"{url}: {reason}"}


def _answer(url: str, body: bytes, status: int = 200) -> dict[str, Any]:
    try:
        state = json.loads(body)
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        return {"source": url, "state": {}, "up": False, "error": f"{url}: HTTP {status}, not /healthz JSON: {exc}"}
    return {"source": url, "state": state, "up": status == 200 and healthy(state), "error": ""}
