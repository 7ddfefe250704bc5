"""Faults at full scale: the figures for docs/reliability.md.

Runs the scenarios of ``harness/faults.py`` (``tests/test_faults.py`` runs them small)
with the issue's counts:

- a caller hangup at every step: every way through the sample config, hung up during
  each app the daemon sends (and in each bridge while it rings); the cases tried and
  the invariants broken (greenlet left, no exit, row not final, charge lost or doubled);
- SIGKILL with ``--kill-calls`` (100) billed calls mid-bridge, then two restarts: charges
  made by reconciliation (each call exactly once, from its last heartbeat), and by the
  second restart (none);
- SIGTERM with ``--term-calls`` (500) live billed calls held in bridges: how many ended
  normally (hangup, exit, row answered, charged once), the drain time, the exit code;
- the journal's table full: calls routed, failures logged, kept rows written after;
- the database write-locked by another process for ``--lock-seconds``: where the call went,
  and the longest the daemon's event loop stood still;
- the ledger full as a paid talk ends: whether the talk is charged once room is back.

    python bench/faults.py [--kill-calls 100] [--term-calls 500] [--term-hold 10] [--json PATH]

The daemon under SIGKILL/SIGTERM is ``fsapp serve`` in a child process; the others run
in this process. Exit status 1 if any scenario broke an invariant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsapp import log as logmod  # noqa: E402
from harness.faults import (  # noqa: E402
    drain_on_sigterm,
    full_journal,
    kill_mid_bridge,
    locked_database,
    refused_charge,
    run_sweep,
)


def _timed(name: str, fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    print(f"{name} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kill-calls", type=int, default=100)
    p.add_argument("--term-calls", type=int, default=500)
    p.add_argument("--term-hold", type=float, default=10.0, help="seconds each SIGTERM call stays bridged")
    p.add_argument("--lock-seconds", type=float, default=4.0)
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    logmod.configure("error", json=True)

    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="fsapp-faults-") as tmp:
        base = Path(tmp)

        sweep, secs = _timed("hangup at every step", run_sweep, base / "sweep")
        problems = [str(p) for p in sweep.problems()]
        out["hangup_sweep"] = {
            "walks": len(sweep.walks), "cases": sweep.cases,
            "apps": sorted({a for r in sweep.results.values() for a in r.apps}),
            "kinds": sorted({m.kind for m in sweep.cfg.modules.values()}),
            "crashes": len(sweep.crashes), "problems": problems, "seconds": round(secs, 2),
        }
        failed |= bool(problems or sweep.crashes)

        kill, secs = _timed(f"SIGKILL with {args.kill_calls} calls mid-bridge", kill_mid_bridge, base / "kill",
                            args.kill_calls)
        out["sigkill"] = {**dataclasses.asdict(kill), "seconds": round(secs, 2)}
        failed |= bool(kill.problems)

        term, secs = _timed(f"SIGTERM with {args.term_calls} live calls", drain_on_sigterm, base / "term",
                            args.term_calls, hold=args.term_hold)
        out["sigterm"] = {**dataclasses.asdict(term), "seconds": round(secs, 2)}
        failed |= bool(term.problems)

        disk, secs = _timed("journal table full", full_journal, base / "disk")
        out["journal_full"] = {**dataclasses.asdict(disk), "seconds": round(secs, 2)}
        failed |= bool(disk.problems)

        lock, secs = _timed(f"database locked for {args.lock_seconds:g} s", locked_database, base / "lock",
                            args.lock_seconds)
        out["database_locked"] = {**dataclasses.asdict(lock), "seconds": round(secs, 2)}
        failed |= bool(lock.problems)

        refused, secs = _timed("ledger full as a paid talk ends", refused_charge, base / "refused")
        out["charge_refused"] = {**dataclasses.asdict(refused), "problems": refused.problems,
                                 "seconds": round(secs, 2)}
        failed |= bool(refused.problems)

    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    s, k, t = out["hangup_sweep"], out["sigkill"], out["sigterm"]
    print(
        f"\nhangup at every step: {s['cases']} cases over {s['walks']} walks, {len(s['problems'])} broken"
        f"\nSIGKILL, {k['calls']} calls mid-bridge: {k['reconciled']} reconciled once each "
        f"({k['reconciled_rial']:,} rial, talk {k['talk_seconds']} s), second restart {k['second_restart_charges']}"
        f"\nSIGTERM, {t['calls']} live calls: {t['completed']} ended normally, {t['charges']} charged, "
        f"drained in {t['drain_seconds']:.1f} s, exit {t['exit_code']}"
        f"\njournal full: {out['journal_full']['routed']} calls routed, "
        f"{out['journal_full']['journal_failures']} failures logged, problems {out['journal_full']['problems']}"
        f"\ndatabase locked: routed to {out['database_locked']['routed_to']}, event loop stood still "
        f"{out['database_locked']['longest_stall_seconds']:.2f} s"
        f"\nledger full at a talk's end: {out['charge_refused']['problems'] or 'charged once after recovery'}",
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
