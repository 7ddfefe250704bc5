"""``fsapp serve``'s analysis workers: ``[analysis] workers`` child processes, kept running.

Each child is ``fsapp analyse --pending --follow --parent PID`` on the daemon's own
config file; it lowers its own priority. A child that dies is started again (at most
once per ``RESTART_SECONDS``); on shutdown each gets SIGTERM and ends after the call it
is analysing (a child killed mid-file gives its call back when its lease ends).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import gevent

from fsapp.config import Config
from fsapp.spawn import Child

RESTART_SECONDS = 5.0


def active(cfg: Config) -> bool:
    """Analysis runs where calls are recorded (by ``[journal] record`` or a module's ``record``)."""
    return cfg.analysis.enabled and (cfg.journal.record or any(m.record for m in cfg.modules.values()))


class WorkerPool:
    def __init__(self, config_path: str | None, count: int, log: Any) -> None:
        self.config_path = config_path
        self.count = count
        self.log = log.bind(component="analysis")
        self.children: list[Child | None] = [None] * count
        self.started_at = [0.0] * count
        self._watch: gevent.Greenlet | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "fsapp", "analyse", "--pending", "--follow", "--parent", str(os.getpid())]
        return cmd + (["-c", self.config_path] if self.config_path else [])

    def start(self) -> None:
        for i in range(self.count):
            self._spawn(i)
        self._watch = gevent.spawn(self._keep_running)

    def _spawn(self, i: int) -> None:
        self.started_at[i] = time.monotonic()
        try:
            self.children[i] = Child(self.command())  # no fork: the daemon waits for no child
        except OSError as exc:
            self.children[i] = None
            self.log.error("analysis_worker_failed", reason=str(exc))
            return
        self.log.info("analysis_worker_started", pid=self.children[i].pid)

    def _keep_running(self) -> None:
        while True:
            gevent.sleep(1.0)
            for i, child in enumerate(self.children):
                if child is not None and child.poll() is None:
                    continue
                if child is not None:
                    self.log.warning("analysis_worker_exited", pid=child.pid, status=child.returncode)
                    self.children[i] = None
                if time.monotonic() - self.started_at[i] >= RESTART_SECONDS:
                    self._spawn(i)

    def recycle(self) -> None:
        """After a config reload: each child ends after its current call and starts again on the new file."""
        for i, child in enumerate(self.children):
            if child is not None and child.poll() is None:
                child.terminate()
                self.started_at[i] = 0.0

    def stop(self, timeout: float = 5.0) -> None:
        if self._watch is not None:
            self._watch.kill()
        live = [c for c in self.children if c is not None and c.poll() is None]
        for child in live:
            child.terminate()
        deadline = time.monotonic() + timeout
        for child in live:
            if child.wait(timeout=max(0.0, deadline - time.monotonic())) is None:
                child.kill()
                child.wait()
