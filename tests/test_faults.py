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

import gevent
import pytest

from fsapp import config as configmod
from fsapp.modules import KINDS
from harness.faults import (
    ROUTES,
    SAMPLE_WALKS,
    Sweep,
    _walk,
    apps_the_config_needs,
    drain_cut,
    drain_on_sigterm,
    executed_apps,
    full_journal,
    kill_mid_bridge,
    locked_database,
    play,
    reachable_modules,
    refused_charge,
    run_sweep,
    same_uuid,
    sample_customer,
    sample_setup,
    socket_drop,
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


def test_sigterm_drain_that_runs_out_cuts_settles_and_exits(tmp_path: Path) -> None:
    """SIGTERM, drain_seconds 2, 4 billed calls 4 s into a 20 s talk, FreeSWITCH's side not reading:
    the process exits within seconds (it used to hang for good), each talk charged once, to the cut, answered."""
    rep = drain_cut(tmp_path, 4, talk_at_sigterm=4, drain=2, talk=20)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.exit_code == 0 and rep.exit_seconds < 2 + 8  # the drain, then the cut's fixed bound (3 s)
    assert rep.charged_once == rep.answered_rows == 4 and rep.restart_charges == 0
    assert min(rep.talk_seconds) >= 5 and max(rep.talk_seconds) <= 4 + 2 + 6


def test_socket_dropped_mid_talk_is_charged_at_once_and_answered(tmp_path: Path) -> None:
    """FreeSWITCH's side closes the socket 4 s into a billed talk (heartbeat 1 s): no restart needed,
    the call's teardown charges the talk to the cut, the row says answered with that talk, no meter open."""
    rep = socket_drop(tmp_path, 2, talk=4, heartbeat=1)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.charged_once == rep.answered_rows == 2
    assert rep.talk_seconds and min(rep.talk_seconds) >= 3


def test_one_uuid_many_sessions_charged_once_per_bridge_one_row(tmp_path: Path) -> None:
    """3 calls each replayed byte for byte after it ended, 3 with a second connection while live, 3 with
    a later session (a second socket line): replays charge nothing, twins are refused, later sessions'
    talks are charged and their rows go on (modules appended, talk added, started_at kept)."""
    rep = same_uuid(tmp_path, 3)
    assert not rep.problems, "\n".join(rep.problems)
    assert rep.replay_charges == 0 and rep.live_refused == rep.refused_logged == 3 and rep.live_charges == [3, 3, 3]
    assert rep.later_charged == 3


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


def test_own_meter_left_open_by_a_dropped_call_is_reconciled_by_its_daemon(tmp_path: Path) -> None:
    """A meter of this daemon whose call is no longer live (the call dropped before it settled) is charged
    once by the daemon's periodic reconcile, from its last stamp; a live call's meter is left alone."""
    import time

    cfg = configmod.load(sample_setup(tmp_path, billing={"meter_heartbeat_seconds": 1}))
    customer = sample_customer(cfg)
    d = Daemon(cfg)
    try:
        bridge = int(time.time() * 1e6) - 30_000_000
        base = {"customer_id": customer["id"], "interval_minutes": 1, "amount_per_interval": 50_000,
                "product_code": "P", "bridge_us": bridge, "seen_us": bridge + 20_000_000, "state": "open",
                "daemon": d.app.daemon_id, "opened_at": time.time(), "beat_at": time.time()}
        d.store.meter_open({"call_uuid": "gone", "module": "paid", **base})
        d.store.meter_open({"call_uuid": "live", "module": "paid", **base})
        assert d.app.claim_call("live")
        gevent.sleep(2.5)  # two rounds of the maintenance loop
        charges = [(c["call_uuid"], c["source"], c["talk_seconds"]) for c in d.store.charges()]
        assert charges == [("gone", "reconciled", 20)]
        assert [m["call_uuid"] for m in d.store.open_meters()] == ["live"]
    finally:
        d.stop()
