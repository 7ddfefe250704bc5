"""Faults: the caller hanging up at every step, a killed or stopped daemon, a full or locked database.

The hangup cases are generated from the shipped sample config: every way through
its module graph (each menu option, each bridge target, each module's way out) is
walked once to learn which apps the daemon sends, then replayed with the caller
hanging up during each of those apps in turn. A module added to the config is
walked, and its steps hung up on, without touching this file; a new module kind
needs one entry in ``ROUTES``, and the coverage test says so.

The scenarios live in ``harness/faults.py``; ``bench/faults.py`` runs them with the full counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fsapp import config as configmod
from fsapp.modules import KINDS
from harness.faults import (
    ROUTES,
    SAMPLE_WALKS,
    Sweep,
    _walk,
    apps_the_config_needs,
    drain_on_sigterm,
    executed_apps,
    full_journal,
    kill_mid_bridge,
    locked_database,
    play,
    reachable_modules,
    refused_charge,
    run_sweep,
    sample_customer,
    sample_setup,
)
from tests.helpers import Daemon


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return run_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.mark.parametrize("walk", [w.name for w in SAMPLE_WALKS])
def test_hangup_at_every_step_ends_the_call_cleanly(sweep: Sweep, walk: str) -> None:
    """A caller hangup during any app of this walk: greenlet gone, exit sent, row final, charged once or not."""
    res = sweep.results[walk]
    assert res.cases >= len(res.apps)
    assert not res.problems, "\n".join(map(str, res.problems))


def test_hangup_sweep_covers_every_kind_module_and_app(sweep: Sweep, record_property: Callable) -> None:
    """The generated cases reach every module kind, every reachable module and every app the config sends."""
    assert set(ROUTES) == set(KINDS), "a module kind without ROUTES is never walked"
    kinds = {m.kind for m in sweep.cfg.modules.values()}
    walked = {sweep.cfg.modules[c].kind for w in sweep.walks for c in w.modules}
    assert kinds <= walked
    assert reachable_modules(sweep.cfg) <= {c for w in sweep.walks for c in w.modules}
    sent = {a for r in sweep.results.values() for a in r.apps}
    hung_up = {a for r in sweep.results.values() for a in r.apps_hung_up}
    assert apps_the_config_needs(sweep.cfg) <= sent
    assert sent == hung_up
    assert sweep.cases == sum(len(r.apps) + sum(leg.answers for leg in r.walk.legs) for r in sweep.results.values())
    assert not sweep.crashes
    record_property("hangup_cases", sweep.cases)


def test_hangup_in_the_paid_lines_connecting_prompt_leaves_no_open_meter(tmp_path: Path) -> None:
    """A caller gone during the paid line's connecting prompt leaves no open meter (and no charge)."""
    cfg = configmod.load(sample_setup(tmp_path))
    customer = sample_customer(cfg)
    walk = _walk(cfg, customer, kind="telephone_bill")
    d = Daemon(cfg)
    try:
        apps = executed_apps(play(d, walk, customer).fake)
        out = play(d, walk, customer, hangup_after=apps.index("multiset"))  # the app before it: the prompt
    finally:
        d.stop()
    assert executed_apps(out.fake)[-1] == "playback"
    assert out.charges == [] and out.row is not None and out.row["status"] == "abandoned"
    assert out.open_meters == 0


def test_hangup_before_the_bridge_rings_is_abandoned(tmp_path: Path) -> None:
    """A caller gone during the multiset before a bridge was never put through to anyone: abandoned."""
    cfg = configmod.load(sample_setup(tmp_path))
    customer = sample_customer(cfg)
    walk = _walk(cfg, customer, kind="case_expert")
    d = Daemon(cfg)
    try:
        apps = executed_apps(play(d, walk, customer).fake)
        out = play(d, walk, customer, hangup_after=apps.index("multiset") + 1)
    finally:
        d.stop()
    assert executed_apps(out.fake)[-1] == "multiset"
    assert out.row is not None and out.row["status"] == "abandoned"


def test_sigkill_mid_bridge_is_reconciled_exactly_once(tmp_path: Path) -> None:
    """kill -9 with 30 billed calls mid-bridge: the restart charges each once from its last beat, the next none."""
    rep = kill_mid_bridge(tmp_path, 30)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.reconciled == 30 and rep.second_restart_charges == 0
    assert rep.talk_seconds and min(rep.talk_seconds) >= 1


def test_sigterm_drains_live_calls_and_exits_zero(tmp_path: Path) -> None:
    """SIGTERM with 100 live billed calls: every one ends normally, answered and charged once; exit 0."""
    rep = drain_on_sigterm(tmp_path, 100, hold=5)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.exit_code == 0 and rep.completed == rep.charges == 100


def test_full_journal_routes_calls_logs_and_recovers(tmp_path: Path) -> None:
    """A full journal table: calls still bridged and charged, the failure logged, rows written once it frees."""
    rep = full_journal(tmp_path)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.routed == 2 and rep.journal_failures == 4


def test_locked_database_routes_to_on_storage_failure_and_recovers(tmp_path: Path) -> None:
    """A write lock held elsewhere: the call goes to on_storage_failure, nothing committed is lost, then normal."""
    rep = locked_database(tmp_path)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.routed_to == "queue:support"


def test_locked_database_does_not_freeze_the_other_calls(tmp_path: Path) -> None:
    """While another process holds the write lock, the daemon's other greenlets keep running (no stall over 0.5 s)."""
    rep = locked_database(tmp_path, hold=2.0)
    assert rep.longest_stall_seconds < 0.5


def test_charge_refused_by_a_full_database_is_written_once_it_frees(tmp_path: Path) -> None:
    """The ledger full as a paid talk ends: the caller goes on to next; the charge lands once there is room again."""
    rep = refused_charge(tmp_path)
    assert not rep.problems, "\n".join(rep.problems)
