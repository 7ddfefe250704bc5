"""fsapp against greenswitch and Genesis: the same scripted call, one command, one machine.

Three servers run the bench's short call (connect, myevents, linger, answer, playback,
play_and_get_digits, bridge, hangup, exit), each in a child process of its own:

- ``fsapp``: ``fsapp serve`` with the bench menu module (``fsapp.loadtest.start_daemon("menu")``);
- ``greenswitch``: ``bench/peer_greenswitch.py`` on greenswitch's ``OutboundESLServer``;
- ``genesis``: ``bench/peer_genesis.py`` on Genesis's asyncio ``Outbound``;

plus ``fsapp-full``: fsapp's full scenario (PIN identification, balance, billed bridge).

The calls come from this process: ``fsapp.fakefs.FakeFreeSWITCH`` stand-ins, the same
scripts for every server. Measured per server:

- setup latency (connect to the server's first command, read on a blocking socket) at
  10 new calls/s each, the servers' calls interleaved, each server's from a stand-in
  process of its own; beside them a bare blocking socket server that only sends
  ``connect`` and ``exit`` shows what the machine itself allows (the floor), and the same
  on gevent's StreamServer what any gevent server can do (fsapp is one);
- calls/s and the server's CPU time (user + system, from /proc, its process alone) per
  completed call at concurrency 50;
- a burst of 5,000 calls at concurrency 1,000 (failed calls; the kernel's listen queue
  overflows: each server's backlog is capped by net.core.somaxconn);
- memory per call held open in a bridge: 10,000 calls on a fresh process, the RSS delta
  over the calls that reached the bridge (a server that stalls is reported with what it held);
- what is left after the load: file descriptors, sockets, daemon-side connections.

Setup runs are repeated 3 times and CPU runs 5 (``--reps`` sets both) and their medians
reported; the full scenario's CPU ratio to each peer is also given as the median of the
ratios within each run (measured back to back, the order reversed every other run). The table is
printed and the same figures written as JSON (``bench/results.json``). A full run takes
about 10 minutes on 2 cores; ``--quick`` makes every size small.

    python bench/run.py [--quick] [--servers fsapp,greenswitch,genesis] [--json PATH]

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
import gevent.socket

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from fsapp import loadtest  # noqa: E402
from fsapp.fakefs import FakeFreeSWITCH, Script  # noqa: E402

PEERS = ("greenswitch", "genesis")
SERVERS = ("fsapp", *PEERS)

SIZES: dict[str, dict[str, int]] = {
    "full": {"warmup": 50, "setup_calls": 200, "setup_rate": 10, "calls": 2000, "concurrency": 50,
             "burst_calls": 5000, "burst_concurrency": 1000, "hold": 10_000, "hold_rate": 1000, "reps": 3,
             "cpu_reps": 5},
    "quick": {"warmup": 10, "setup_calls": 20, "setup_rate": 10, "calls": 200, "concurrency": 20,
              "burst_calls": 300, "burst_concurrency": 100, "hold": 200, "hold_rate": 500, "reps": 3,
              "cpu_reps": 3},
}
# Targets of the issue, checked on the medians of one run.
SETUP_P99_MS = 1.0
HELD_KB = 30.0
HOLD_WAIT = 90.0  # seconds after the last held call starts, at most, for all to reach the bridge
STALL = 15.0  # ... or this long without one more reaching it


# ------------------------------------------------------------------ servers


# The last line of a traceback: ``package.module.SomeError: message`` (no paths kept).
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Lost|Away|Exit|Timeout))\b")


@dataclass
class Server:
    """One server under test, in a child process."""

    name: str
    proc: subprocess.Popen[str]
    address: tuple[str, int]
    log: Callable[[], dict[str, Any]]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return loadtest._proc_stat(self.pid)[0]

    def rss(self) -> int:
        return loadtest._proc_stat(self.pid)[1]

    def fds(self) -> dict[str, int]:
        """Open file descriptors, of which sockets, and daemon-side connections on the listen port."""
        inodes: set[str] = set()
        total = 0
        base = f"/proc/{self.pid}/fd"
        for fd in os.listdir(base):
            try:
                target = os.readlink(f"{base}/{fd}")
            except OSError:
                continue
            total += 1
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        return {"fds": total, "sockets": len(inodes), "connections": _connections(self.address[1], inodes)}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _connections(port: int, inodes: set[str]) -> int:
    """TCP sockets of ``inodes`` on local ``port`` that are not the listener (the server's live connections)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] != "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port and parts[9] in inodes:
                        n += 1
        except OSError:
            continue
    return n


def _read_block(conn: Any) -> bytes:
    """Read a blocking socket until a blank line ends a frame's head; short if the peer closed first."""
    buf = b""
    while b"\n\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _least_call(conn: Any) -> None:
    """The least a server can do with a call: send connect, read the reply, send exit, read to the end."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(b"connect\n\n")
    if b"\n\n" not in _read_block(conn):
        return
    conn.sendall(b"exit\n\n")
    while conn.recv(65536):
        pass


def floor_server(port: int) -> int:
    """The setup-latency floor: ``_least_call`` on a blocking socket, one call at a time."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)
    print(f"ready 127.0.0.1:{port}", file=sys.stderr, flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            _least_call(conn)


def gevent_floor_server(port: int) -> int:
    """``_least_call`` on gevent's own StreamServer (what fsapp is built on): its setup
    latency is the floor of any gevent server here, fsapp's included."""
    from gevent.server import StreamServer

    server = StreamServer(("127.0.0.1", port), lambda conn, _address: _least_call(conn), backlog=1024)
    server.start()
    gevent.signal_handler(signal.SIGTERM, server.stop)
    print(f"ready 127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


FLOORS = ("floor", "floor-gevent")


def start_server(name: str, opts: argparse.Namespace) -> Server:
    if name in ("fsapp", "fsapp-full"):
        daemon = loadtest.start_daemon("menu" if name == "fsapp" else "full")
        return Server(name, daemon.proc, daemon.address, lambda: {"levels": dict(daemon.levels)})  # type: ignore[attr-defined]
    port = loadtest._free_port()
    if name in FLOORS:
        cmd = [sys.executable, str(Path(__file__).resolve()), f"--{name}-server", str(port)]
    else:
        cmd = [sys.executable, str(BENCH / f"peer_{name}.py"), str(port)]
    if name == "genesis" and opts.genesis_uvloop:
        cmd.append("--uvloop")
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ready = threading.Event()
    lines: Counter[str] = Counter()
    raised: Counter[str] = Counter()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if not ready.is_set() and line.startswith("ready "):
                ready.set()
                continue
            lines["lines"] += 1
            if line.startswith("Traceback"):
                lines["tracebacks"] += 1
            kind = _EXCEPTION_LINE.match(line)
            if kind:
                raised[kind.group(1)] += 1
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(60)
    if proc.poll() is not None or not ready.is_set():
        proc.kill()
        raise RuntimeError(f"{name} did not start: {dict(raised) or 'no ready line'}")
    return Server(name, proc, ("127.0.0.1", port), lambda: {**lines, "exceptions": dict(raised.most_common(5))})


def menu_scripts(n: int) -> Iterator[Script]:
    return (loadtest.menu_scenario(i) for i in range(n))


def full_scripts(n: int) -> Iterator[Script]:
    return (loadtest.full_scenario(i) for i in range(n))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def setup_runs(servers: list[Server], n: int, rate: float) -> dict[str, dict[str, Any]]:
    """Setup latency and command round trips at ``rate`` new calls/s on each server.

    Each server's calls come from a stand-in process of its own (``--setup-driver``), all
    on one schedule offset so that no two calls start together. One process driving
    every server measured itself: a connect answered while it was busy with another
    server's call waited for it, and every server's p99, the bare floors' too, read 4-5 ms.
    """
    k = len(servers)
    start = time.time() + 3.0  # time for the drivers to start, import and warm up
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--setup-driver",
                               f"{s.address[0]}:{s.address[1]}", str(n), str(rate), f"{start + i / (rate * k):.6f}",
                               "" if s.name in FLOORS else "bridge"],
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, s in enumerate(servers)]
    out: dict[str, dict[str, Any]] = {}
    for server, proc in zip(servers, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=n / rate + 300)
        if proc.returncode != 0:
            out[server.name] = {"calls": n, "completed": 0, "errors": {"setup driver failed": n},
                                "failed": stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
            continue
        out[server.name] = json.loads(stdout)
    return out


class BlockingFirstRead(FakeFreeSWITCH):
    """The stand-in, timing setup on a plain blocking socket: connect, then ``recv`` until
    the server's first command. The gevent stand-in's own hub added about 0.25 ms to p50
    and p99 alike (bare StreamServer: p99 0.92 against 0.78 ms). The rest of the call
    goes on as usual; the process's other calls wait meanwhile (at 10 calls/s, one at a time)."""

    def connect(self) -> bytes:
        t0 = time.monotonic()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.io_timeout)
            sock.connect(self.address)
            data = _read_block(sock)
            self.setup_latency = time.monotonic() - t0
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self._sock = gevent.socket.socket(fileno=sock.detach())
        return data


def setup_driver(address: str, n: int, rate: float, start: float, expect_app: str) -> int:
    """One server's setup-latency calls, ``rate`` a second from ``start`` (a time.time()); the figures as JSON."""
    host, _, port = address.rpartition(":")
    for i in range(5):  # a new process's first calls are its own cold start, not the server's
        loadtest.Results().play((host, int(port)), loadtest.menu_scenario(i), expect_app=expect_app,
                                stand_in=BlockingFirstRead)
    res = loadtest.Results()
    pool = gevent.pool.Pool(50)
    while time.time() < start:
        gevent.sleep(min(0.05, start - time.time()))
    t0 = time.monotonic()
    for i in range(n):
        res.calls += 1
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        pool.spawn(res.play, (host, int(port)), loadtest.menu_scenario(i), expect_app=expect_app,
                   stand_in=BlockingFirstRead)
    pool.join()
    print(json.dumps({"calls": res.calls, "completed": res.completed, "errors": dict(res.errors),
                      "setup_p50_ms": _ms(loadtest.percentile(res.setup, 50)),
                      "setup_p99_ms": _ms(loadtest.percentile(res.setup, 99)),
                      "command_rtt_p50_ms": _ms(loadtest.percentile(res.commands, 50)),
                      "command_rtt_p99_ms": _ms(loadtest.percentile(res.commands, 99))}))
    return 0


def cpu_run(server: Server, scripts: Iterator[Script], concurrency: int) -> dict[str, Any]:
    """Calls/s and the server's CPU per completed call, as fast as the calls go at ``concurrency``."""
    cpu0 = server.cpu()
    res = loadtest.drive(server.address, scripts, concurrency=concurrency)
    gevent.sleep(1.0)  # work the server does after the last exit (journal, teardown) counts too
    cpu = server.cpu() - cpu0
    return {"calls": res.calls, "completed": res.completed, "errors": dict(res.errors),
            "calls_per_second": round(res.completed / res.wall, 1) if res.wall else 0.0,
            "cpu_ms_per_call": round(cpu * 1000 / max(1, res.completed), 3)}


def _tcp_ext(*names: str) -> dict[str, int]:
    try:
        with open("/proc/net/netstat") as f:
            rows = f.read().splitlines()
    except OSError:
        return {}
    for head, values in zip(rows[::2], rows[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            return {n: int(table.get(n, 0)) for n in names}
    return {}


def burst_run(server: Server, n: int, concurrency: int) -> dict[str, Any]:
    """``n`` calls with ``concurrency`` at once from the start: failed calls, listen queue overflows."""
    before = _tcp_ext("ListenOverflows", "ListenDrops")
    cpu0 = server.cpu()
    res = loadtest.drive(server.address, menu_scripts(n), concurrency=concurrency)
    gevent.sleep(1.0)
    cpu = server.cpu() - cpu0
    after = _tcp_ext("ListenOverflows", "ListenDrops")
    return {"calls": res.calls, "completed": res.completed, "failed": res.calls - res.completed,
            "errors": dict(res.errors), "wall_seconds": round(res.wall, 2),
            "calls_per_second": round(res.completed / res.wall, 1) if res.wall else 0.0,
            "cpu_ms_per_call": round(cpu * 1000 / max(1, res.completed), 3),
            "setup_p99_ms": _ms(loadtest.percentile(res.setup, 99)),
            "setup_max_ms": _ms(max(res.setup, default=0.0)),
            "listen_overflows": {k: after[k] - before.get(k, 0) for k in after}}


@dataclass
class _Gate:
    release: gevent.event.Event = field(default_factory=gevent.event.Event)
    in_bridge: int = 0


class HeldCall(FakeFreeSWITCH):
    """A stand-in whose ``hold`` bridge stays up until the gate opens (instead of for fixed seconds)."""

    gate: _Gate

    def _talk(self, plan: Any) -> None:
        if not plan.hold:
            super()._talk(plan)
            return
        self._flush()
        self.gate.in_bridge += 1
        self.gate.release.wait()
        self.now_us = self.bridged_us + int(plan.seconds * 1_000_000)


def held_run(name: str, opts: argparse.Namespace, n: int, rate: float) -> dict[str, Any]:
    """RSS per call with ``n`` calls held at once in a bridge, on a fresh server process."""
    server = start_server(name, opts)
    try:
        loadtest.drive(server.address, menu_scripts(20), concurrency=5)
        gevent.sleep(1.0)
        base = server.fds()
        rss0 = server.rss()
        gate = _Gate()
        pool = gevent.pool.Pool(n)
        calls: list[gevent.Greenlet] = []
        t0 = time.monotonic()
        for i in range(n):
            script = Script(caller=f"0912{i:07d}", dtmf=["1"], bridges=["answer:30:hold"])
            fake = HeldCall(server.address, script, io_timeout=HOLD_WAIT + 60)
            fake.gate = gate
            calls.append(pool.spawn(fake.run))
            due = t0 + (i + 1) / rate
            if due > time.monotonic():
                gevent.sleep(due - time.monotonic())
        # Wait for every call to reach its bridge; give up after STALL seconds without
        # progress or HOLD_WAIT seconds in all (a server that cannot hold them all).
        deadline = time.monotonic() + HOLD_WAIT
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            reached = gate.in_bridge + sum(1 for g in calls if g.dead)
            if reached >= n:
                break
            if reached != last:
                last, last_change = reached, time.monotonic()
            elif time.monotonic() - last_change > STALL:
                break
            gevent.sleep(0.25)
        ramp = time.monotonic() - t0
        held = gate.in_bridge
        samples = []
        for _ in range(4):
            samples.append(server.rss())
            gevent.sleep(0.5)
        rss_held = max(samples)
        during = server.fds()
        gate.release.set()
        pool.join(timeout=30)
        gevent.sleep(3.0)
        fds_after = server.fds()
        pool.kill(timeout=10)  # the calls a server could not finish: close our side
        errors: Counter[str] = Counter()
        done = 0
        for g in calls:
            fake = g.value if isinstance(g.value, FakeFreeSWITCH) else None  # a killed one holds GreenletExit
            kind = "not finished" if fake is None else loadtest._check(fake, "bridge")
            if kind:
                errors[kind] += 1
            else:
                done += 1
        return {"asked": n, "held": held, "ramp_seconds": round(ramp, 1), "completed": done,
                "errors": dict(errors), "rss_before_mb": round(rss0 / 2**20, 1),
                "rss_held_mb": round(rss_held / 2**20, 1),
                "kb_per_held_call": round((rss_held - rss0) / 1024 / max(1, held), 1),
                "fds_held": during, "fds_before": base, "fds_after": fds_after}
    finally:
        code = server.stop()
        if code:
            print(f"  {name} (held) exited {code}", file=sys.stderr)


# ------------------------------------------------------------------ the run


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def _errors(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in runs:
        total.update(r.get("errors", {}))
    return dict(total)


def _safe(label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one phase; a peer that breaks is reported, not fatal."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the results
        print(f"  {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"failed": f"{type(exc).__name__}: {exc}"[:500]}


def machine() -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""

    versions = {}
    for dist in ("gevent", "greenlet", "greenswitch", "genesis"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "somaxconn": int(read("/proc/sys/net/core/somaxconn") or 0),
            "tcp_max_syn_backlog": int(read("/proc/sys/net/ipv4/tcp_max_syn_backlog") or 0),
            "tcp_syncookies": int(read("/proc/sys/net/ipv4/tcp_syncookies") or 0),
            "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "loadavg_at_start": read("/proc/loadavg").split()[:3], "versions": versions}


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench(opts: argparse.Namespace) -> dict[str, Any]:
    size = dict(SIZES["quick" if opts.quick else "full"])
    if opts.hold is not None:
        size["hold"] = opts.hold
    if opts.reps is not None:
        size["reps"] = size["cpu_reps"] = opts.reps
    nofile = raise_nofile(size["hold"] + 2 * size["burst_concurrency"] + 2048)
    if size["hold"] > nofile - 1024:
        size["hold"] = max(100, nofile - 1024)
        print(f"RLIMIT_NOFILE is {nofile}: holding {size['hold']} calls", file=sys.stderr)
    names = [s for s in opts.servers.split(",") if s]
    out: dict[str, Any] = {"machine": machine(), "sizes": size, "fsapp_log_level": "info",
                           "genesis_loop": "uvloop" if opts.genesis_uvloop else "asyncio", "servers": {}}

    servers: dict[str, Server] = {}
    extra = (["fsapp-full"] if "fsapp" in names and not opts.no_full else []) + list(FLOORS)
    for name in [*names, *extra]:
        print(f"starting {name}", file=sys.stderr)
        try:
            servers[name] = start_server(name, opts)
        except Exception as exc:  # noqa: BLE001 - reported
            out["servers"][name] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
    results: dict[str, dict[str, Any]] = {n: {"setup_runs": [], "cpu_runs": []} for n in servers}
    base: dict[str, dict[str, int]] = {}
    try:
        for name, server in servers.items():
            warm = full_scripts if name == "fsapp-full" else menu_scripts
            loadtest.drive(server.address, warm(size["warmup"]), concurrency=5,
                           expect_app="" if name in FLOORS else "bridge")
            gevent.sleep(1.0)
            base[name] = server.fds()
        timed = [server for name, server in servers.items() if name != "fsapp-full"]
        for rep in range(size["reps"]):
            print(f"setup latency, run {rep + 1}: " + ", ".join(s.name for s in timed), file=sys.stderr)
            runs = _safe("setup", lambda: setup_runs(timed, size["setup_calls"], size["setup_rate"]))
            for server in timed:
                results[server.name]["setup_runs"].append(runs.get(server.name, runs))
        for rep in range(size["cpu_reps"]):
            # One server after another, in the reverse order every other run: a slow spell of
            # the machine falls on neighbours alike, and each run's ratios pair up (paired_ratio).
            order = list(servers.items()) if rep % 2 == 0 else list(servers.items())[::-1]
            for name, server in order:
                if name in FLOORS:
                    continue
                print(f"CPU per call, run {rep + 1}: {name}", file=sys.stderr)
                scripts = full_scripts if name == "fsapp-full" else menu_scripts
                results[name]["cpu_runs"].append(
                    _safe(name, lambda s=server, m=scripts: cpu_run(s, m(size["calls"]), size["concurrency"])))
        for name, server in servers.items():
            if name == "fsapp-full" or name in FLOORS:
                continue
            print(f"burst: {name}", file=sys.stderr)
            results[name]["burst"] = _safe(name, lambda s=server: burst_run(s, size["burst_calls"],
                                                                             size["burst_concurrency"]))
        gevent.sleep(3.0)
        for name, server in servers.items():
            after = server.fds()
            results[name]["leaks"] = {"before": base[name], "after": after,
                                      "fds_left": after["fds"] - base[name]["fds"],
                                      "sockets_left": after["sockets"] - base[name]["sockets"],
                                      "connections_left": after["connections"]}
            results[name]["rss_after_load_mb"] = round(server.rss() / 2**20, 1)
            results[name]["log"] = server.log()
    finally:
        for name, server in servers.items():
            results[name]["exit_code"] = server.stop()
    for name in servers:
        if name == "fsapp-full" or name in FLOORS:
            continue
        print(f"held calls: {name}", file=sys.stderr)
        results[name]["held"] = _safe(name, lambda n=name: held_run(n, opts, size["hold"], size["hold_rate"]))

    for name, r in results.items():
        r["setup_p50_ms"] = _median(r["setup_runs"], "setup_p50_ms")
        r["setup_p99_ms"] = _median(r["setup_runs"], "setup_p99_ms")
        r["command_rtt_p50_ms"] = _median(r["setup_runs"], "command_rtt_p50_ms")
        r["calls_per_second"] = _median(r["cpu_runs"], "calls_per_second")
        r["cpu_ms_per_call"] = _median(r["cpu_runs"], "cpu_ms_per_call")
        r["errors"] = _errors(r["setup_runs"] + r["cpu_runs"])
        out["servers"][name] = r
    out["ratios"] = ratios(out["servers"])
    out["targets"] = targets(out["servers"], size)
    out["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return out


# ------------------------------------------------------------------ report

ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("setup p50 ms @10/s", lambda r: r.get("setup_p50_ms")),
    ("setup p99 ms @10/s", lambda r: r.get("setup_p99_ms")),
    ("command rtt p50 ms", lambda r: r.get("command_rtt_p50_ms")),
    ("calls/s", lambda r: r.get("calls_per_second")),
    ("CPU ms/call", lambda r: r.get("cpu_ms_per_call")),
    ("errors (setup+cpu)", lambda r: sum(r.get("errors", {}).values()) if "errors" in r else None),
    ("burst failed calls", lambda r: r.get("burst", {}).get("failed")),
    ("burst calls/s", lambda r: r.get("burst", {}).get("calls_per_second")),
    ("burst setup p99 ms", lambda r: r.get("burst", {}).get("setup_p99_ms")),
    ("calls held", lambda r: r.get("held", {}).get("held")),
    ("KB per held call", lambda r: r.get("held", {}).get("kb_per_held_call")),
    ("fds left after load", lambda r: r.get("leaks", {}).get("fds_left")),
    ("connections left", lambda r: r.get("leaks", {}).get("connections_left")),
    ("exit code", lambda r: r.get("exit_code")),
]


def _ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return round(a / b, 3)


def ratios(servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    me = servers.get("fsapp", {})
    out: dict[str, Any] = {}
    for peer in PEERS:
        other = servers.get(peer, {})
        out[f"fsapp/{peer}"] = {label: _ratio(get(me), get(other)) for label, get in ROWS[:5] + ROWS[7:11]}
    full = servers.get("fsapp-full", {})
    out["fsapp-full/greenswitch cpu_ms_per_call"] = _ratio(full.get("cpu_ms_per_call"),
                                                           servers.get("greenswitch", {}).get("cpu_ms_per_call"))
    out["fsapp-full/genesis cpu_ms_per_call"] = _ratio(full.get("cpu_ms_per_call"),
                                                       servers.get("genesis", {}).get("cpu_ms_per_call"))
    for peer in PEERS:
        out[f"fsapp-full/{peer} cpu_ms_per_call, median of per-run ratios"] = paired_ratio(
            full.get("cpu_runs", []), servers.get(peer, {}).get("cpu_runs", []))
    return out


def paired_ratio(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float | None:
    """The median over runs of (mine / theirs) CPU per call, each run's pair measured back to back."""
    pairs = [_ratio(a.get("cpu_ms_per_call"), b.get("cpu_ms_per_call")) for a, b in zip(mine, theirs, strict=False)]
    pairs = [r for r in pairs if r is not None]
    return round(statistics.median(pairs), 3) if pairs else None


def targets(servers: dict[str, dict[str, Any]], size: dict[str, int]) -> dict[str, Any]:
    me = servers.get("fsapp", {})
    full = servers.get("fsapp-full", {})
    gs = servers.get("greenswitch", {})
    gen = servers.get("genesis", {})
    p99 = me.get("setup_p99_ms")
    held = me.get("held", {})
    leaks = me.get("leaks", {})
    burst = me.get("burst", {})

    def check(ok: Any) -> bool | None:
        return None if ok is None else bool(ok)

    return {
        f"setup p99 < {SETUP_P99_MS} ms at {size['setup_rate']}/s": check(None if p99 is None else p99 < SETUP_P99_MS),
        "setup p99 <= genesis": check(None if p99 is None or gen.get("setup_p99_ms") is None
                                      else p99 <= gen["setup_p99_ms"]),
        "full CPU/call <= greenswitch menu CPU/call, no errors": check(
            None if full.get("cpu_ms_per_call") is None or gs.get("cpu_ms_per_call") is None
            else full["cpu_ms_per_call"] <= gs["cpu_ms_per_call"] and not full.get("errors")),
        f"burst {size['burst_calls']} @ {size['burst_concurrency']}: 0 failed": check(
            None if "failed" not in burst or not isinstance(burst["failed"], int) else burst["failed"] == 0),
        f"{size['hold']} held, < {HELD_KB:g} KB each": check(
            None if "kb_per_held_call" not in held
            else held["held"] >= size["hold"] and held["kb_per_held_call"] < HELD_KB),
        "nothing left after load": check(
            None if not leaks else leaks["fds_left"] <= 0 and leaks["connections_left"] == 0
            and (full.get("leaks", {}).get("connections_left", 0) == 0)),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def report(out: dict[str, Any]) -> str:
    servers = out["servers"]
    cols = [n for n in SERVERS if n in servers]
    head = ["", *cols] + [f"fsapp/{p}" for p in PEERS if p in servers and "fsapp" in servers]
    lines = []
    table = [head]
    for label, get in ROWS:
        row = [label] + [_cell(get(servers[c])) for c in cols]
        row += [_cell(_ratio(get(servers["fsapp"]), get(servers[p]))) for p in PEERS
                if p in servers and "fsapp" in servers]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    floors = {"floor": "a bare blocking socket server", "floor-gevent": "a bare gevent StreamServer"}
    if any(name in servers for name in floors):
        lines.append("")
    for name, what in floors.items():
        floor = servers.get(name)
        if floor:
            lines.append(f"setup floor ({what}, same stand-in): "
                         f"p50 {_cell(floor.get('setup_p50_ms'))} ms, p99 {_cell(floor.get('setup_p99_ms'))} ms")
    full = servers.get("fsapp-full")
    if full:
        lines.append("")
        lines.append(f"fsapp full scenario: {_cell(full.get('calls_per_second'))} calls/s, "
                     f"{_cell(full.get('cpu_ms_per_call'))} CPU ms/call, errors {full.get('errors') or 0}, "
                     f"fds left {full.get('leaks', {}).get('fds_left')}, exit {full.get('exit_code')}")
        for peer in PEERS:
            r = out["ratios"].get(f"fsapp-full/{peer} cpu_ms_per_call")
            paired = out["ratios"].get(f"fsapp-full/{peer} cpu_ms_per_call, median of per-run ratios")
            lines.append(f"  CPU/call fsapp full / {peer} menu: {_cell(r)} (median of per-run ratios {_cell(paired)})")
    for name in cols:
        errs = servers[name].get("errors") or {}
        burst = servers[name].get("burst", {})
        held = servers[name].get("held", {})
        extra = [f"errors {errs}"] if errs else []
        if burst.get("errors"):
            extra.append(f"burst errors {burst['errors']}")
        if burst.get("listen_overflows"):
            extra.append(f"listen overflows {burst['listen_overflows']}")
        if held.get("errors"):
            extra.append(f"held errors {held['errors']}")
        for key in ("failed",):
            for part in ("burst", "held"):
                if isinstance(servers[name].get(part, {}).get(key), str):
                    extra.append(f"{part}: {servers[name][part][key]}")
        if extra:
            lines.append(f"{name}: " + "; ".join(extra))
    lines.append("")
    for label, ok in out["targets"].items():
        lines.append(f"target {label}: {'-' if ok is None else ('met' if ok else 'NOT met')}")
    m = out["machine"]
    lines.append("")
    lines.append(f"machine: {m['platform']}, Python {m['python']}, {m['cpus']} CPUs, somaxconn {m['somaxconn']}, "
                 f"tcp_max_syn_backlog {m['tcp_max_syn_backlog']}, load {' '.join(m['loadavg_at_start'])} -> "
                 f"{' '.join(m.get('loadavg_at_end', []))}")
    lines.append(f"sizes: {out['sizes']} (calls/s and CPU at concurrency {out['sizes']['concurrency']}); "
                 f"fsapp log level {out['fsapp_log_level']}; Genesis on {out['genesis_loop']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fsapp against greenswitch and Genesis on the same scripted call")
    p.add_argument("--quick", action="store_true", help="small sizes, to try the bench out")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    p.add_argument("--no-full", action="store_true", help="skip fsapp's full scenario")
    p.add_argument("--reps", type=int, default=None, help="repetitions of the setup and CPU runs (median taken)")
    p.add_argument("--hold", type=int, default=None, help="calls to hold open at once (default 10,000; quick 200)")
    p.add_argument("--genesis-uvloop", action="store_true", help="run the Genesis peer on uvloop")
    p.add_argument("--json", default="", help="where to write the figures (default bench/results.json; "
                                              "with --quick, nowhere unless given)")
    p.add_argument("--floor-server", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--floor-gevent-server", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--setup-driver", nargs=5, metavar=("ADDRESS", "N", "RATE", "START", "EXPECT"),
                   help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.setup_driver:
        address, n, rate, start, expect = opts.setup_driver
        return setup_driver(address, int(n), float(rate), float(start), expect)
    if opts.floor_server:
        return floor_server(opts.floor_server)
    if opts.floor_gevent_server:
        return gevent_floor_server(opts.floor_gevent_server)
    unknown = set(opts.servers.split(",")) - set(SERVERS) - {""}
    if unknown:
        p.error(f"unknown server {sorted(unknown)[0]!r}")
    t0 = time.monotonic()
    out = bench(opts)
    out["wall_seconds"] = round(time.monotonic() - t0, 1)
    path = Path(opts.json) if opts.json else None if opts.quick else BENCH / "results.json"
    if path is not None:
        path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(report(out))
    print(f"\n({f'written to {path.name}; ' if path else ''}{out['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
