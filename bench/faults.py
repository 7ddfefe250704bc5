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
- the ledger full as a paid talk ends: whether the talk is charged once room is back;
- SIGTERM whose drain runs out: ``--cut-calls`` (20) billed calls 4 s into a 20 s talk,
  ``drain_seconds = 2``, FreeSWITCH's side not reading: the exit time, each talk charged
  once to the cut and journaled answered, nothing more charged by a restart;
- the socket dropped mid-talk: ``--drop-calls`` (100) billed talks of 12 s, heartbeat 5 s,
  whose socket FreeSWITCH's side closes: charged at once, to the cut, rows answered;
- one uuid, many sessions: ``--uuid-calls`` (200) calls each replayed after it ended, with
  a second connection while live, and with a later session: extra charges (0), refused
  twins, later talks charged and rows continued.

    python bench/faults.py [--kill-calls 100] [--term-calls 500] [--term-hold 10] [--only NAMES] [--json PATH]

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsapp import log as logmod  # noqa: E402
from harness.faults import (  # noqa: E402
    Sweep,
    drain_cut,
    drain_on_sigterm,
    full_journal,
    kill_mid_bridge,
    locked_database,
    refused_charge,
    run_sweep,
    same_uuid,
    socket_drop,
)

SCENARIOS = ("sweep", "sigkill", "sigterm", "disk", "lock", "refused", "cut", "drop", "uuid")


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
    p.add_argument("--cut-calls", type=int, default=20)
    p.add_argument("--drop-calls", type=int, default=100)
    p.add_argument("--uuid-calls", type=int, default=200)
    p.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    only = set(args.only.split(",")) - {""} or set(SCENARIOS)
    if only - set(SCENARIOS):
        p.error(f"--only: unknown scenario {sorted(only - set(SCENARIOS))[0]!r} (known: {', '.join(SCENARIOS)})")
    logmod.configure("error", json=True)

    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    lines: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="fsapp-faults-") as tmp:
        for name in SCENARIOS:
            if name not in only:
                continue
            label, key, run, summary = _scenario(name, args)
            rep, secs = _timed(label, run, Path(tmp) / name)
            figures, problems = _figures(rep)
            out[key] = {**figures, "seconds": round(secs, 2)}
            failed |= bool(problems)
            lines.append(f"{label}: {summary(out[key])}" + (f" -- {len(problems)} problems" if problems else ""))

    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print("\n" + "\n".join(lines), file=sys.stderr)
    return 1 if failed else 0


def _figures(rep: Any) -> tuple[dict[str, Any], list[Any]]:
    """A report's figures as JSON-ready values, and its problems."""
    if isinstance(rep, Sweep):
        problems = [str(p) for p in rep.problems()] + [str(c) for c in rep.crashes]
        return {"walks": len(rep.walks), "cases": rep.cases,
                "apps": sorted({a for r in rep.results.values() for a in r.apps}),
                "kinds": sorted({m.kind for m in rep.cfg.modules.values()}),
                "crashes": len(rep.crashes), "problems": problems}, problems
    figures = dataclasses.asdict(rep)
    figures["problems"] = list(rep.problems)
    return figures, figures["problems"]


def _scenario(name: str, a: argparse.Namespace) -> tuple[str, str, Callable[[Path], Any], Callable[[dict], str]]:
    """(label, JSON key, run(workdir), one-line summary of its figures) of a scenario."""
    table: dict[str, tuple[str, str, Callable[[Path], Any], Callable[[dict], str]]] = {
        "sweep": ("hangup at every step", "hangup_sweep", run_sweep,
                  lambda f: f"{f['cases']} cases over {f['walks']} walks, {len(f['problems'])} broken"),
        "sigkill": (f"SIGKILL with {a.kill_calls} calls mid-bridge", "sigkill",
                    lambda w: kill_mid_bridge(w, a.kill_calls),
                    lambda f: f"{f['reconciled']} reconciled once each ({f['reconciled_rial']:,} rial, talk "
                              f"{f['talk_seconds']} s), second restart {f['second_restart_charges']}"),
        "sigterm": (f"SIGTERM with {a.term_calls} live calls", "sigterm",
                    lambda w: drain_on_sigterm(w, a.term_calls, hold=a.term_hold),
                    lambda f: f"{f['completed']} ended normally, {f['charges']} charged, drained in "
                              f"{f['drain_seconds']:.1f} s, exit {f['exit_code']}"),
        "disk": ("journal table full", "journal_full", full_journal,
                 lambda f: f"{f['routed']} calls routed, {f['journal_failures']} failures logged"),
        "lock": (f"database locked for {a.lock_seconds:g} s", "database_locked",
                 lambda w: locked_database(w, a.lock_seconds),
                 lambda f: f"routed to {f['routed_to']}, event loop stood still {f['longest_stall_seconds']:.2f} s"),
        "refused": ("ledger full as a paid talk ends", "charge_refused", refused_charge,
                    lambda f: f"charges after recovery {f['charges_after_recovery']}"),
        "cut": (f"SIGTERM, drain 2 s, {a.cut_calls} talks 4 s into 20 s, FreeSWITCH not reading", "drain_cut",
                lambda w: drain_cut(w, a.cut_calls, talk_at_sigterm=4, drain=2, talk=20),
                lambda f: f"{f['charged_once']}/{f['calls']} charged once, {f['answered_rows']} answered, talk "
                          f"{f['talk_seconds']} s, exit {f['exit_code']} in {f['exit_seconds']:.1f} s, "
                          f"restart charged {f['restart_charges']}"),
        "drop": (f"socket dropped 12 s into {a.drop_calls} talks, heartbeat 5 s", "socket_drop",
                 lambda w: socket_drop(w, a.drop_calls, talk=12, heartbeat=5),
                 lambda f: f"{f['charged_once']}/{f['calls']} charged once at teardown, {f['answered_rows']} "
                           f"answered, talk {f['talk_seconds']} s"),
        "uuid": (f"one uuid, many sessions, {a.uuid_calls} calls", "same_uuid",
                 lambda w: same_uuid(w, a.uuid_calls),
                 lambda f: f"replays charged {f['replay_charges']} more, {f['live_refused']}/{f['calls']} live "
                           f"twins refused, {f['later_charged']}/{f['calls']} later sessions charged and continued"),
    }
    return table[name]


if __name__ == "__main__":
    raise SystemExit(main())
