"""Many simulated FreeSWITCH calls against a daemon in another process (`fsapp loadtest`).

The daemon runs as a child process (``fsapp serve`` on a copy of the sample config
with its own database), so its CPU time and memory can be read from /proc alone.
The stand-in side runs here, one greenlet per call.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.pool

from fsapp import pins
from fsapp.fakefs import FakeFreeSWITCH, Script

# ------------------------------------------------------------------ scenarios


def full_scenario(i: int) -> Script:
    """Identify by number + PIN, hear the balance, billed bridge to the expert, journaled."""
    return Script(caller=f"0912{i % 10_000_000:07d}", dtmf=["1", "1001", "1234"], bridges=["answer:65"])


def menu_scenario(i: int) -> Script:
    """The short script every peer runs: answer, playback, play_and_get_digits, bridge, hangup."""
    return Script(caller=f"0912{i % 10_000_000:07d}", dtmf=["1"], bridges=["answer:30"])


def hold_scenario(seconds: float) -> Callable[[int], Script]:
    def make(i: int) -> Script:
        return Script(caller=f"0912{i % 10_000_000:07d}", dtmf=["1"], bridges=[f"answer:{seconds:g}:hold"])

    return make


SCENARIOS: dict[str, Callable[[int], Script]] = {"full": full_scenario, "menu": menu_scenario}

BENCH_MODULES = """
[[modules]]
code = "bench"
kind = "menu"
intro = "menu/main"
prompt = "menu/main"
options = { "1" = "ext:1001" }
max_attempts = 1
next = "hangup"
error = "hangup"
"""


# ------------------------------------------------------------------ the daemon


def _proc_stat(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, RSS bytes) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    address: tuple[str, int]
    workdir: Path
    config: Path

    def stat(self) -> tuple[float, int]:
        return _proc_stat(self.proc.pid)

    def fds(self) -> int:
        return _fd_count(self.proc.pid)

    def stop(self, *, keep: bool = False) -> int:
        """SIGTERM, wait; the work folder (config, database) goes unless ``keep``."""
        self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int, pid: int) -> bool:
    """Whether process ``pid`` listens on 127.0.0.1:``port``, from /proc (a probe
    connection would be a call to the daemon, logged and counted as one)."""
    want = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A: TCP_LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:  # the daemon's own socket, not another program's that took the port meanwhile
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def make_config(workdir: Path, scenario: str, *, port: int = 0) -> Path:
    """A copy of the sample config for load: own database, a free port, a big backlog."""
    from fsapp import config as configmod

    text = configmod.SAMPLE_CONFIG.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    sounds = (Path.cwd() / "sounds") if (Path.cwd() / "sounds").is_dir() else configmod.PACKAGE_DIR.parent / "sounds"
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        'allow = ["127.0.0.1"]',
        "max_calls = 20000",
        "backlog = 8192",
        "drain_seconds = 10",
        "[storage]",
        f'url = "sqlite://{workdir / "load.db"}"',
        "[crm]",
        'kind = "local"',
        "[sounds]",
        f'dir = "{sounds}"',
        'language = "fa"',
        "[entry]",
        f'default = "{"bench" if scenario == "menu" else data["entry"]["default"]}"',
        "[billing]",
        "meter_heartbeat_seconds = 15",
    ]
    body = "\n".join(lines) + "\n"
    if scenario == "menu":
        body += BENCH_MODULES
    else:
        start = text.index("[[modules]]")
        modules = text[start:].replace("max_debt = 5000000", "max_debt = 1000000000000")
        body += modules
    path = workdir / "fsapp.toml"
    path.write_text(body, encoding="utf-8")
    return path


def start_daemon(scenario: str, *, workdir: Path | None = None, log_level: str = "info") -> Daemon:
    made = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fsapp-load-"))
    port = _free_port()
    cfg = make_config(workdir, scenario, port=port)
    if scenario != "menu":
        from fsapp import config as configmod
        from fsapp import customers
        from fsapp.store import open_store

        store = open_store(f"sqlite://{workdir / 'load.db'}")
        sample = configmod.PACKAGE_DIR / "sample" / "customers.csv"
        customers.save_rows(store, customers.parse_csv(sample.read_text(encoding="utf-8"), source=str(sample)))
        store.close()
    env = {**os.environ, "FSAPP_LOG_LEVEL": log_level}
    env.setdefault(pins.PEPPER_ENV, os.urandom(32).hex())  # as production runs it: no pin_pepper_missing
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(cfg)], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    daemon = Daemon(proc, ("127.0.0.1", port), workdir, cfg)
    # Drain its log from the start so the pipe never fills; count the lines by level and
    # keep the last ones for an error message. Readiness is read from the kernel, not
    # from a log line, so any log level works.
    daemon_log_levels: Counter[str] = Counter()
    daemon.levels = daemon_log_levels  # type: ignore[attr-defined]
    tail: deque[str] = deque(maxlen=20)

    def drain() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            tail.append(line)
            if '"level":"' in line:
                level = line.split('"level":"', 1)[1].split('"', 1)[0]
                daemon_log_levels[level] += 1

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    deadline = time.monotonic() + 30
    while not _listening(port, proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            drainer.join(5)  # it ends at the pipe's end, with the last lines taken
            if made:
                shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError(f"the daemon did not start listening on 127.0.0.1:{port}: " + "".join(tail)[-2000:])
        time.sleep(0.02)
    return daemon


# ------------------------------------------------------------------ driving


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


@dataclass
class Results:
    calls: int = 0
    completed: int = 0
    wall: float = 0.0
    setup: list[float] = field(default_factory=list)
    commands: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    fakes: list[FakeFreeSWITCH] = field(default_factory=list)

    def play(self, address: tuple[str, int], script: Script, *, expect_app: str = "bridge",
             keep: bool = False, stand_in: type[FakeFreeSWITCH] = FakeFreeSWITCH) -> None:
        """Run one call and count it: completed, or an error by kind; its latencies."""
        try:
            fake = stand_in(address, script, io_timeout=60).run()
        except Exception as exc:  # noqa: BLE001 - counted as an error kind
            self.errors[type(exc).__name__] += 1
            return
        kind = _check(fake, expect_app)
        if kind:
            self.errors[kind] += 1
        else:
            self.completed += 1
        self.setup.append(fake.setup_latency)
        self.commands.extend(fake.command_latencies)
        if keep:
            self.fakes.append(fake)

    def summary(self) -> dict[str, Any]:
        ms = 1000.0
        return {
            "calls": self.calls,
            "completed": self.completed,
            "errors": dict(self.errors),
            "wall_seconds": round(self.wall, 3),
            "calls_per_second": round(self.completed / self.wall, 1) if self.wall else 0.0,
            "setup_ms": {"p50": round(percentile(self.setup, 50) * ms, 3),
                         "p99": round(percentile(self.setup, 99) * ms, 3),
                         "max": round(max(self.setup, default=0) * ms, 3)},
            "command_rtt_ms": {"p50": round(percentile(self.commands, 50) * ms, 3),
                               "p99": round(percentile(self.commands, 99) * ms, 3)},
        }


def _check(fake: FakeFreeSWITCH, expect_app: str) -> str:
    if fake.error:
        return "stand-in: " + fake.error.split(":")[0]
    if not fake.commands:
        return "no command"
    if not fake.exit_received:
        return "no exit"
    if expect_app and expect_app not in fake.apps():
        return f"no {expect_app}"
    return ""


def drive(address: tuple[str, int], scripts: Iterable[Script], *, concurrency: int, rate: float = 0.0,
          expect_app: str = "bridge", keep: bool = False) -> Results:
    """Run every script against ``address``, at most ``concurrency`` at once, ``rate`` new calls/s."""
    res = Results()
    pool = gevent.pool.Pool(concurrency)

    def one(script: Script) -> None:
        res.play(address, script, expect_app=expect_app, keep=keep)

    t0 = time.monotonic()
    for i, script in enumerate(scripts):
        res.calls += 1
        if rate:
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
        pool.spawn(one, script)
    pool.join()
    res.wall = time.monotonic() - t0
    return res


def _scripts(make: Callable[[int], Script], n: int) -> Iterator[Script]:
    return (make(i) for i in range(n))


def run(calls: int, concurrency: int, rate: float, scenario: str, *, connect: str = "",
        log_level: str = "info") -> dict[str, Any]:
    """One load run; the figures as a dict (printed by the CLI, recorded by bench/)."""
    make = SCENARIOS[scenario]
    daemon = None
    if connect:
        host, _, port = connect.rpartition(":")
        address = (host, int(port))
    else:
        daemon = start_daemon(scenario, log_level=log_level)
        address = daemon.address
    try:
        # Warm up (imports, caches) before measuring.
        drive(address, _scripts(make, min(20, calls)), concurrency=5)
        before = daemon.stat() if daemon else (0.0, 0)
        fds_before = daemon.fds() if daemon else -1
        res = drive(address, _scripts(make, calls), concurrency=concurrency, rate=rate)
        gevent.sleep(0.5)
        after = daemon.stat() if daemon else (0.0, 0)
        out = res.summary()
        out["scenario"] = scenario
        out["concurrency"] = concurrency
        if daemon:
            cpu = after[0] - before[0]
            out["daemon_cpu_seconds"] = round(cpu, 3)
            out["daemon_cpu_ms_per_call"] = round(cpu * 1000 / max(1, res.completed), 3)
            out["daemon_rss_mb"] = round(after[1] / 2**20, 1)
            out["daemon_fds_before"] = fds_before
            out["daemon_fds_after"] = daemon.fds()
            out["daemon_log"] = dict(daemon.levels)  # type: ignore[attr-defined]
    finally:
        if daemon:
            out_code = daemon.stop()
            if "out" in locals():
                out["daemon_exit"] = out_code
    return out


def held_memory(n: int, seconds: float = 20.0) -> dict[str, Any]:
    """RSS per call with ``n`` calls held open at once in a bridge."""
    daemon = start_daemon("menu")
    try:
        drive(daemon.address, _scripts(menu_scenario, 20), concurrency=5)
        _, rss0 = daemon.stat()
        pool = gevent.pool.Pool(n)
        fakes = [pool.spawn(FakeFreeSWITCH(daemon.address, s, io_timeout=seconds + 60).run)
                 for s in _scripts(hold_scenario(seconds), n)]
        peak = rss0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds - 1:
            gevent.sleep(0.5)
            peak = max(peak, daemon.stat()[1])
        held = sum(1 for g in fakes if not g.dead)
        pool.join(timeout=seconds + 60)
        done = sum(1 for g in fakes if g.value is not None and g.value.exit_received)
        return {"held": held, "completed": done, "rss_before_mb": round(rss0 / 2**20, 1),
                "rss_peak_mb": round(peak / 2**20, 1),
                "kb_per_held_call": round((peak - rss0) / 1024 / max(1, n), 1)}
    finally:
        daemon.stop()
