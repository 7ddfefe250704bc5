"""Prometheus metrics and the health endpoint of ``fsapp serve``.

``PrometheusMetrics`` implements the daemon's metrics hooks (``fsapp.hooks.Metrics``)
on its own ``CollectorRegistry``. Labelled children are looked up once and kept in
dicts, so a hook on the call path costs a dict lookup and one increment or observation.

``start_http`` serves ``/metrics`` (Prometheus text format, or OpenMetrics when the
scraper asks for it) and ``/healthz`` (JSON) on a gevent ``WSGIServer`` that runs in
the daemon's own event loop; ``health_of`` builds the health callable for a ``Server``.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

import gevent.lock
import gevent.pool
from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from fsapp import log as logmod
from fsapp.config import parse_listen

__all__ = [
    "BRIDGE_OUTCOMES",
    "COMMAND_BUCKETS",
    "CRM_BUCKETS",
    "PrometheusMetrics",
    "TALK_BUCKETS",
    "health_of",
    "start_http",
]

# 0.1 ms .. 10 s: a local FreeSWITCH answers a command in well under a millisecond;
# app executes (prompts, bridges) take seconds and land in the top buckets.
COMMAND_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# 5 ms .. 10 s: HTTP round trips to a CRM, up to and past its configured timeout.
CRM_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)

# 5 s .. 4 h: bridged talk, from a hang-up at hello to a long support call.
TALK_BUCKETS: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
BRIDGE_OUTCOMES: tuple[str, ...] = ("answered", "no_answer", "busy", "unregistered", "failed")

REJECT_REASONS: tuple[str, ...] = ("allow", "overflow", "draining", "idle")
PIN_SCOPES: tuple[str, ...] = ("global", "customer", "caller")
_LABELLED_COMMANDS = frozenset({"execute", "api", "bgapi"})


def command_label(name: str) -> str:
    """The ``command`` label of an ESL command line: its verb, plus the app for execute/api."""
    parts = name.split(None, 2)
    if not parts:
        return ""
    if parts[0] in _LABELLED_COMMANDS and len(parts) > 1:
        return f"{parts[0]} {parts[1]}"
    return parts[0]


class PrometheusMetrics:
    """The daemon's metrics hooks, recorded in a private Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        if process:
            ProcessCollector(registry=r)
        self._live = Gauge("fsapp_live_calls", "Calls the daemon is handling now.", registry=r)
        self._draining = Gauge("fsapp_draining", "1 while the daemon drains (SIGTERM): no new calls.", registry=r)
        self._calls = Counter("fsapp_calls", "Finished calls by entry module and final journal status.",
                              ["entry", "status"], registry=r)
        self._modules = Counter("fsapp_module_results", "Module runs by module code and result.",
                                ["module", "result"], registry=r)
        self._commands = Histogram("fsapp_esl_command_duration_seconds",
                                   "ESL command latency (reply, or app completion for execute).",
                                   ["command"], buckets=COMMAND_BUCKETS, registry=r)
        self._crm_seconds = Histogram("fsapp_crm_request_duration_seconds", "CRM request latency by operation.",
                                      ["operation"], buckets=CRM_BUCKETS, registry=r)
        self._crm_errors = Counter("fsapp_crm_errors", "CRM requests that failed, by operation.",
                                   ["operation"], registry=r)
        self._outbox_depth = Gauge("fsapp_outbox_depth", "Invoices and payment links waiting for the CRM.",
                                   registry=r)
        self._outbox_age = Gauge("fsapp_outbox_oldest_age_seconds", "Age of the oldest outbox entry (0 when empty).",
                                 registry=r)
        self._charges = Counter("fsapp_charges", "Charges taken (ledger rows).", registry=r)
        self._charged = Counter("fsapp_charged_rial", "Rial charged, summed.", registry=r)
        self._rejected = Counter("fsapp_connections_rejected",
                                 "Connections refused (allow, draining, idle: no connect exchange in "
                                 "connect_timeout_seconds) or sent to [entry] overflow (overflow).",
                                 ["reason"], registry=r)
        self._reloads = Counter("fsapp_config_reloads", "SIGHUP reloads by result (ok, rejected).",
                                ["result"], registry=r)
        Info("fsapp_build", "The running fsapp: its version and Python's.", registry=r).info(
            {"version": _version(), "python": platform.python_version()})
        bridges = Counter("fsapp_bridges", "Bridge and queue attempts by outcome.", ["outcome"], registry=r)
        self._bridge_children = {o: bridges.labels(o) for o in BRIDGE_OUTCOMES}
        self._talk = Histogram("fsapp_talk_duration_seconds", "Bridged talk time of answered attempts.",
                               buckets=TALK_BUCKETS, registry=r)
        self._pin_failures = Counter("fsapp_pin_failures",
                                     "PIN failures by scope: global = wrong PINs; customer, caller = attempts "
                                     "stopped by that lockout.", ["scope"], registry=r)
        self._pin_alarms = Counter("fsapp_pin_alarms", "Times the wrong PINs of all customers within "
                                   "[security] alarm_window_seconds reached alarm_failures.", registry=r)
        self._pin_children = {scope: self._pin_failures.labels(scope) for scope in PIN_SCOPES}
        self._command_children: dict[str, Any] = {}
        self._crm_children: dict[tuple[str, bool], tuple[Any, Any | None]] = {}
        self._call_children: dict[tuple[str, str], Any] = {}
        self._module_children: dict[tuple[str, str], Any] = {}
        self._reject_children: dict[str, Any] = {}
        # Series that exist before the first event, so rate() and alerts see a 0.
        for reason in REJECT_REASONS:
            self._reject_children[reason] = self._rejected.labels(reason)
        for result in ("ok", "rejected"):
            self._reloads.labels(result)
        self._draining.set(0)

    # ------------------------------------------------------------ hooks (hot path)

    def command(self, name: str, seconds: float) -> None:
        child = self._command_children.get(name)
        if child is None:
            child = self._command_child(name)
        child.observe(seconds)

    def call_ended(self, entry: str, status: str) -> None:
        key = (entry, status)
        child = self._call_children.get(key)
        if child is None:
            child = self._call_children[key] = self._calls.labels(entry, status)
        child.inc()

    def module_result(self, code: str, result: str) -> None:
        key = (code, result)
        child = self._module_children.get(key)
        if child is None:
            child = self._module_children[key] = self._modules.labels(code, result)
        child.inc()

    def bridge(self, outcome: str, talk_seconds: float) -> None:
        self._bridge_children.get(outcome, self._bridge_children["failed"]).inc()
        if outcome == "answered":
            self._talk.observe(talk_seconds)

    def crm(self, operation: str, seconds: float, ok: bool) -> None:
        key = (operation, ok)
        pair = self._crm_children.get(key)
        if pair is None:
            errors = None if ok else self._crm_errors.labels(operation)
            pair = self._crm_children[key] = (self._crm_seconds.labels(operation), errors)
        pair[0].observe(seconds)
        if pair[1] is not None:
            pair[1].inc()

    def rejected(self, reason: str) -> None:
        child = self._reject_children.get(reason)
        if child is None:
            child = self._reject_children[reason] = self._rejected.labels(reason)
        child.inc()

    def charge(self, amount: int) -> None:
        self._charges.inc()
        if amount > 0:
            self._charged.inc(amount)

    def live(self, n: int) -> None:
        self._live.set(n)

    def outbox(self, depth: int, oldest_age_seconds: float) -> None:
        self._outbox_depth.set(depth)
        self._outbox_age.set(oldest_age_seconds if depth else 0.0)

    def draining(self, flag: bool) -> None:
        self._draining.set(1 if flag else 0)

    def config_reload(self, ok: bool) -> None:
        self._reloads.labels("ok" if ok else "rejected").inc()

    def pin_failure(self, scope: str) -> None:
        child = self._pin_children.get(scope)
        if child is not None:
            child.inc()

    def pin_alarm(self) -> None:
        self._pin_alarms.inc()

    # ------------------------------------------------------------ output

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for: (body, content type).

        The classic text format gets no ``*_created`` series (they would double the
        series count as stray gauges); OpenMetrics, which knows them, keeps them.
        """
        encoder, content_type = choose_encoder(accept)
        if content_type.startswith("application/openmetrics-text"):
            return encoder(self.registry), content_type
        return encoder(_WithoutCreated(self.registry)), content_type

    def _command_child(self, name: str) -> Any:
        label = command_label(name)
        child = self._command_children.get(label)
        if child is None:
            child = self._command_children[label] = self._commands.labels(label)
        # Raw lines that carry arguments (api ...) would grow the cache without end.
        if name == label:
            self._command_children[name] = child
        return child


def _version() -> str:
    try:
        return metadata.version("fsapp")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _WithoutCreated(Collector):
    """A view of a registry without the ``<counter/histogram>_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            created = family.name + "_created"
            if any(s.name == created for s in family.samples):
                family = copy.copy(family)
                family.samples = [s for s in family.samples if s.name != created]
            yield family


# ---------------------------------------------------------------- health


def health_of(server: Any, *, crm_cache_seconds: float = 2.0,
              clock: Callable[[], float] = time.monotonic) -> Callable[[], dict[str, Any]]:
    """A ``/healthz`` callable for a ``fsapp.server.Server``; it never raises.

    The storage is checked on every request (a ``SELECT 1``, the file still the one opened,
    no write failed in the last ``WRITE_FAILURE_SECONDS``); the CRM ping is shared by
    concurrent requests and its result kept for ``crm_cache_seconds``, so a scrape storm
    costs the CRM at most one request per period. A reload that replaces the CRM
    invalidates the cached result.
    """
    lock = gevent.lock.Semaphore()
    cached: dict[str, Any] = {"crm": None, "at": -math.inf, "ok": False}

    def fresh(crm: Any) -> bool:
        return cached["crm"] is crm and clock() - cached["at"] < crm_cache_seconds

    def crm_ok() -> bool:
        crm = server.app.crm
        if fresh(crm):
            return bool(cached["ok"])
        with lock:
            if fresh(crm):
                return bool(cached["ok"])
            try:
                ok = bool(crm.ping())
            except Exception:  # noqa: BLE001 - a failing ping is an unhealthy CRM, not a crash
                ok = False
            cached.update(crm=crm, at=clock(), ok=ok)
            return ok

    def storage_ok() -> bool:
        try:
            ok, _why = server.app.store.health()
            return ok
        except Exception:  # noqa: BLE001 - a closed or broken database is unhealthy
            return False

    def failed_writes() -> int:
        try:
            return int(server.app.store.write_failures())
        except Exception:  # noqa: BLE001 - a store without the count: none known
            return 0

    def health() -> dict[str, Any]:
        draining = bool(getattr(server, "draining", False))
        stream = getattr(server, "stream", None)
        listening = bool(getattr(stream, "started", True)) if stream is not None else True
        try:
            live = len(server.calls)
        except Exception:  # noqa: BLE001
            live = 0
        return {
            "accepting": listening and not draining,
            "storage": storage_ok(),
            "crm": crm_ok(),
            "live_calls": live,
            "draining": draining,
            "failed_writes": failed_writes(),
        }

    return health


def healthy(state: dict[str, Any]) -> bool:
    """True when ``state`` (from a health callable) is worth an HTTP 200."""
    return bool(state.get("accepting")) and bool(state.get("storage")) and bool(state.get("crm"))


# ---------------------------------------------------------------- HTTP

_INDEX = b"fsapp\n/metrics  Prometheus metrics\n/healthz  health (JSON; 200 ok, 503 not ok)\n"


def make_wsgi_app(metrics: PrometheusMetrics, health: Callable[[], dict[str, Any]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI application behind ``start_http``: ``/metrics``, ``/healthz`` and an index."""
    log = logmod.get("fsapp").bind(component="metrics")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", b"GET only\n", "text/plain; charset=utf-8",
                          [("Allow", "GET, HEAD")])
        if path == "/metrics":
            body, content_type = metrics.render(environ.get("HTTP_ACCEPT", ""))
            return _reply(start_response, "200 OK", body, content_type)
        if path == "/healthz":
            try:
                state = health()
            except Exception as exc:  # noqa: BLE001 - the endpoint answers 503 rather than 500
                log.error("healthz_failed", reason=f"{type(exc).__name__}: {exc}")
                state = {"accepting": False, "storage": False, "crm": False, "live_calls": 0, "draining": False,
                         "failed_writes": 0}
            status = "200 OK" if healthy(state) else "503 Service Unavailable"
            body = (json.dumps(state, sort_keys=True) + "\n").encode()
            return _reply(start_response, status, body, "application/json")
        if path == "/":
            return _reply(start_response, "200 OK", _INDEX, "text/plain; charset=utf-8")
        return _reply(start_response, "404 Not Found", b"not found\n", "text/plain; charset=utf-8")

    return app


def _reply(start_response: Callable[..., Any], status: str, body: bytes, content_type: str,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    start_response(status, headers + (extra or []))
    return [body]


class _ErrorLog:
    """pywsgi's error stream, sent to the structured log instead of bare stderr."""

    def __init__(self) -> None:
        self.log = logmod.get("fsapp").bind(component="metrics")

    def write(self, text: str) -> None:
        text = text.strip()
        if text:
            self.log.warning("metrics_http_error", detail=text[:2000])

    def writelines(self, lines: Iterable[str]) -> None:
        self.write("".join(lines))

    def flush(self) -> None:
        pass


def start_http(listen: str, metrics: PrometheusMetrics, health: Callable[[], dict[str, Any]], *,
               max_connections: int = 32) -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` on ``listen`` (HOST:PORT) in this gevent loop.

    Returns the started server (``.server_port`` is the bound port; ``.stop()`` ends it).
    Raises ValueError for a malformed ``listen`` and OSError when the address cannot be bound.
    """
    host, port = parse_listen(listen)
    server = WSGIServer((host, port), make_wsgi_app(metrics, health), log=None, error_log=_ErrorLog(),
                        spawn=gevent.pool.Pool(max_connections))
    server.start()
    logmod.get("fsapp").info("metrics_started", listen=f"{host}:{server.server_port}")
    return server
