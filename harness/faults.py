"""Fault scenarios: a hangup at every step, SIGKILL and SIGTERM mid-bridge, a full or locked database.

``tests/test_faults.py`` runs them small; ``bench/faults.py`` at full scale.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import structlog

from fsapp import billing, customers, flow
from fsapp import config as configmod
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.modules import KINDS
from fsapp.simulate import wait_idle
from fsapp.store import StorageError, open_store, sqlite_path
from harness import ROOT, SOUNDS, Daemon

SAMPLE_CUSTOMERS = configmod.PACKAGE_DIR / "sample" / "customers.csv"


TALK = 65  # seconds of every answered talk: two started one-minute intervals


BRIDGE_APPS = ("bridge", "callcenter")


def _toml_key(key: str) -> str:
    return key if flow.CODE_RE.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_text(data: Mapping[str, Any]) -> str:
    """TOML for a parsed config: tables, then arrays of tables."""
    lines: list[str] = []
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    for name, items in data.items():
        if isinstance(items, list):
            for item in items:
                lines.append(f"[[{name}]]")
                lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def sample_setup(workdir: Path, **overrides: Mapping[str, Any]) -> Path:
    """The shipped sample config in ``workdir`` (own database, free port, the repo's prompts), directory loaded."""
    data = tomllib.loads(configmod.SAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["server"]["listen"] = "127.0.0.1:0"
    data["sounds"]["dir"] = str(SOUNDS)
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "fsapp.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    cfg = configmod.load(path)
    store = open_store(cfg.storage_url)
    try:
        text = SAMPLE_CUSTOMERS.read_text(encoding="utf-8")
        customers.save_rows(store, customers.parse_csv(text, source=str(SAMPLE_CUSTOMERS)))
    finally:
        store.close()
    return path


def db_path(cfg: configmod.Config) -> Path:
    return sqlite_path(cfg.storage_url)


def sample_customer(cfg: configmod.Config) -> dict[str, str]:
    """The first sample customer who can walk every module onward: PIN, phone, a debt the paid lines allow."""
    bills = [m for m in cfg.modules.values() if m.kind == "telephone_bill"]
    roles = {m["role"] for m in cfg.modules.values() if m.kind == "case_expert"}
    limit = min((m["max_debt"] for m in bills), default=None)
    with SAMPLE_CUSTOMERS.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            debt = int(row["debt"] or 0)
            if (row["pin"] and row["phones"] and row["mobile"] and debt > 0 and (limit is None or debt <= limit)
                    and all(row[r] for r in roles)):
                return row
    raise AssertionError("no sample customer can walk every module onward (PIN, phone, debt, responsible)")


@dataclass(frozen=True)
class Leg:
    """One bridge or callcenter attempt of a walk."""

    plan: str  # the stand-in's bridge plan
    where: str  # the module that rang it; "" for a plain ext:/queue: destination
    billed: bool  # a telephone_bill module meters it

    @property
    def answers(self) -> bool:
        return self.plan.startswith("answer")


@dataclass(frozen=True)
class Route:
    """One way out of one module: the caller's input, the bridges it makes, where it goes."""

    label: str
    dtmf: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()
    dest: str = ""


@dataclass(frozen=True)
class Walk:
    """One way through the config, from the entry module to the end of the call."""

    name: str
    caller: str
    dtmf: tuple[str, ...]
    legs: tuple[Leg, ...]
    modules: tuple[str, ...]
    end: str  # the last destination's kind: hangup, transfer, ext, queue

    def script(self, *, legs: tuple[Leg, ...] | None = None, hangup_after: int | None = None) -> Script:
        return Script(caller=self.caller, dtmf=list(self.dtmf), bridges=[leg.plan for leg in (legs or self.legs)],
                      hangup_after=hangup_after)


ANSWER = f"answer:{TALK}"


Customer = dict[str, str]


def _menu(m: configmod.ModuleConfig, c: Customer) -> list[Route]:
    out = [Route(f"={digits}", (digits,), (), dest) for digits, dest in m["options"].items()]
    return out + [Route("=no-input", ("",) * m["max_attempts"], (), m.error)]


def _club(m: configmod.ModuleConfig, c: Customer) -> list[Route]:
    prefix = m["customer_number_prefix"]
    number = c["number"][len(prefix):] if prefix and c["number"].startswith(prefix) else c["number"]
    typed = {"phone": (), "customer_number": (number,), "pin": (number, c["pin"])}[m["auth"]]
    return [Route(f"={m['auth']}", typed, (), m.next)]


def _balance(m: configmod.ModuleConfig, c: Customer) -> list[Route]:
    typed = (c["mobile"], m["confirm_digit"]) if m["require_mobile"] else ()
    return [Route("=debt", typed, (), m.next)]


def _bill(m: configmod.ModuleConfig, c: Customer) -> list[Route]:
    targets = list(m["targets"])
    out = [Route(f"={t}", (), ("no-answer",) * i + (ANSWER,), m.next) for i, t in enumerate(targets)]
    return out + [Route("=nobody", (), ("no-answer",) * len(targets), m.error)]


def _expert(m: configmod.ModuleConfig, c: Customer) -> list[Route]:
    return [Route("=answer", (), (ANSWER,), m.next), Route("=no-answer", (), ("no-answer",), m.error)]


# Per module kind: the ways a caller who does what is asked goes through it.
ROUTES: dict[str, Callable[[configmod.ModuleConfig, Customer], list[Route]]] = {
    "menu": _menu,
    "customer_club": _club,
    "balance": _balance,
    "telephone_bill": _bill,
    "case_expert": _expert,
}


def derive_walks(cfg: configmod.Config, customer: Customer) -> list[Walk]:
    """Every way through the config from ``[entry] default``, each module visited at most once per walk."""
    walks: list[Walk] = []
    caller = customer["phones"].split(";")[0]

    def go(dest_text: str, name: str, dtmf: tuple[str, ...], legs: tuple[Leg, ...], modules: tuple[str, ...]) -> None:
        dest = flow.parse_dest(dest_text)
        if dest.kind == "module":
            m = cfg.modules[dest.value]
            if m.code in modules:
                return  # a loop back: covered by the walk that got here first
            if not m.enabled:
                go(m.error, f"{name}>{m.code}", dtmf, legs, (*modules, m.code))
                return
            if m.kind not in ROUTES:
                raise AssertionError(f"module kind {m.kind!r} has no entry in ROUTES: say how a caller goes through it")
            for r in ROUTES[m.kind](m, customer):
                new = tuple(Leg(p, m.code, m.kind == "telephone_bill") for p in r.plans)
                go(r.dest, f"{name}>{m.code}{r.label}", dtmf + r.dtmf, legs + new, (*modules, m.code))
            return
        if dest.kind in ("ext", "queue"):
            legs += (Leg(ANSWER, "", False),)
        walks.append(Walk(f"{name.lstrip('>')}>{dest}", caller, dtmf, legs, modules, dest.kind))

    go(cfg.entry.default, "", (), (), ())
    return walks


def reachable_modules(cfg: configmod.Config) -> set[str]:
    seen: set[str] = set()
    todo = [cfg.entry.default]
    while todo:
        code = todo.pop()
        if code in seen or code not in cfg.modules:
            continue
        seen.add(code)
        m = cfg.modules[code]
        for _key, text in m.destinations(KINDS[m.kind].schema):
            if text and flow.parse_dest(text).kind == "module":
                todo.append(text)
    return seen


def apps_the_config_needs(cfg: configmod.Config) -> set[str]:
    """The ESL apps the config's destinations and modules must make the daemon send."""
    apps = {"answer"}
    for m in cfg.modules.values():
        kind = KINDS[m.kind]
        if any(opt.role == "prompt" and m[key] for key, opt in kind.schema.items()):
            apps.add("playback")
        if m.kind == "menu" or (m.kind == "customer_club" and m["auth"] != "phone"):
            apps.add("play_and_get_digits")
        if m.kind == "case_expert":
            apps |= {"multiset", "bridge"}
        for _key, text in m.destinations(kind.schema):
            dest = flow.parse_dest(text) if text else None
            if dest is not None and dest.kind in ("ext", "queue", "transfer"):
                apps.add({"ext": "bridge", "queue": "callcenter", "transfer": "transfer"}[dest.kind])
                if dest.kind != "transfer":
                    apps.add("multiset")
    return apps


@dataclass
class Outcome:
    """What one call left behind."""

    fake: FakeFreeSWITCH
    row: dict[str, Any] | None
    charges: list[dict[str, Any]]
    open_meters: int
    debt_added: int
    live_after: int


def customer_debt(store: Any, customer_id: str) -> int:
    row = store.db.one("SELECT debt FROM customers WHERE id = ?", (customer_id,))
    return int(row["debt"]) if row else 0


def play(d: Daemon, walk: Walk, customer: Customer, *, legs: tuple[Leg, ...] | None = None,
         hangup_after: int | None = None, reset: bool = True) -> Outcome:
    """One call of ``walk`` (the customer's debt reset first, if ``reset``), played to its end."""
    store = d.store
    if reset:
        store.db.execute("UPDATE customers SET debt = ? WHERE id = ?", (int(customer["debt"]), customer["id"]))
    fake = run_call(d.address, walk.script(legs=legs, hangup_after=hangup_after))
    wait_idle(d.server, timeout=10)
    charges = store.db.query("SELECT * FROM charges WHERE call_uuid = ?", (fake.uuid,))
    meters = store.db.query("SELECT state FROM meters WHERE call_uuid = ?", (fake.uuid,))
    return Outcome(fake, store.get_call(fake.uuid), charges, sum(m["state"] == "open" for m in meters),
                   customer_debt(store, customer["id"]) - int(customer["debt"]), len(d.server.calls))


def executed_apps(fake: FakeFreeSWITCH) -> list[str]:
    """The apps the daemon ran, in order (a call-command hangup is not an app)."""
    return [s.app for s in fake.steps if s.result != "call-command"]


@dataclass(frozen=True)
class Problem:
    walk: str
    hangup_at: int  # 0: the walk itself, no hangup
    app: str
    ringing: bool
    what: str  # status | talk | charge | meter | journal | call | modules
    expected: Any
    got: Any

    def __str__(self) -> str:
        at = "no hangup" if not self.hangup_at else f"hangup during app {self.hangup_at} ({self.app}"
        at += ", ringing)" if self.ringing else (")" if self.hangup_at else "")
        return f"{self.walk} [{at}]: {self.what}: expected {self.expected!r}, got {self.got!r}"


def amount_for(cfg: configmod.Config, module: str, talk: int) -> int:
    m = cfg.modules[module]
    return billing.charge(talk, m["interval_minutes"], m["amount_per_interval"])[1]


def check(cfg: configmod.Config, walk: Walk, out: Outcome, legs: tuple[Leg, ...], happy_apps: list[str] | None,
          hangup_at: int = 0) -> list[Problem]:
    """Every invariant of one finished call; the problems found."""
    apps = executed_apps(out.fake)
    positions = [i for i, a in enumerate(happy_apps or apps) if a in BRIDGE_APPS]
    idx = hangup_at - 1 if hangup_at else len(happy_apps or apps)
    at_leg = positions.index(idx) if hangup_at and idx in positions else None
    app = (happy_apps or apps)[idx] if hangup_at else ""
    ringing = at_leg is not None and not legs[at_leg].answers
    reached = [k for k, p in enumerate(positions) if p < idx or k == at_leg]
    answered = [k for k in reached if legs[k].answers]
    if answered:
        status = "answered"
    elif reached:
        status = "missed"
    elif hangup_at:
        status = "abandoned"
    else:
        status = "transferred" if walk.end == "transfer" else "completed"
    charges = sorted((legs[k].where, amount_for(cfg, legs[k].where, TALK)) for k in answered if legs[k].billed)
    row = out.row

    problems: list[Problem] = []

    def bad(what: str, expected: Any, got: Any) -> None:
        problems.append(Problem(walk.name, hangup_at, app, ringing, what, expected, got))

    fake = out.fake
    if fake.error or not fake.exit_received:
        bad("call", "exit sent by the daemon", fake.error or "socket closed without exit")
    if out.live_after:
        bad("call", "no live call greenlet", out.live_after)
    if hangup_at and apps[-1:] != [app]:
        bad("call", f"hung up during {app}", apps[-1:])
    if row is None:
        bad("journal", "a row", None)
        return problems
    if row["status"] == "active" or not row["ended_at"]:
        bad("journal", "a final status and ended_at", (row["status"], row["ended_at"]))
    if row["status"] != status:
        bad("status", status, row["status"])
    if hangup_at:
        if list(row["modules"]) != list(walk.modules[: len(row["modules"])]):
            bad("modules", f"a prefix of {list(walk.modules)}", row["modules"])
    elif list(row["modules"]) != list(walk.modules):
        bad("modules", list(walk.modules), row["modules"])
    if row["talk_seconds"] != TALK * len(answered):
        bad("talk", TALK * len(answered), row["talk_seconds"])
    got = sorted((c["module"], c["amount"]) for c in out.charges)
    if got != charges or any(c["source"] != "call" or c["talk_seconds"] != TALK for c in out.charges):
        bad("charge", charges, [(c["module"], c["amount"], c["talk_seconds"], c["source"]) for c in out.charges])
    total = sum(a for _m, a in charges)
    if row["charge"] != total or out.debt_added != total:
        bad("charge", f"{total} in the row and the debt", (row["charge"], out.debt_added))
    if out.open_meters:
        bad("meter", "every meter settled", f"{out.open_meters} open")
    return problems


@dataclass
class WalkResult:
    walk: Walk
    apps: list[str]
    cases: int = 0
    apps_hung_up: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)


def sweep_walk(d: Daemon, cfg: configmod.Config, walk: Walk, customer: Customer) -> WalkResult:
    """The walk once as planned, then with the caller hanging up during each app (and in each ringing bridge)."""
    happy = play(d, walk, customer)
    apps = executed_apps(happy.fake)
    res = WalkResult(walk, apps)
    res.problems += check(cfg, walk, happy, walk.legs, None)
    if happy.fake.app_count != len(apps) or sum(a in BRIDGE_APPS for a in apps) != len(walk.legs):
        res.problems.append(Problem(walk.name, 0, "", False, "call", f"{len(walk.legs)} bridges", apps))
        return res
    variants: list[tuple[int, tuple[Leg, ...]]] = [(n, walk.legs) for n in range(1, len(apps) + 1)]
    positions = [i for i, a in enumerate(apps) if a in BRIDGE_APPS]
    for k, pos in enumerate(positions):
        if walk.legs[k].answers:  # the same bridge left ringing, the caller gone before anyone answers
            rung = walk.legs[:k] + (Leg("no-answer", walk.legs[k].where, walk.legs[k].billed),) + walk.legs[k + 1:]
            variants.append((pos + 1, rung))
    for n, legs in variants:
        out = play(d, walk, customer, legs=legs, hangup_after=n)
        res.cases += 1
        res.apps_hung_up.add(apps[n - 1])
        res.problems += check(cfg, walk, out, legs, apps, n)
    return res


@dataclass
class Sweep:
    cfg: configmod.Config
    walks: list[Walk]
    results: dict[str, WalkResult]
    crashes: list[dict[str, Any]]
    seconds: float

    @property
    def cases(self) -> int:
        return sum(r.cases for r in self.results.values())

    def problems(self) -> list[Problem]:
        return [p for r in self.results.values() for p in r.problems]


def run_sweep(workdir: Path) -> Sweep:
    """Every walk of the sample config, with a hangup at every step, against one in-process daemon."""
    cfg = configmod.load(sample_setup(workdir))
    customer = sample_customer(cfg)
    walks = derive_walks(cfg, customer)
    t0 = time.monotonic()
    d = Daemon(cfg)
    try:
        with structlog.testing.capture_logs() as logs:
            results = {w.name: sweep_walk(d, cfg, w, customer) for w in walks}
    finally:
        d.stop()
    crashes = [e for e in logs if e["event"] in ("call_crashed", "call_socket_failed", "call_setup_failed")]
    return Sweep(cfg, walks, results, crashes, time.monotonic() - t0)


SAMPLE = configmod.load(None, check_files=False)


SAMPLE_WALKS = derive_walks(SAMPLE, sample_customer(SAMPLE))


def _walk(cfg: configmod.Config, customer: Customer, *, kind: str) -> Walk:
    """The first walk whose first leg a ``kind`` module rings, and that leg answers."""
    for w in derive_walks(cfg, customer):
        first = w.legs[0] if w.legs else None
        if first and first.answers and first.where and cfg.modules[first.where].kind == kind:
            return w
    raise AssertionError(f"no walk through a {kind} module")


@dataclass
class Served:
    """``fsapp serve`` in a child process; its log lines are collected as they come."""

    proc: subprocess.Popen[str]
    address: tuple[str, int]
    lines: list[str]
    started: float = field(default_factory=time.monotonic)

    def events(self, name: str) -> list[dict[str, Any]]:
        tag = f'"event":"{name}"'
        return [json.loads(line) for line in list(self.lines) if tag in line]

    def stop(self, timeout: float = 60) -> int:
        # serve_forever logs server_started before it installs its SIGTERM handler: a
        # SIGTERM in between ends the process with the default action (exit -15).
        gevent.sleep(max(0.0, self.started + 0.5 - time.monotonic()))
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def serve(path: Path) -> Served:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FSAPP_LOG_LEVEL": "info"}
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(path)], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    lines: list[str] = []
    port = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if '"server_started"' in line:
            port = int(json.loads(line)["listen"].rsplit(":", 1)[1])
            break
    if not port:
        proc.kill()
        proc.wait()
        raise AssertionError("the daemon did not start:\n" + "".join(lines[-20:]))

    def drain() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return Served(proc, ("127.0.0.1", port), lines)


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Read the daemon's database from outside it."""
    conn = sqlite3.connect(db, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        gevent.sleep(step)
    return cond()


def billed_walk(cfg: configmod.Config) -> tuple[Walk, Customer]:
    customer = sample_customer(cfg)
    return _walk(cfg, customer, kind="telephone_bill"), customer


def _bridged(db: Path) -> int:
    return query(db, "SELECT COUNT(*) AS n FROM meters WHERE bridge_us > 0")[0]["n"]


@dataclass
class KillReport:
    calls: int
    bridged_at_kill: int = 0
    held_seconds_at_kill: float = 0.0
    reconciled: int = 0
    reconciled_rial: int = 0
    talk_seconds: list[int] = field(default_factory=list)
    second_restart_charges: int = 0
    restart_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def kill_mid_bridge(workdir: Path, calls: int, *, held: float = 2.5) -> KillReport:
    """SIGKILL with ``calls`` billed calls in held bridges, restart twice: every meter charged once, from its beat."""
    path = sample_setup(workdir, billing={"meter_heartbeat_seconds": 1})
    cfg = configmod.load(path)
    db = db_path(cfg)
    walk, customer = billed_walk(cfg)
    rep = KillReport(calls)
    served = serve(path)
    fakes = [gevent.spawn(FakeFreeSWITCH(served.address, Script(caller=walk.caller, dtmf=list(walk.dtmf),
                                                                 bridges=["answer:600:hold"])).run)
             for _ in range(calls)]
    try:
        if not wait_until(lambda: _bridged(db) >= calls, timeout=60 + calls / 5):
            rep.problems.append(f"only {_bridged(db)} of {calls} calls bridged")
        gevent.sleep(held)
        rep.bridged_at_kill = _bridged(db)
        rep.held_seconds_at_kill = held
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()
    finally:
        served.kill()
        gevent.killall(fakes, block=True, timeout=10)
    meters = {m["call_uuid"]: m for m in query(db, "SELECT * FROM meters")}
    if len(meters) != calls or any(m["state"] != "open" for m in meters.values()):
        states = sorted({m["state"] for m in meters.values()})
        rep.problems.append(f"after the kill: {len(meters)} meters, states {states}")
    expected = {u: billing.talk_seconds(m["bridge_us"], m["seen_us"]) for u, m in meters.items()}
    if any(m["seen_us"] <= m["bridge_us"] for m in meters.values()):
        rep.problems.append("a meter with no heartbeat after its bridge")
    if query(db, "SELECT COUNT(*) AS n FROM charges")[0]["n"]:
        rep.problems.append("charges before the restart")

    t0 = time.monotonic()
    again = serve(path)
    rep.restart_seconds = time.monotonic() - t0
    try:
        charges = query(db, "SELECT * FROM charges")
        rows = {r["uuid"]: r for r in query(db, "SELECT * FROM calls")}
    finally:
        code = again.stop()
    if code != 0:
        rep.problems.append(f"restarted daemon exited {code}")
    rep.reconciled = len(charges)
    rep.reconciled_rial = sum(c["amount"] for c in charges)
    rep.talk_seconds = sorted({c["talk_seconds"] for c in charges})
    by_call = {c["call_uuid"]: c for c in charges}
    if len(charges) != calls or set(by_call) != set(meters):
        rep.problems.append(f"{len(charges)} charges for {len(by_call)} of {calls} calls")
    for uuid, c in by_call.items():
        want = amount_for(cfg, c["module"], expected.get(uuid, -1))
        if c["source"] != "reconciled" or c["talk_seconds"] != expected.get(uuid) or c["amount"] != want:
            rep.problems.append(f"{uuid}: {c['source']} {c['talk_seconds']} s {c['amount']} rial, "
                                f"expected reconciled {expected.get(uuid)} s {want} rial")
        row = rows.get(uuid)
        if row is None or row["status"] != "failed" or row["charge"] != c["amount"]:
            rep.problems.append(f"{uuid}: journal {row and (row['status'], row['charge'])}")
    if len(again.events("meter_reconciled")) != calls:
        rep.problems.append(f"{len(again.events('meter_reconciled'))} meter_reconciled lines")
    debt = query(db, "SELECT debt FROM customers WHERE id = ?", (customer["id"],))[0]["debt"]
    if debt != int(customer["debt"]) + rep.reconciled_rial:
        rep.problems.append(f"debt {debt}, expected {int(customer['debt']) + rep.reconciled_rial}")
    if query(db, "SELECT COUNT(*) AS n FROM meters WHERE state = 'open'")[0]["n"]:
        rep.problems.append("meters still open after the restart")

    third = serve(path)
    try:
        rep.second_restart_charges = query(db, "SELECT COUNT(*) AS n FROM charges")[0]["n"] - len(charges)
    finally:
        code = third.stop()
    if rep.second_restart_charges or code != 0:
        rep.problems.append(f"second restart: {rep.second_restart_charges} new charges, exit {code}")
    return rep


@dataclass
class DrainReport:
    calls: int
    hold_seconds: float
    live_at_sigterm: int = 0
    exit_code: int | None = None
    drain_seconds: float = 0.0
    completed: int = 0
    answered_rows: int = 0
    charges: int = 0
    problems: list[str] = field(default_factory=list)


def drain_on_sigterm(workdir: Path, calls: int, *, hold: float) -> DrainReport:
    """SIGTERM with ``calls`` billed calls held in bridges: each ends normally, is charged once, exit 0."""
    path = sample_setup(workdir, server={"drain_seconds": 60 + hold})
    cfg = configmod.load(path)
    db = db_path(cfg)
    walk, customer = billed_walk(cfg)
    rep = DrainReport(calls, hold)
    served = serve(path)
    script = Script(caller=walk.caller, dtmf=list(walk.dtmf), bridges=[f"answer:{hold:g}:hold"])
    fakes = [gevent.spawn(FakeFreeSWITCH(served.address, script, io_timeout=hold + 60).run) for _ in range(calls)]
    try:
        if not wait_until(lambda: _bridged(db) >= calls, timeout=60 + calls / 5, step=0.05):
            rep.problems.append(f"only {_bridged(db)} of {calls} calls bridged")
        done = query(db, "SELECT COUNT(*) AS n FROM calls WHERE status != 'active'")[0]["n"]
        rep.live_at_sigterm = calls - done
        t0 = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        gevent.joinall(fakes, timeout=hold + 60)
        while served.proc.poll() is None and time.monotonic() - t0 < hold + 90:
            gevent.sleep(0.05)
        rep.drain_seconds = time.monotonic() - t0
        rep.exit_code = served.proc.poll()
    finally:
        served.kill()
        gevent.killall(fakes, timeout=5)
    results = [g.value for g in fakes]
    rep.completed = sum(1 for f in results if f is not None and f.exit_received and not f.error
                        and f.steps and f.steps[-1].app == "hangup")
    rows = query(db, "SELECT status, charge FROM calls")
    rep.answered_rows = sum(r["status"] == "answered" for r in rows)
    charges = query(db, "SELECT * FROM charges")
    rep.charges = len(charges)
    want = amount_for(cfg, walk.legs[0].where, int(hold))
    if rep.live_at_sigterm != calls:
        rep.problems.append(f"{calls - rep.live_at_sigterm} calls ended before SIGTERM: raise the hold")
    if rep.exit_code != 0:
        rep.problems.append(f"exit code {rep.exit_code}")
    if rep.completed != calls:
        rep.problems.append(f"{rep.completed} of {calls} calls ended with hangup and exit")
    if len(rows) != calls or rep.answered_rows != calls:
        rep.problems.append(f"{rep.answered_rows} answered of {len(rows)} rows")
    if len(charges) != calls or any(c["source"] != "call" or c["amount"] != want for c in charges):
        rep.problems.append(f"{len(charges)} charges, amounts {sorted({c['amount'] for c in charges})}, want {want}")
    if query(db, "SELECT COUNT(*) AS n FROM meters WHERE state = 'open'")[0]["n"]:
        rep.problems.append("open meters after the drain")
    if served.events("server_drain_timeout"):
        rep.problems.append("drain timed out")
    try:
        socket.create_connection(served.address, timeout=1).close()
        rep.problems.append("still accepting after exit")
    except OSError:
        pass
    return rep


def fill_table(store: Any, table: str, row: Callable[[int], dict[str, Any]]) -> int:
    """Cap the database at its current size, then add ``row(i)`` to ``table`` until it is full; rows added."""
    conn = store.db.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()
    for i in range(100_000):
        r = row(i)
        try:
            store.db.execute(f"INSERT INTO {table} ({', '.join(r)}) VALUES ({', '.join('?' * len(r))})",
                             list(r.values()))
        except StorageError as exc:
            assert "full" in str(exc), exc
            return i
    raise AssertionError(f"{table} never filled up")


def unfill(store: Any, table: str, column: str) -> None:
    store.db.conn.execute("PRAGMA max_page_count = 2147483646").fetchone()
    store.db.execute(f"DELETE FROM {table} WHERE {column} LIKE 'filler-%'")


def _filler_call(i: int) -> dict[str, Any]:
    # The smallest journal row: every index entry it makes is no bigger than a real call's.
    return {"uuid": f"filler-{i:029d}", "started_at": "2000-01-01T00:00:00", "status": "active"}


def _filler_charge(i: int) -> dict[str, Any]:
    return {"call_uuid": f"filler-{i:029d}", "module": "x", "customer_id": "x", "talk_seconds": 0, "units": 0,
            "amount": 0, "created_at": ""}


@dataclass
class DiskReport:
    filler_rows: int = 0
    routed: int = 0
    journal_failures: int = 0
    flushed_after_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def full_journal(workdir: Path) -> DiskReport:
    """The journal's table cannot grow: calls are routed and charged, the failure logged, the rows kept and written."""
    cfg = configmod.load(sample_setup(workdir, billing={"meter_heartbeat_seconds": 1}))
    customer = sample_customer(cfg)
    paid = _walk(cfg, customer, kind="telephone_bill")
    expert = _walk(cfg, customer, kind="case_expert")
    rep = DiskReport()
    d = Daemon(cfg)
    try:
        with structlog.testing.capture_logs() as logs:
            before = play(d, paid, customer)
            rep.filler_rows = fill_table(d.store, "calls", _filler_call)
            during = [play(d, w, customer) for w in (expert, paid)]
            unfill(d.store, "calls", "uuid")
            after = play(d, expert, customer)
            t0 = time.monotonic()
            flushed = wait_until(lambda: all(d.store.get_call(o.fake.uuid) for o in during), timeout=10)
            rep.flushed_after_seconds = time.monotonic() - t0
            rows = {o.fake.uuid: d.store.get_call(o.fake.uuid) for o in (before, *during, after)}
    finally:
        d.stop()
    failed = [e for e in logs if e["event"] == "journal_write_failed"]
    rep.journal_failures = len(failed)
    if len(failed) != 2 * len(during) or any("full" not in e["reason"] for e in failed):
        rep.problems.append(f"journal_write_failed: {[e.get('reason') for e in failed]}")
    for o, w in zip(during, (expert, paid), strict=True):
        if executed_apps(o.fake)[-1:] != ["bridge"] or not o.fake.exit_received:
            rep.problems.append(f"{w.name}: not routed to its bridge: {executed_apps(o.fake)}")
        else:
            rep.routed += 1
        if o.row is not None:
            rep.problems.append(f"{w.name}: journaled although the table was full")
    want = amount_for(cfg, paid.legs[0].where, TALK)
    if [c["amount"] for c in during[1].charges] != [want]:
        rep.problems.append(f"paid call during the fault charged {during[1].charges}")
    if after.row is None or after.row["status"] != "answered":
        rep.problems.append(f"the call after recovery: {after.row}")
    if not flushed:
        rep.problems.append("kept rows not written after recovery")
    for o, w in zip(during, (expert, paid), strict=True):
        row = rows[o.fake.uuid]
        if row is None or row["status"] != "answered" or row["modules"] != list(w.modules) or not row["ended_at"]:
            rep.problems.append(f"{w.name}: kept row {row}")
    if rows[before.fake.uuid] != before.row:
        rep.problems.append("the row written before the fault changed")
    if rows[during[1].fake.uuid] and rows[during[1].fake.uuid]["charge"] != want:
        rep.problems.append(f"kept row of the paid call has charge {rows[during[1].fake.uuid]['charge']}")
    return rep


@dataclass
class LockReport:
    hold_seconds: float
    routed_to: str = ""
    longest_stall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def locked_database(workdir: Path, hold: float = 4.0) -> LockReport:
    """Another connection holds the database's write lock for ``hold`` s while a call comes in."""
    fallback = "queue:support"
    cfg = configmod.load(sample_setup(workdir, entry={"on_storage_failure": fallback},
                                      billing={"meter_heartbeat_seconds": 1}))
    customer = sample_customer(cfg)
    paid = _walk(cfg, customer, kind="telephone_bill")
    rep = LockReport(hold)
    gaps: list[float] = []

    def ticker() -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    held = threading.Event()

    def locker() -> None:
        conn = sqlite3.connect(db_path(cfg), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(hold)
        conn.execute("COMMIT")
        conn.close()

    d = Daemon(cfg)
    tick = gevent.spawn(ticker)
    try:
        with structlog.testing.capture_logs() as logs:
            before = play(d, paid, customer)
            thread = threading.Thread(target=locker, daemon=True)
            thread.start()
            held.wait(5)
            during = play(d, paid, customer, reset=False)
            thread.join(hold + 5)
            after = play(d, paid, customer)
            wait_until(lambda: d.store.get_call(during.fake.uuid) is not None, timeout=5)
            rows = {o.fake.uuid: d.store.get_call(o.fake.uuid) for o in (before, during, after)}
            charges = d.store.charges()
    finally:
        tick.kill()
        d.stop()
    rep.longest_stall_seconds = max(gaps, default=0.0)
    failed = [e for e in logs if e["event"] == "journal_write_failed"]
    if not failed or "locked" not in failed[0]["reason"]:
        rep.problems.append(f"journal_write_failed: {[e.get('reason') for e in failed]}")
    steps = executed_apps(during.fake)
    row = rows[during.fake.uuid]
    rep.routed_to = row["final_destination"] if row else ""
    if "callcenter" not in steps or not during.fake.exit_received:
        rep.problems.append(f"the call during the lock was not routed to {fallback}: {steps}")
    if row is None or row["final_destination"] != fallback or row["status"] != "answered":
        rep.problems.append(f"the call during the lock: row {row}")
    if rows[before.fake.uuid] != before.row:
        rep.problems.append("the row written before the lock changed")
    want = amount_for(cfg, paid.legs[0].where, TALK)
    if sorted((c["call_uuid"], c["amount"]) for c in charges) != sorted(
            [(before.fake.uuid, want), (after.fake.uuid, want)]):
        rep.problems.append(f"charges {[(c['call_uuid'], c['amount']) for c in charges]}")
    if after.row is None or after.row["status"] != "answered" or after.row["modules"] != list(paid.modules):
        rep.problems.append(f"the call after the lock: {after.row}")
    return rep


@dataclass
class RefusedReport:
    apps_with_room: list[str] = field(default_factory=list)
    apps_when_refused: list[str] = field(default_factory=list)
    charges_after_recovery: list[int] = field(default_factory=list)
    open_meters_after_recovery: int = 0
    expected_amount: int = 0

    @property
    def problems(self) -> list[str]:
        out = []
        if self.apps_when_refused != self.apps_with_room:
            out.append(f"the caller was sent on to {self.apps_when_refused[len(self.apps_with_room):]}")
        if self.charges_after_recovery != [self.expected_amount]:
            out.append(f"charges after recovery {self.charges_after_recovery}, expected [{self.expected_amount}]")
        if self.open_meters_after_recovery:
            out.append(f"{self.open_meters_after_recovery} meter left open")
        return out


def refused_charge(workdir: Path, *, wait: float = 5.0) -> RefusedReport:
    """The ledger cannot grow as a paid talk ends; then it can again: is the talk charged, once, without a restart?"""
    cfg = configmod.load(sample_setup(workdir, billing={"meter_heartbeat_seconds": 1}))
    customer = sample_customer(cfg)
    paid = _walk(cfg, customer, kind="telephone_bill")
    rep = RefusedReport(expected_amount=amount_for(cfg, paid.legs[0].where, TALK))
    d = Daemon(cfg)
    try:
        room = play(d, paid, customer)
        fill_table(d.store, "charges", _filler_charge)
        full = play(d, paid, customer)
        unfill(d.store, "charges", "call_uuid")
        uuid = full.fake.uuid
        wait_until(lambda: bool(d.store.db.query("SELECT 1 FROM charges WHERE call_uuid = ?", (uuid,))), wait)
        rep.charges_after_recovery = [c["amount"] for c in d.store.db.query(
            "SELECT amount FROM charges WHERE call_uuid = ?", (uuid,))]
        rep.open_meters_after_recovery = len(d.store.db.query(
            "SELECT 1 FROM meters WHERE call_uuid = ? AND state = 'open'", (uuid,)))
    finally:
        d.stop()
    rep.apps_with_room, rep.apps_when_refused = executed_apps(room.fake), executed_apps(full.fake)
    return rep
