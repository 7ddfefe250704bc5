"""How many mod_json_cdr posts per second a daemon stores, how fast it answers, and its memory.

Starts `fsapp serve` (its own process, a fresh SQLite database, `[cdr] listen`) and
posts the captured legs of ../shared/cdr (all seven scenarios, each call with random
uuids of its own, as FreeSWITCH's are, and its times moved on a second every 1,000 calls)
the way mod_json_cdr does: one POST per leg on a new connection, B leg then A leg. Two
phases:

1. ``--rate`` posts/s, open loop, for ``--posts`` posts: latency is measured from the
   moment a post was due (so a stall counts for every post it delays), p50/p99/max;
   the daemon's RSS is sampled every tenth of the run (memory flat or not);
2. closed loop at ``--concurrency``: the most posts/s it stores.

Every post must be answered 200, and the journal must end with one row per call.
``--pg URL`` stores in a fresh database made on that PostgreSQL server (and dropped
after); ``--profile FILE`` runs the daemon under cProfile and writes its stats there.

    python bench/cdr_bench.py [--posts 100000] [--rate 2000] [--concurrency 32] [--max-posts 20000]
                              [--pg postgresql://user@host:port/postgres] [--profile cdr.prof]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import gevent
import gevent.pool
import gevent.socket

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


def post(port: int, request: bytes) -> int:
    """One post on its own connection (mod_json_cdr's curl handle is per CDR); the status code."""
    s = gevent.socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    finally:
        s.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_loop(port: int, pid: int, posts: int, rate: float, first: int) -> dict[str, object]:
    latencies: list[float] = []
    failed = 0
    samples: list[tuple[int, int]] = []
    pool = gevent.pool.Pool(2000)
    t0 = time.monotonic()

    def one(n: int, due: float) -> None:
        nonlocal failed
        try:
            status = post(port, leg_request(n, port))
        except OSError:  # refused or reset: mod_json_cdr would retry it, then file it
            status = 0
        latencies.append(time.monotonic() - due)
        if status != 200:
            failed += 1

    for k in range(posts):
        due = t0 + k / rate
        delay = due - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        pool.spawn(one, first + k, due)
        if k % (posts // 10 or 1) == 0:
            samples.append((k, rss_kb(pid)))
    pool.join()
    elapsed = time.monotonic() - t0
    samples.append((posts, rss_kb(pid)))
    latencies.sort()
    return {"posts": posts, "seconds": elapsed, "rate": posts / elapsed, "failed": failed,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "max_ms": 1000 * latencies[-1], "rss_kb": samples}


def closed_loop(port: int, posts: int, concurrency: int, first: int) -> dict[str, object]:
    failed = 0
    counter = iter(range(first, first + posts))

    def worker() -> None:
        nonlocal failed
        for n in counter:
            try:
                ok = post(port, leg_request(n, port)) == 200
            except OSError:
                ok = False
            failed += not ok

    t0 = time.monotonic()
    gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)])
    elapsed = time.monotonic() - t0
    return {"posts": posts, "seconds": elapsed, "rate": posts / elapsed, "failed": failed}


def start_daemon(tmp: Path, url: str, profile: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp / "fsapp.toml"
    config.write_text(textwrap.dedent(f"""
        [server]
        listen = "127.0.0.1:0"
        [storage]
        url = "{url}"
        [sounds]
        dir = "{ROOT / 'sounds'}"
        [entry]
        default = "main"
        [cdr]
        listen = "127.0.0.1:{port}"
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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("fsapp serve did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posts", type=int, default=100_000, help="posts of the open-loop phase")
    p.add_argument("--rate", type=float, default=2000.0, help="posts/s of the open-loop phase")
    p.add_argument("--concurrency", type=int, default=32, help="posts in flight in the closed-loop phase")
    p.add_argument("--max-posts", type=int, default=20_000, help="posts of the closed-loop phase (0: skip it)")
    p.add_argument("--pg", default="", help="a PostgreSQL server's URL: store in a fresh database made there")
    p.add_argument("--profile", default="", help="run the daemon under cProfile, its stats to this file")
    args = p.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, _database(args.pg, Path(tmp)) as url:
        proc, port = start_daemon(Path(tmp), url, os.path.abspath(args.profile) if args.profile else "")
        try:
            warm = closed_loop(port, 2000, 8, 0)  # imports, caches, the first pages of the database
            cpu0, own0 = cpu_seconds(proc.pid), time.process_time()
            steady = open_loop(port, proc.pid, args.posts, args.rate, 2000)
            cpu1, own1 = cpu_seconds(proc.pid), time.process_time()
            peak = closed_loop(port, args.max_posts, args.concurrency, 2000 + args.posts) if args.max_posts else None
            store = open_store(url)
            legs, calls = store.cdr_leg_count(), len(store.list_calls())
            store.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    total = 2000 + args.posts + (args.max_posts or 0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or _cpu()}, "
          f"Python {platform.python_version()}, {'PostgreSQL' if args.pg else 'SQLite'}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) at the start")
    print(f"warm-up: {warm['posts']} posts, {warm['failed']} failed")
    print(f"open loop at {args.rate:.0f}/s: {steady['posts']} posts in {steady['seconds']:.1f} s "
          f"({steady['rate']:.0f}/s), {steady['failed']} failed; latency p50 {steady['p50_ms']:.2f} ms, "
          f"p99 {steady['p99_ms']:.2f} ms, max {steady['max_ms']:.1f} ms")
    print(f"CPU per post in the open loop: daemon {1e6 * (cpu1 - cpu0) / args.posts:.0f} us, "
          f"this client {1e6 * (own1 - own0) / args.posts:.0f} us")
    rss = steady["rss_kb"]
    print("daemon RSS (MiB) by posts: " + ", ".join(f"{k}: {v / 1024:.0f}" for k, v in rss))  # type: ignore[union-attr]
    if peak:
        print(f"closed loop, {args.concurrency} in flight: {peak['posts']} posts in {peak['seconds']:.1f} s "
              f"({peak['rate']:.0f}/s), {peak['failed']} failed")
    print(f"journal: {legs} legs kept ({total} posted), {calls} calls ({total // 2} expected)")
    ok = legs == total and calls == total // 2 and not steady["failed"] and not (peak and peak["failed"])
    return 0 if ok else 1


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
