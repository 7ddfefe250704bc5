"""The daemon's metrics interface: what App, the server and each call report.

A leaf: it imports nothing of fsapp. ``NullMetrics`` reports nowhere;
``fsapp.metrics.PrometheusMetrics`` exports to Prometheus.
"""

from __future__ import annotations

from typing import Protocol


class Metrics(Protocol):
    def command(self, name: str, seconds: float) -> None: ...

    def call_ended(self, entry: str, status: str) -> None: ...

    def module_result(self, code: str, result: str) -> None: ...

    def bridge(self, outcome: str, talk_seconds: float) -> None: ...

    def crm(self, operation: str, seconds: float, ok: bool) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def charge(self, amount: int) -> None: ...

    def live(self, n: int) -> None: ...

    def outbox(self, depth: int, oldest_age_seconds: float) -> None: ...

    def draining(self, flag: bool) -> None: ...

    def config_reload(self, ok: bool) -> None: ...

    def pin_failure(self, scope: str) -> None: ...

    def pin_alarm(self) -> None: ...


class NullMetrics:
    """Metrics hooks that report nowhere; the Prometheus exporter replaces them when enabled."""

    def command(self, name: str, seconds: float) -> None:
        pass

    def call_ended(self, entry: str, status: str) -> None:
        pass

    def module_result(self, code: str, result: str) -> None:
        pass

    def bridge(self, outcome: str, talk_seconds: float) -> None:
        pass

    def crm(self, operation: str, seconds: float, ok: bool) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def charge(self, amount: int) -> None:
        pass

    def live(self, n: int) -> None:
        pass

    def outbox(self, depth: int, oldest_age_seconds: float) -> None:
        pass

    def draining(self, flag: bool) -> None:
        pass

    def config_reload(self, ok: bool) -> None:
        pass

    def pin_failure(self, scope: str) -> None:
        pass

    def pin_alarm(self) -> None:
        pass
