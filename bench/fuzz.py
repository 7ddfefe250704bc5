"""FreeSWITCH misbehaving on the event socket, at scale: the fuzz cases of harness/fuzz.py
(tests/test_fuzz.py runs them small), many more of them.

Three targets, each fed mutations of the real wire transcripts in the shared ``esl``
directory (bad Content-Length, truncated bodies, huge headers, invalid UTF-8,
%-escapes that decode to nonsense, frames dropped, repeated or out of order, events
for another channel):

- ``parser``: FrameReader, parse_event and every Event accessor on the mutated
  stream, fed in random pieces. Expected: frames, or ``esl.ProtocolError``.
- ``session``: an ``esl.Session`` over a gevent socket pair, playing the
  transcript's commands against a peer that answers with the mutated turns.
  Expected: it ends (``ESLError`` or ``Hangup`` or done) within its deadlines.
- ``daemon``: a live in-process daemon on loopback, one hostile connection per case.
  Expected: no exception escapes a call greenlet, no ``call_crashed`` log line, no
  call left live, and a normal call still works (checked every 500 cases and at the end).

A crash is any other exception; a hang is a case that outlives its bound. Case ``i``
uses ``random.Random(seed + i)``: rerun one with ``--TARGET 1 --seed SEED+i``.

    python bench/fuzz.py                                  # 100,000 parser, 2,000 session, 3,000 daemon
    python bench/fuzz.py --parser 0 --session 0 --daemon 500
    python bench/fuzz.py --atheris 200000                 # coverage-guided parser fuzzing (pip install atheris)
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HANG_SECONDS = 2.0  # a parser case slower than this counts as a hang


class Tally:
    """Cases, crashes, hangs and outcomes of one target."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.cases = 0
        self.crashed: set[int] = set()  # seeds of the cases that crashed
        self.hung: set[int] = set()
        self.slowest = 0.0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, int] = {}  # first seed of each distinct failure
        self.started = time.monotonic()
        self.elapsed = 0.0

    @property
    def crashes(self) -> int:
        return len(self.crashed)

    @property
    def hangs(self) -> int:
        return len(self.hung)

    def failure(self, kind: str, text: str, seed: int) -> None:
        """Count the case ``seed`` as crashed or hung (seed -1: a finding about the whole run, listed only)."""
        if seed >= 0:
            (self.crashed if kind == "crash" else self.hung).add(seed)
        key = f"{kind}: {text.splitlines()[-1][:160] if text else '?'}"
        self.examples.setdefault(key, seed)

    def done(self) -> Tally:
        self.elapsed = time.monotonic() - self.started
        return self

    def line(self) -> str:
        rate = self.cases / self.elapsed if self.elapsed else 0.0
        top = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common(6))
        return (f"{self.target:<8} {self.cases:>8} {self.crashes:>8} {self.hangs:>6} {self.elapsed:>10.1f} "
                f"{rate:>9.0f} {self.slowest * 1000:>9.1f}   {top}")


def progress(t: Tally, total: int) -> None:
    if total >= 20 and t.cases % max(total // 10, 1) == 0:
        print(f"  {t.target}: {t.cases}/{total} cases, {t.crashes} crashes, {t.hangs} hangs, "
              f"{time.monotonic() - t.started:.0f} s", file=sys.stderr, flush=True)


def run_parser(n: int, seed: int) -> Tally:
    from harness import fuzz as fz

    t = Tally("parser")
    for i in range(n):
        data, sizes = fz.parser_input(random.Random(seed + i))  # a failure here is the harness's, not a crash
        started = time.monotonic()
        try:
            frames = fz.parse_stream(data, sizes)
            t.outcomes["frames" if frames else "no frame"] += 1
        except Exception as exc:  # anything but ProtocolError got out of the parser
            t.failure("crash", f"{type(exc).__name__}: {exc}", seed + i)
        took = time.monotonic() - started
        t.slowest = max(t.slowest, took)
        if took > HANG_SECONDS:
            t.failure("hang", f"parser case took {took:.1f} s", seed + i)
        t.cases += 1
        progress(t, n)
    return t.done()


def run_session(n: int, seed: int) -> Tally:
    from harness import fuzz as fz

    t = Tally("session")
    for i in range(n):
        try:
            outcome, took = fz.session_case(random.Random(seed + i))
            t.outcomes[outcome] += 1
            t.slowest = max(t.slowest, took)
        except fz.Hang as exc:
            t.failure("hang", str(exc), seed + i)
        except fz.Crash as exc:
            t.failure("crash", str(exc), seed + i)
        t.cases += 1
        progress(t, n)
    return t.done()


def run_daemon(n: int, seed: int) -> Tally:
    import structlog

    from fsapp import log as logmod
    from fsapp.fakefs import Script, run_call
    from fsapp.simulate import wait_idle
    from harness import fuzz as fz

    t = Tally("daemon")
    saved = structlog.get_config()
    buf = io.StringIO()
    logmod.configure("info", json=True, stream=buf)
    read = 0
    with tempfile.TemporaryDirectory(prefix="fsapp-fuzz-") as tmp:
        d = fz.DaemonUnderFire(fz.fuzz_config(Path(tmp)))

        def check(case_seed: int, escaped: int) -> None:
            """What the case left: escaped exceptions, crash lines, and the log tally."""
            nonlocal read
            for text in d.escaped[escaped:]:
                t.failure("crash", f"escaped the call greenlet: {text}", case_seed)
            lines = buf.getvalue()[read:]
            read += len(lines)
            for line in lines.splitlines():
                event = json.loads(line)
                if event["level"] != "info" or event["event"] in ("call_started", "call_ended"):
                    t.outcomes[event["event"]] += 1
                if event["event"] == "call_crashed":
                    t.failure("crash", f"call_crashed: {event.get('exception', '')}", case_seed)

        def still_serving(case_seed: int) -> None:
            escaped = len(d.escaped)
            fake = run_call(d.address, Script(dtmf=["1"], bridges=["answer:5"]))
            wait_idle(d.server)
            row = d.server.app.store.get_call(fake.uuid)
            if not fake.exit_received or fake.error or row is None or row["status"] != "answered":
                t.failure("crash", f"a normal call failed after the hostile ones: {fake.error or row}", case_seed)
            check(case_seed, escaped)

        try:
            for i in range(n):
                escaped = len(d.escaped)
                started = time.monotonic()
                try:
                    fz.daemon_case(random.Random(seed + i), d, settle=5.0)
                except fz.Hang as exc:
                    t.failure("hang", str(exc), seed + i)
                t.slowest = max(t.slowest, time.monotonic() - started)
                check(seed + i, escaped)
                t.cases += 1
                if t.cases % 500 == 0:
                    still_serving(seed + i)
                progress(t, n)
            still_serving(seed + n)
            rows = d.server.app.store.list_calls()
            t.outcomes["journaled"] = len(rows)
            active = [r["uuid"] for r in rows if r["status"] == "active"]
            if active or len(rows) != t.outcomes["call_started"]:
                t.failure("crash", f"{t.outcomes['call_started']} calls started, {len(rows)} journaled, "
                          f"{len(active)} left active", -1)
        finally:
            d.stop()
            structlog.configure(**saved)
    return t.done()


def run_atheris(n: int) -> None:
    """Coverage-guided: libFuzzer's mutations of the transcript frames, into FrameReader and the event readers."""
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install atheris); skipping the --atheris run", file=sys.stderr)
        raise SystemExit(1) from None
    with atheris.instrument_imports(include=["fsapp.esl"]):
        from fsapp import esl  # noqa: F401 - imported here to be instrumented
    from harness import fuzz as fz

    if not fz.SEEDS:
        print("the FreeSWITCH wire transcripts (shared/esl next to the project) are absent", file=sys.stderr)
        raise SystemExit(2)
    t = Tally("atheris")
    corpus = tempfile.mkdtemp(prefix="fsapp-atheris-")
    for seed in fz.SEEDS:
        for k, frame in enumerate(f for turn in seed.turns for f in turn):
            Path(corpus, f"{seed.name}-{k}").write_bytes(frame[:16384])

    def one_input(data: bytes) -> None:
        started = time.monotonic()
        sizes = [1 + b for b in data[:4]] if data else []
        try:
            frames = fz.parse_stream(data[4:], sizes)
            t.outcomes["frames" if frames else "no frame"] += 1
        except Exception as exc:
            t.failure("crash", f"{type(exc).__name__}: {exc}", t.cases)
        t.slowest = max(t.slowest, time.monotonic() - started)
        t.cases += 1
        if t.cases == n:
            report([t.done()], f"--atheris {n}")
            sys.stdout.flush()
            shutil.rmtree(corpus, ignore_errors=True)
            dictionary.unlink(missing_ok=True)

    words = {*fz.TOKENS, *fz.BAD_LENGTHS, b"Content-Length: ", b"Content-Type: ", b"text/event-plain",
             b"command/reply", b"api/response", b"text/disconnect-notice", b"Event-Name: ", b"Application-UUID: ",
             b"Event-Date-Timestamp: ", b"Reply-Text: +OK", b"\n\n"}
    dictionary = Path(corpus + ".dict")  # libFuzzer's word list: the hostile values of the mutators
    dictionary.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in w) + '"\n'
                                  for w in sorted(words) if 0 < len(w) <= 64))
    atheris.Setup([sys.argv[0], f"-runs={n}", "-max_len=16384", f"-dict={dictionary}",
                   f"-artifact_prefix={corpus}/", corpus], one_input)
    atheris.Fuzz()


def report(tallies: list[Tally], command: str) -> None:
    print(f"python bench/fuzz.py {command}".rstrip())
    print(f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"{'target':<8} {'cases':>8} {'crashes':>8} {'hangs':>6} {'elapsed_s':>10} {'cases/s':>9} "
          f"{'slowest_ms':>9}   outcomes")
    for t in tallies:
        print(t.line())
    print(f"{'total':<8} {sum(t.cases for t in tallies):>8} {sum(t.crashes for t in tallies):>8} "
          f"{sum(t.hangs for t in tallies):>6} {sum(t.elapsed for t in tallies):>10.1f}")
    for t in tallies:
        for key, seed in t.examples.items():
            unit = "run" if t.target == "atheris" else "seed"
            print(f"  {t.target} {key}  ({'whole run' if seed < 0 else f'first at {unit} {seed}'})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parser", type=int, default=100_000, help="parser cases (default 100,000)")
    p.add_argument("--session", type=int, default=2_000, help="Session cases over a socket pair (default 2,000)")
    p.add_argument("--daemon", type=int, default=3_000, help="hostile connections to a live daemon (default 3,000)")
    p.add_argument("--seed", type=int, default=0, help="case i uses random.Random(seed + i)")
    p.add_argument("--atheris", type=int, default=0, metavar="N", help="instead: N coverage-guided parser runs")
    args = p.parse_args(argv)
    if args.atheris:  # first: the parser must be imported under atheris's instrumentation
        run_atheris(args.atheris)
        return 0

    from harness import fuzz as fz

    if not fz.SEEDS:
        print("the FreeSWITCH wire transcripts (shared/esl next to the project) are absent", file=sys.stderr)
        return 2
    tallies = []
    if args.parser:
        tallies.append(run_parser(args.parser, args.seed))
    if args.session:
        tallies.append(run_session(args.session, args.seed))
    if args.daemon:
        tallies.append(run_daemon(args.daemon, args.seed))
    command = " ".join(sys.argv[1:] if argv is None else argv)
    report(tallies, command)
    return 1 if any(t.examples for t in tallies) else 0


if __name__ == "__main__":
    raise SystemExit(main())
