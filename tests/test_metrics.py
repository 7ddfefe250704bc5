"""Prometheus metrics and /healthz, scraped over HTTP from an in-process daemon."""

from __future__ import annotations

import json
import platform
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.socket
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fsapp import config as configmod
from fsapp.app import App
from fsapp.fakefs import Script, run_call
from fsapp.metrics import PrometheusMetrics, command_label, health_of, start_http
from fsapp.server import Server
from fsapp.simulate import wait_idle

MENU = """
[[modules]]
code = "main"
kind = "menu"
prompt = "menu/main"
invalid_prompt = "menu/invalid"
options = { "1" = "ext:1001", "2" = "second" }
timeout_ms = 3000
max_attempts = 2
next = "hangup"
error = "hangup:CALL_REJECTED"

[[modules]]
code = "second"
kind = "menu"
prompt = "menu/main"
options = { "1" = "ext:1002" }
max_attempts = 1
next = "hangup"
error = "hangup"
"""


class Metered:
    """A daemon with Prometheus metrics and its HTTP endpoint, both on free loopback ports."""

    def __init__(self, cfg: configmod.Config) -> None:
        self.metrics = PrometheusMetrics()
        self.app = App(cfg, metrics=self.metrics)
        self.server = Server(self.app, listener=("127.0.0.1", 0))
        self.server.start()
        self.http = start_http("127.0.0.1:0", self.metrics, health_of(self.server))
        self.http_address = ("127.0.0.1", self.http.server_port)

    def call(self, **script: Any) -> Any:
        fake = run_call(self.server.address, Script(**script))
        wait_idle(self.server)
        return fake

    def get(self, path: str, accept: str = "") -> tuple[int, dict[str, str], bytes]:
        return http_get(self.http_address, path, accept)

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, _headers, body = self.get("/metrics")
        assert status == 200
        return parse(body.decode())

    def stop(self) -> None:
        self.http.stop(timeout=1)
        self.server.stream.close()
        self.app.stop()
        self.app.store.close()


@pytest.fixture
def metered() -> Iterator[Callable[[configmod.Config], Metered]]:
    started: list[Metered] = []

    def start(cfg: configmod.Config) -> Metered:
        m = Metered(cfg)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def http_get(address: tuple[str, int], path: str, accept: str = "") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 GET over a gevent socket: (status, headers, body)."""
    sock = gevent.socket.create_connection(address, timeout=10)
    try:
        extra = f"Accept: {accept}\r\n" if accept else ""
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n{extra}\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_calls_modules_and_commands_are_counted_with_labels(make_config, metered):
    """Finished calls count by entry/status, module runs by code/result, ESL commands by verb or app."""
    m = metered(make_config(MENU))
    m.call(dtmf=["1"], bridges=["answer:3"])
    m.call(dtmf=["", ""])
    m.call(dtmf=["2", "1"], bridges=["busy"])
    s = m.samples()
    assert value(s, "fsapp_calls_total", entry="main", status="answered") == 1
    assert value(s, "fsapp_calls_total", entry="main", status="completed") == 1
    assert value(s, "fsapp_calls_total", entry="main", status="missed") == 1
    assert value(s, "fsapp_module_results_total", module="main", result="other") == 2
    assert value(s, "fsapp_module_results_total", module="main", result="error") == 1
    assert value(s, "fsapp_module_results_total", module="second", result="other") == 1
    assert value(s, "fsapp_esl_command_duration_seconds_count", command="connect") == 3
    assert value(s, "fsapp_esl_command_duration_seconds_count", command="linger") == 3
    assert value(s, "fsapp_esl_command_duration_seconds_count", command="execute answer") == 3
    assert value(s, "fsapp_esl_command_duration_seconds_count", command="execute bridge") == 2
    assert value(s, "fsapp_esl_command_duration_seconds_bucket", command="connect", le="10.0") == 3
    assert value(s, "fsapp_esl_command_duration_seconds_sum", command="connect") > 0
    assert not any(dict(labels).get("command", "").count(" ") > 1 for _name, labels in s)
    assert value(s, "fsapp_live_calls") == 0


def test_rejections_start_at_zero_and_count_overflow(make_config, metered):
    """Every rejection reason is exported from the start; an overflow call moves only its own series."""
    m = metered(make_config(MENU))
    s = m.samples()
    for reason in ("allow", "overflow", "draining"):
        assert ("fsapp_connections_rejected_total", frozenset({("reason", reason)})) in s
    m.app.reconfigure(configmod.from_dict(_with_max_calls(m.app.config, 1), check_files=False))
    first = gevent.spawn(run_call, m.server.address, Script(dtmf=["1"], bridges=["answer:0.5:hold"]))
    _wait_for(lambda: bool(m.server.calls))
    m.call(caller="1002")
    first.join(10)
    wait_idle(m.server)
    s = m.samples()
    assert value(s, "fsapp_connections_rejected_total", reason="overflow") == 1
    assert value(s, "fsapp_connections_rejected_total", reason="allow") == 0
    assert value(s, "fsapp_calls_total", entry="main", status="answered") == 1
    assert value(s, "fsapp_calls_total", entry="", status="rejected") == 1


def _with_max_calls(cfg: configmod.Config, n: int) -> dict[str, Any]:
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(cfg.file)).read_text())
    data["server"]["max_calls"] = n
    data["entry"]["overflow"] = "hangup:USER_BUSY"
    return data


def _wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


def test_live_gauge_rises_during_held_bridge_and_returns_to_zero(make_config, metered):
    """fsapp_live_calls is 1 while a bridge is held up in real time and 0 once the call has ended."""
    m = metered(make_config(MENU))
    live = gevent.spawn(run_call, m.server.address, Script(dtmf=["1"], bridges=["answer:1:hold"]))
    _wait_for(lambda: bool(m.server.calls))
    gevent.sleep(0.3)
    during = m.samples()
    assert value(during, "fsapp_live_calls") == 1
    assert value(during, "fsapp_calls_total", entry="main", status="answered") == 0
    status, _h, body = m.get("/healthz")
    assert status == 200 and json.loads(body)["live_calls"] == 1
    live.join(10)
    assert live.value is not None and live.value.exit_received
    wait_idle(m.server)
    after = m.samples()
    assert value(after, "fsapp_live_calls") == 0
    assert value(after, "fsapp_calls_total", entry="main", status="answered") == 1


def test_metrics_endpoint_speaks_prometheus_text_and_openmetrics(make_config, metered):
    """/metrics answers in the Prometheus text format, OpenMetrics on request; other paths 404."""
    m = metered(make_config(MENU))
    status, headers, body = m.get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE fsapp_esl_command_duration_seconds histogram" in body
    assert b"# TYPE fsapp_calls_total counter" in body
    assert b"_created" not in body
    status, headers, body = m.get("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert m.get("/nope")[0] == 404


def test_healthz_ok_when_accepting_with_storage_and_crm(make_config, metered):
    """/healthz is 200 with every documented field when the daemon accepts and storage and CRM answer."""
    m = metered(make_config(MENU))
    status, headers, body = m.get("/healthz")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"accepting": True, "storage": True, "crm": True, "live_calls": 0,
                                "draining": False, "failed_writes": 0}


def test_healthz_503_when_storage_is_gone(make_config, metered):
    """A closed database makes /healthz 503 with storage false (and the local CRM, which lives in it, too)."""
    m = metered(make_config(MENU))
    m.app.store.close()
    status, _h, body = m.get("/healthz")
    state = json.loads(body)
    assert status == 503
    assert state["storage"] is False and state["accepting"] is True


def test_healthz_503_when_http_crm_is_unreachable(make_config, metered, monkeypatch):
    """An HTTP CRM on a closed port makes /healthz 503 with crm false; the failed ping is counted."""
    monkeypatch.setenv("FSAPP_TEST_CRM_TOKEN", "secret-token")
    extra = f"""
    [crm]
    kind = "http"
    url = "http://127.0.0.1:{closed_port()}"
    token_env = "FSAPP_TEST_CRM_TOKEN"
    timeout_seconds = 1
    connect_timeout_seconds = 0.5
    """
    m = metered(make_config(MENU, extra=extra))
    status, _h, body = m.get("/healthz")
    state = json.loads(body)
    assert status == 503
    assert state == {"accepting": True, "storage": True, "crm": False, "live_calls": 0, "draining": False,
                     "failed_writes": 0}
    s = m.samples()
    assert value(s, "fsapp_crm_errors_total", operation="ping") == 1
    assert value(s, "fsapp_crm_request_duration_seconds_count", operation="ping") == 1
    assert m.get("/healthz")[0] == 503
    assert value(m.samples(), "fsapp_crm_errors_total", operation="ping") == 1  # cached, not pinged again


def test_healthz_503_and_gauge_when_draining(make_config, metered):
    """While draining, /healthz says not accepting (503) and the draining gauge reads 1."""
    m = metered(make_config(MENU))
    assert value(m.samples(), "fsapp_draining") == 0
    m.server.drain(timeout=0)
    status, _h, body = m.get("/healthz")
    assert status == 503
    assert json.loads(body)["accepting"] is False and json.loads(body)["draining"] is True
    assert value(m.samples(), "fsapp_draining") == 1


class _Crm:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)


class _Store:
    def __init__(self) -> None:
        self.ok = True

    def ping(self) -> bool:
        if not self.ok:
            raise RuntimeError("database is gone")
        return True


class _App:
    def __init__(self, crm: Any) -> None:
        self.crm = crm
        self.store = _Store()


class _Server:
    def __init__(self, crm: Any) -> None:
        self.app = _App(crm)
        self.calls: set[Any] = set()
        self.draining = False


def test_health_caches_crm_ping_and_never_raises():
    """The CRM ping is reused within its cache period, redone after it or after a CRM swap; errors read false."""
    now = [100.0]
    crm = _Crm([True, RuntimeError("boom")])
    server = _Server(crm)
    health = health_of(server, crm_cache_seconds=2.0, clock=lambda: now[0])
    assert health()["crm"] is True
    assert health()["crm"] is True
    assert crm.pings == 1
    now[0] += 2.5
    assert health()["crm"] is False
    assert crm.pings == 2
    other = _Crm([True])
    server.app.crm = other
    assert health()["crm"] is True and other.pings == 1
    server.app.store.ok = False
    assert health()["storage"] is False


def test_concurrent_health_requests_share_one_crm_ping():
    """Many simultaneous /healthz requests wait for a single in-flight CRM ping."""

    class SlowCrm:
        pings = 0

        def ping(self) -> bool:
            SlowCrm.pings += 1
            gevent.sleep(0.05)
            return True

    health = health_of(_Server(SlowCrm()))
    jobs = [gevent.spawn(health) for _ in range(20)]
    gevent.joinall(jobs, timeout=5)
    assert all(j.value["crm"] is True for j in jobs)
    assert SlowCrm.pings == 1


def test_hooks_for_charges_outbox_crm_and_reloads():
    """Direct hook calls land in the documented series; api command lines are labelled by verb and command."""
    metrics = PrometheusMetrics(process=False)
    metrics.charge(125000)
    metrics.charge(0)
    metrics.outbox(3, 42.5)
    metrics.crm("find_by_phone", 0.02, True)
    metrics.crm("find_by_phone", 3.0, False)
    metrics.config_reload(False)
    metrics.command("api uuid_kill 1234-abcd", 0.001)
    metrics.command("api uuid_kill 5678-ef01", 0.001)
    s = parse(metrics.render()[0].decode())
    assert value(s, "fsapp_charges_total") == 2
    assert value(s, "fsapp_charged_rial_total") == 125000
    assert value(s, "fsapp_outbox_depth") == 3
    assert value(s, "fsapp_outbox_oldest_age_seconds") == 42.5
    assert value(s, "fsapp_crm_request_duration_seconds_count", operation="find_by_phone") == 2
    assert value(s, "fsapp_crm_errors_total", operation="find_by_phone") == 1
    assert value(s, "fsapp_config_reloads_total", result="rejected") == 1
    assert value(s, "fsapp_config_reloads_total", result="ok") == 0
    assert value(s, "fsapp_esl_command_duration_seconds_count", command="api uuid_kill") == 2
    assert command_label("sendmsg") == "sendmsg" and command_label("execute playback") == "execute playback"
    metrics.outbox(0, 99.0)
    assert value(parse(metrics.render()[0].decode()), "fsapp_outbox_oldest_age_seconds") == 0


def test_registry_is_private():
    """Two exporters in one process do not collide: each has its own registry, not the global one."""
    from prometheus_client import REGISTRY

    a, b = PrometheusMetrics(), PrometheusMetrics()
    a.live(5)
    assert value(parse(b.render()[0].decode()), "fsapp_live_calls") == 0
    assert REGISTRY.get_sample_value("fsapp_live_calls") is None


def test_build_info_bridge_outcomes_and_talk_time_reaching_hours(make_config, metered):
    """fsapp_build_info carries the version; bridges count by outcome from 0; talk lands in hour-wide buckets."""
    from importlib import metadata

    m = metered(make_config(MENU))
    s = m.samples()
    assert value(s, "fsapp_build_info", version=metadata.version("fsapp"), python=platform.python_version()) == 1
    for outcome in ("answered", "no_answer", "busy", "unregistered", "failed"):
        assert (("fsapp_bridges_total", frozenset({("outcome", outcome)})) in s), outcome
    m.call(dtmf=["1"], bridges=["answer:2"])
    m.call(dtmf=["1"], bridges=["busy"])
    m.call(dtmf=["2", "1"], bridges=["unregistered"])
    m.call(dtmf=["1"], bridges=["no-answer"])
    s = m.samples()
    counts = {o: value(s, "fsapp_bridges_total", outcome=o)
              for o in ("answered", "no_answer", "busy", "unregistered", "failed")}
    assert counts == {"answered": 1, "no_answer": 1, "busy": 1, "unregistered": 1, "failed": 0}
    assert value(s, "fsapp_talk_duration_seconds_count") == 1
    assert 1.5 <= value(s, "fsapp_talk_duration_seconds_sum") <= 3.5
    assert value(s, "fsapp_talk_duration_seconds_bucket", le="1.0") == 0  # no bucket under 5 s
    assert value(s, "fsapp_talk_duration_seconds_bucket", le="5.0") == 1
    assert value(s, "fsapp_talk_duration_seconds_bucket", le="14400.0") == 1  # the top bucket is 4 hours
