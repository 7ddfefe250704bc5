"""How many mod_json_cdr posts per second a daemon stores, how fast it answers, and its memory.

Starts `fsapp serve` (its own process, a fresh SQLite database, `[cdr] listen`) and
posts the captured legs of ../shared/cdr (all seven scenarios, each call with random
uuids of its own, as FreeSWITCH's are, and its times moved on a second every 1,000 calls)
the way mod_json_cdr does: one POST per leg on a new connection, B leg then A leg. Two
phases:

1. ``--rate`` posts/s, open loop, for ``--posts`` posts: latency is measured from the
   moment a post was due (so a stall counts for every post it delays), p50/p99/max;
   the daemon's RSS is sampled every tenth of the run (memory flat or not). The posts
   are built before the phase (about 9 KB each: 0.9 GB for 100,000) and sent from one
   epoll loop, so that the client takes as little of the machine's CPU as it can;
2. closed loop at ``--concurrency``: the most posts/s it stores.

Every post must be answered 200, and the journal must end with one row per call.
``--pg URL`` stores in a fresh database made on that PostgreSQL server (and dropped
after); ``--profile FILE`` runs the daemon under cProfile and writes its stats there.

``--floor`` measures the machine instead of fsapp: the same posts to a process that runs
fsapp's HTTP server (``fsapp.cdr.http``) with a handler that answers 200 to every post
and does nothing else (no parse, no store). What it reaches is the most any daemon could
reach with this client beside it on this machine.

    python bench/cdr_bench.py [--posts 100000] [--rate 2000] [--concurrency 32] [--max-posts 20000]
                              [--pg postgresql://user@host:port/postgres] [--profile cdr.prof] [--floor]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fsapp.store import open_store  # noqa: E402

CDR_DIR = ROOT.parent / "shared" / "cdr"


def _templates() -> list[tuple[bytes, bytes, str, str]]:
    """(b leg, a leg, b uuid, a uuid) per captured call."""
    import json

    out = []
    for a_path in sorted(CDR_DIR.glob("*.a-leg.json")):
        a = a_path.read_bytes()
        b = a_path.with_name(a_path.name.replace(".a-leg", ".b-leg")).read_bytes()
        out.append((b, a, json.loads(b)["variables"]["uuid"], json.loads(a)["variables"]["uuid"]))
    return out


TEMPLATES = _templates()


CALLS_A_SECOND = 1000  # the captured calls' times moved on a second every this many calls
_EPOCH = re.compile(rb'"(179[0-9]{7})([0-9]{6})?"')  # the capture's times (2026-12)


def _later(body: bytes, seconds: int) -> bytes:
    """The leg with every epoch time in it (seconds or microseconds) ``seconds`` later: the calls
    start one after another, as on a real PBX, not all in the captured second."""
    if not seconds:
        return body

    def move(m: re.Match[bytes]) -> bytes:
        return b'"%d%s"' % (int(m.group(1)) + seconds, m.group(2) or b"")

    return _EPOCH.sub(move, body)


def _uuid(seed: str) -> str:
    """A uuid as random as FreeSWITCH's (version 4), the same for the same seed: calls keep coming
    in at random places of every index keyed by uuid, as they do on a real PBX."""
    h = hashlib.md5(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def leg_request(n: int, port: int) -> bytes:
    """Post ``n``: call n // 2 (scenario by number), its B leg when n is even, else its A leg."""
    call = n // 2
    b, a, b_uuid, a_uuid = TEMPLATES[call % len(TEMPLATES)]
    new_b, new_a = _uuid(f"{call}b"), _uuid(f"{call}a")
    body = (a if n % 2 else b).replace(a_uuid.encode(), new_a.encode()).replace(b_uuid.encode(), new_b.encode())
    body = _later(body, call // CALLS_A_SECOND)
    head = (f"POST /cdr?uuid={new_a if n % 2 else new_b} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "User-Agent: freeswitch-json/1.0\r\nAccept: */*\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The daemon's child processes (its CDR front), living now."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def front_cpu_seconds(pid: int) -> float:
    """The CPU of the daemon's children (the front process serving the posts' HTTP); 0 with none."""
    return sum(cpu_seconds(child) for child in children(pid))


def rss_kb(pid: int) -> int:
    """The resident memory of the daemon and its children (the front), in KiB."""
    return sum(_own_rss_kb(one) for one in (pid, *children(pid)))


def _own_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Post:
    """One post in flight on its own non-blocking connection."""

    __slots__ = ("sock", "request", "sent", "due", "answer")

    def __init__(self, sock: socket.socket, request: bytes, due: float) -> None:
        self.sock, self.request, self.sent, self.due, self.answer = sock, request, 0, due, b""


def open_loop(port: int, pid: int, requests: list[bytes], rate: float) -> dict[str, object]:
    """``requests`` posted at ``rate``/s, each on a new connection when it is due, whatever is still
    in flight; the daemon's RSS sampled every tenth of the run."""
    return _drive(port, pid, requests, rate=rate)


def closed_loop(port: int, requests: list[bytes], concurrency: int) -> dict[str, object]:
    """``requests`` posted ``concurrency`` at a time: each answer sends the next."""
    return _drive(port, 0, requests, concurrency=concurrency)


def _drive(port: int, pid: int, requests: list[bytes], *, rate: float = 0.0, concurrency: int = 0) -> dict[str, object]:
    """One epoll loop, the requests built before (see ``build``), so that the client costs as
    little CPU as it can in Python (about 120-200 us a post, against 440-540 with a greenlet a
    post: beside the daemon on a 2-core machine, the client's CPU is the daemon's loss).
    Latency is from when a post was due (open loop) or sent (closed loop)."""
    posts, most = len(requests), min(IN_FLIGHT, _open_files() - 100)
    poller, flight = select.epoll(), {}
    latencies: list[float] = []
    failed, k, samples = 0, 0, []
    t0 = time.monotonic()
    while k < posts or flight:
        now = time.monotonic()
        while k < posts and len(flight) < most and (t0 + k / rate <= now if rate else len(flight) < concurrency):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            flight[sock.fileno()] = _Post(sock, requests[k], t0 + k / rate if rate else now)
            poller.register(sock.fileno(), select.EPOLLOUT)
            requests[k] = b""  # memory back as the run goes
            if pid and k % (posts // 10 or 1) == 0:
                samples.append((k, rss_kb(pid)))
            k += 1
        due = rate and k < posts and len(flight) < most  # else only an answer can let the next one go
        wait = max(0.0, t0 + k / rate - time.monotonic()) if due else 0.05
        for fd, events in poller.poll(wait):
            done = _step(flight[fd], events, poller)
            if done is not None:
                latencies.append(time.monotonic() - flight.pop(fd).due)
                failed += not done
    elapsed = time.monotonic() - t0
    if pid:
        samples.append((posts, rss_kb(pid)))
    latencies.sort()
    return {"posts": posts, "seconds": elapsed, "rate": posts / elapsed, "failed": failed,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "max_ms": 1000 * latencies[-1], "rss_kb": samples}


IN_FLIGHT = 2000  # posts in flight at most; those due beyond it wait, their latency counted from when due


def _open_files() -> int:
    """This process's limit of open files, raised to the hard limit (IN_FLIGHT connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def build(port: int, first: int, posts: int) -> list[bytes]:
    """Posts ``first`` .. ``first + posts - 1``, built (about 9 KB each: 0.9 GB for 100,000)."""
    return [leg_request(n, port) for n in range(first, first + posts)]


def _step(post: _Post, events: int, poller: select.epoll) -> bool | None:
    """Send more of ``post`` or read its answer; True/False once answered (200 or not), else None.
    A refused or reset connection counts as not answered: mod_json_cdr would retry it, then file it."""
    try:
        if events & select.EPOLLOUT and not events & select.EPOLLERR:
            post.sent += post.sock.send(memoryview(post.request)[post.sent:])
            if post.sent >= len(post.request):
                poller.modify(post.sock.fileno(), select.EPOLLIN)
            return None
        chunk = post.sock.recv(4096) if not events & select.EPOLLERR else b""
    except BlockingIOError:
        return None
    except OSError:
        chunk = b""
    post.answer += chunk
    if chunk and b"\r\n\r\n" not in post.answer:
        return None
    poller.unregister(post.sock.fileno())
    post.sock.close()
    return post.answer.startswith(b"HTTP/1.1 200 ")


def start_daemon(tmp: Path, url: str, profile: str, group_commit_ms: float | None = None,
                 in_loop: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp / "fsapp.toml"
    group_commit = "" if group_commit_ms is None else f"group_commit_ms = {group_commit_ms}"
    config.write_text(textwrap.dedent(f"""
        [server]
        listen = "127.0.0.1:0"
        [storage]
        url = "{url}"
        {group_commit}
        [sounds]
        dir = "{ROOT / 'sounds'}"
        [entry]
        default = "main"
        [cdr]
        listen = "127.0.0.1:{port}"
        own_process = {'false' if in_loop else 'true'}
        [[modules]]
        code = "main"
        kind = "customer_club"
        auth = "phone"
        next = "hangup"
        error = "hangup"
    """))
    log = (tmp / "serve.log").open("wb")
    python = [sys.executable, "-m", "cProfile", "-o", profile] if profile else [sys.executable]
    proc = subprocess.Popen([*python, "-m", "fsapp", "--log-level", "warning", "serve", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _wait_port(port)
    return proc, port


class _Accept:
    """The floor's handler: 200 to every post, nothing read from it."""

    def check(self, request: object, length: int) -> None:
        return None

    def handle(self, request: object) -> object:
        from fsapp.cdr.http import Response

        return Response(200, "OK\n")


def serve_floor(port: int) -> None:
    """The ``--floor`` process: fsapp's HTTP server on ``port`` with ``_Accept``, until SIGTERM."""
    from gevent import monkey

    monkey.patch_all()
    from fsapp.cdr import http

    server = http.serve("127.0.0.1", port, _Accept())
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()


def start_floor(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(port)],
                            stderr=(tmp / "floor.log").open("wb"), env={**os.environ, "PYTHONPATH": str(ROOT)})
    _wait_port(port)
    return proc, port


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posts", type=int, default=100_000, help="posts of the open-loop phase")
    p.add_argument("--rate", type=float, default=2000.0, help="posts/s of the open-loop phase")
    p.add_argument("--concurrency", type=int, default=32, help="posts in flight in the closed-loop phase")
    p.add_argument("--max-posts", type=int, default=20_000, help="posts of the closed-loop phase (0: skip it)")
    p.add_argument("--pg", default="", help="a PostgreSQL server's URL: store in a fresh database made there")
    p.add_argument("--profile", default="", help="run the daemon under cProfile, its stats to this file")
    p.add_argument("--group-commit-ms", type=float, default=None,
                   help="[storage] group_commit_ms of the daemon (default: its own default)")
    p.add_argument("--in-loop", action="store_true",
                   help="[cdr] own_process = false: the posts' HTTP in the daemon's own event loop, as before")
    p.add_argument("--floor", action="store_true", help="post to a server that answers 200 and does nothing else")
    p.add_argument("--serve-floor", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, _database("" if args.floor else args.pg, Path(tmp)) as url:
        proc, port = (start_floor(Path(tmp)) if args.floor else
                      start_daemon(Path(tmp), url, os.path.abspath(args.profile) if args.profile else "",
                                   args.group_commit_ms, args.in_loop))
        try:
            runs = _phases(args, port, proc.pid)
            journal = None if args.floor else _journal(url)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    backend = "nothing stored (--floor)" if args.floor else "PostgreSQL" if args.pg else "SQLite"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or _cpu()}, "
          f"Python {platform.python_version()}, {backend}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) at the start")
    failed = _report(args, runs)
    if journal is None:
        return 1 if failed else 0
    total = 2000 + args.posts + (args.max_posts or 0)
    legs, calls = journal
    print(f"journal: {legs} legs kept ({total} posted), {calls} calls ({total // 2} expected)")
    return 0 if legs == total and calls == total // 2 and not failed else 1


def _phases(args: argparse.Namespace, port: int, pid: int) -> dict[str, object]:
    """The warm-up, the open loop (with the CPU both sides spent on it), the closed loop."""
    warm = closed_loop(port, build(port, 0, 2000), 8)  # imports, caches, the first pages of the database
    requests = build(port, 2000, args.posts)
    cpu0, front0, own0 = cpu_seconds(pid), front_cpu_seconds(pid), time.process_time()
    steady = open_loop(port, pid, requests, args.rate)
    cpu = (cpu_seconds(pid) - cpu0, front_cpu_seconds(pid) - front0, time.process_time() - own0)
    peak = (closed_loop(port, build(port, 2000 + args.posts, args.max_posts), args.concurrency)
            if args.max_posts else None)
    return {"warm": warm, "steady": steady, "cpu": cpu, "peak": peak}


def _journal(url: str) -> tuple[int, int]:
    """(legs kept, calls journaled) once the posts are in."""
    store = open_store(url)
    try:
        return store.cdr_leg_count(), len(store.list_calls())
    finally:
        store.close()


def _report(args: argparse.Namespace, runs: dict[str, Any]) -> int:
    """Print the phases; the posts not answered 200."""
    warm, steady, peak = runs["warm"], runs["steady"], runs["peak"]
    daemon, front, client = runs["cpu"]
    print(f"warm-up: {warm['posts']} posts, {warm['failed']} failed")
    print(f"open loop at {args.rate:.0f}/s: {steady['posts']} posts in {steady['seconds']:.1f} s "
          f"({steady['rate']:.0f}/s), {steady['failed']} failed; latency p50 {steady['p50_ms']:.2f} ms, "
          f"p99 {steady['p99_ms']:.2f} ms, max {steady['max_ms']:.1f} ms")
    fronted = f", its front process {1e6 * front / args.posts:.0f} us" if front else ""
    print(f"CPU per post in the open loop: {'server' if args.floor else 'daemon'} {1e6 * daemon / args.posts:.0f} us"
          f"{fronted}, this client {1e6 * client / args.posts:.0f} us")
    print("RSS (MiB, the daemon and its front) by posts: "
          + ", ".join(f"{k}: {v / 1024:.0f}" for k, v in steady["rss_kb"]))
    if peak:
        print(f"closed loop, {args.concurrency} in flight: {peak['posts']} posts in {peak['seconds']:.1f} s "
              f"({peak['rate']:.0f}/s), {peak['failed']} failed")
    return int(steady["failed"]) + (int(peak["failed"]) if peak else 0)


@contextlib.contextmanager
def _database(pg: str, tmp: Path) -> Iterator[str]:
    """The storage URL: a fresh SQLite file, or a fresh database on the PostgreSQL server ``pg``."""
    if not pg:
        yield f"sqlite:///{tmp / 'fsapp.db'}"
        return
    import psycopg

    name = f"fsapp_bench_{os.getpid()}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
