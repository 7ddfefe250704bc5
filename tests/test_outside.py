"""Faults found from outside: values the daemon cannot use, imports, journal statuses,
idle peers, storage health and a slow CRM login, each driven through the command line
or the daemon's socket.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsapp import config as configmod
from harness import SOUNDS
from harness.faults import toml_text

Edit = Callable[[dict[str, Any]], None]


def fsapp(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, input=stdin)


def sample_data(tmp_path: Path) -> dict[str, Any]:
    data = tomllib.loads(configmod.SAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["server"]["listen"] = "127.0.0.1:0"
    data["sounds"]["dir"] = str(SOUNDS)
    data["storage"]["url"] = f"sqlite:///{tmp_path / 'fsapp.db'}"
    return data


def module(data: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(m for m in data["modules"] if m["kind"] == kind)


def setting(section: str, key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data.setdefault(section, {})[key] = value

    return edit


def module_setting(kind: str, key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        module(data, kind)[key] = value

    return edit


# ---------------------------------------------------------------- 5: values check accepts, the daemon cannot use

UNUSABLE: list[tuple[str, Edit, str]] = [
    ("max_calls", setting("server", "max_calls", 2_000_000_000), "server.max_calls: must be at most"),
    ("backlog", setting("server", "backlog", 99_999_999_999), "server.backlog: must be at most"),
    ("amount", module_setting("telephone_bill", "amount_per_interval", 9223372036854775807),
     "modules[{telephone_bill}].amount_per_interval: must be at most 1000000000000"),
    ("max_debt", module_setting("telephone_bill", "max_debt", 10**20),
     "modules[{telephone_bill}].max_debt: must be at most"),
    ("heartbeat_nan", setting("billing", "meter_heartbeat_seconds", float("nan")),
     "billing.meter_heartbeat_seconds: must be a finite number, not nan"),
    ("drain_inf", setting("server", "drain_seconds", float("inf")), "server.drain_seconds: must be a finite number"),
    ("crm_timeout_inf", setting("crm", "timeout_seconds", float("inf")), "crm.timeout_seconds: must be a finite"),
    ("call_timeout_huge", setting("server", "call_timeout_seconds", 1e300), "server.call_timeout_seconds: must be at"),
    ("enabled_string", module_setting("menu", "enabled", "false"), "modules[{menu}].enabled: must be bool, not str"),
    ("record_string", module_setting("menu", "record", "no"), "modules[{menu}].record: must be bool, not str"),
    ("sounds_space", setting("sounds", "dir", "my sounds"), "sounds.dir: "),
    ("fs_dir_quote", setting("sounds", "fs_dir", "/usr/share/fs's sounds"), "sounds.fs_dir: "),
    ("record_dir_space", setting("journal", "record_dir", "/var/lib/fs/my recordings"), "journal.record_dir: "),
]


@pytest.mark.parametrize(("edit", "message"), [(e, m) for _n, e, m in UNUSABLE], ids=[n for n, _e, _m in UNUSABLE])
def test_check_refuses_values_the_daemon_cannot_use(tmp_path: Path, edit: Edit, message: str) -> None:
    """Each value that crashed serve, a call or its billing (or read a string as true) is refused by check."""
    data = sample_data(tmp_path)
    edit(data)
    (tmp_path / "my sounds").symlink_to(SOUNDS)  # a prompt folder that exists, its name with a space
    path = tmp_path / "fsapp.toml"
    path.write_text(toml_text(data), encoding="utf-8")  # floats as repr: TOML's own nan and inf
    proc = fsapp("check", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = {}
    for i, m in enumerate(data["modules"]):
        first.setdefault(m["kind"], i)
    assert f"{path}:{message.format(**first)}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_a_max_calls_it_cannot_pool(tmp_path: Path) -> None:
    """serve with max_calls = 2000000000 exits 2 naming the key, not an OverflowError traceback."""
    data = sample_data(tmp_path)
    data["server"]["max_calls"] = 2_000_000_000
    path = tmp_path / "fsapp.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    proc = fsapp("serve", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{path}:server.max_calls: must be at most 100000, not 2000000000" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_config_saved_with_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "fsapp.toml"
    path.write_bytes(b"\xef\xbb\xbf" + toml_text(sample_data(tmp_path)).encode("utf-8"))
    proc = fsapp("check", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(f"{path}: ok (")


def test_the_largest_amount_check_allows_is_billed_exactly(tmp_path: Path) -> None:
    """amount_per_interval at its ceiling, 95 s of talk: two units charged to the rial, nothing crashes."""
    from fsapp import billing
    from harness.faults import _walk, play, sample_customer, sample_setup
    from tests.helpers import Daemon

    data = sample_data(tmp_path)
    bill = module(data, "telephone_bill")
    path = sample_setup(tmp_path)
    text = path.read_text(encoding="utf-8")
    text = text.replace(f"amount_per_interval = {bill['amount_per_interval']}",
                        f"amount_per_interval = {billing.MAX_AMOUNT_PER_INTERVAL}")
    path.write_text(text.replace(f"max_debt = {bill['max_debt']}", f"max_debt = {billing.MAX_RIAL}"),
                    encoding="utf-8")
    cfg = configmod.load(path)
    customer = sample_customer(cfg)
    walk = _walk(cfg, customer, kind="telephone_bill")
    d = Daemon(cfg)
    try:
        out = play(d, walk, customer)
    finally:
        d.stop()
    assert out.row is not None and out.row["status"] == "answered"
    assert [c["amount"] for c in out.charges] == [2 * billing.MAX_AMOUNT_PER_INTERVAL]


# ---------------------------------------------------------------- 7: the journal's statuses and rounding


def test_calls_sent_to_overflow_are_journaled_rejected(tmp_path: Path) -> None:
    """max_calls = 1 and one call held: the next 10 go to [entry] overflow, each journaled rejected."""
    import gevent

    from fsapp.fakefs import Script, run_call
    from harness.faults import sample_setup
    from tests.helpers import Daemon

    cfg = configmod.load(sample_setup(tmp_path, server={"max_calls": 1}))
    d = Daemon(cfg)
    try:
        held = gevent.spawn(run_call, d.address, Script(caller="02100000001", dtmf=[""] * 3,
                                                       bridges=["answer:3:hold"]))
        while not d.server.calls:
            gevent.sleep(0.01)
        turned = [gevent.spawn(run_call, d.address, Script(caller=f"0210000010{i}")) for i in range(10)]
        gevent.joinall([*turned, held], timeout=30)
        rows = [d.store.get_call(g.value.uuid) for g in turned]
        first = d.store.get_call(held.value.uuid)
    finally:
        d.stop()
    assert [r["status"] for r in rows if r] == ["rejected"] * 10
    assert all(r["final_destination"] == cfg.entry.overflow for r in rows if r)
    assert first is not None and first["status"] != "rejected"
    proc = fsapp("calls", "-c", cfg.file, "--status", "rejected", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.count('"status": "rejected"') == 10


def test_journal_talk_is_rounded_down_as_billing_is(tmp_path: Path) -> None:
    """60.6 s of paid talk: the journal says 60 s and the ledger one minute, the same rule for both."""
    from harness.faults import Leg, _walk, play, sample_customer, sample_setup
    from tests.helpers import Daemon

    cfg = configmod.load(sample_setup(tmp_path))
    customer = sample_customer(cfg)
    walk = _walk(cfg, customer, kind="telephone_bill")
    bill = cfg.modules[walk.legs[0].where]
    d = Daemon(cfg)
    try:
        out = play(d, walk, customer, legs=(Leg("answer:60.6", bill.code, True),))
    finally:
        d.stop()
    assert out.row is not None and out.row["talk_seconds"] == 60
    assert [(c["talk_seconds"], c["units"], c["amount"]) for c in out.charges] == [
        (60, 1, bill["amount_per_interval"])]


@pytest.mark.parametrize(("args", "message"), [
    (("calls", "--limit", "99999999999999999999999"), "--limit: must be 0 (no limit) to 1000000000"),
    (("calls", "--limit", "-5"), "--limit: must be 0 (no limit) to 1000000000, not -5"),
    (("simulate", "--caller", "09121234567", "--bridge", "answer:nan"), "--bridge: bridge plan 'answer:nan'"),
    (("simulate", "--caller", "09121234567", "--bridge", "answer:inf"), "--bridge: bridge plan 'answer:inf'"),
])
def test_command_arguments_out_of_range_are_refused_by_name(tmp_path: Path, args: tuple[str, ...],
                                                           message: str) -> None:
    proc = fsapp(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_calls_to_the_last_day_there_is_lists_everything(tmp_path: Path) -> None:
    from harness.faults import sample_setup

    path = sample_setup(tmp_path)
    proc = fsapp("calls", "-c", str(path), "--from", "2000-01-01", "--to", "9999-12-31", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("0 calls")


# ---------------------------------------------------------------- 8: idle connections


def test_idle_connections_take_no_call_slot_and_are_closed(tmp_path: Path) -> None:
    """30 peers that never send a byte, max_calls = 20: a real call still gets a slot; each idle
    peer is closed after connect_timeout_seconds and counted as rejected (idle)."""
    import time

    import gevent.socket

    from harness.faults import sample_setup
    from tests.test_metrics import Metered, value

    cfg = configmod.load(sample_setup(tmp_path, server={"max_calls": 20}))
    m = Metered(cfg)
    idle = [gevent.socket.create_connection(m.server.address) for _ in range(30)]
    try:
        gevent.sleep(0.2)
        assert len(m.server.calls) == 0
        fake = m.call(caller="02100000001", dtmf=[""] * 3, bridges=["answer:1"])
        row = m.app.store.get_call(fake.uuid)
        assert row is not None and row["status"] == "answered"
        started = time.monotonic()
        for sock in idle:
            sock.settimeout(10)
            assert sock.recv(100) == b"connect\n\n"
            assert sock.recv(1) == b""  # then the daemon closed it
        assert time.monotonic() - started < cfg.server.connect_timeout_seconds + 2
        assert value(m.samples(), "fsapp_connections_rejected_total", reason="idle") == 30
        assert value(m.samples(), "fsapp_connections_rejected_total", reason="overflow") == 0
    finally:
        for sock in idle:
            sock.close()
        m.stop()


# ---------------------------------------------------------------- 9: storage health


def _healthz(m: Any) -> tuple[int, dict[str, Any]]:
    import json

    status, _headers, body = m.get("/healthz")
    return status, json.loads(body)


def test_healthz_reports_storage_down_while_writes_fail(tmp_path: Path) -> None:
    """The database full: calls still routed, but /healthz answers 503 with storage false."""
    from harness.faults import _filler_call, fill_table, sample_setup, unfill
    from tests.test_metrics import Metered

    m = Metered(configmod.load(sample_setup(tmp_path)))
    try:
        assert _healthz(m) == (200, {**_healthz(m)[1], "failed_writes": 0})
        fill_table(m.app.store, "calls", _filler_call)
        m.call(caller="02100000001", dtmf=[""] * 3, bridges=["answer:1"])
        status, state = _healthz(m)
        unfill(m.app.store, "calls", "uuid")
    finally:
        m.stop()
    assert status == 503 and state["storage"] is False
    assert state["failed_writes"] >= 1  # the call's journal writes, counted


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_the_daemon_is_unhealthy(tmp_path: Path, how: str) -> None:
    import shutil

    from harness.faults import db_path, sample_setup
    from tests.test_metrics import Metered

    cfg = configmod.load(sample_setup(tmp_path))
    m = Metered(cfg)
    try:
        assert _healthz(m)[0] == 200
        db = db_path(cfg)
        if how == "deleted":
            db.unlink()
        else:
            shutil.copy(db, tmp_path / "copy.db")
            (tmp_path / "copy.db").replace(db)
        status, state = _healthz(m)
    finally:
        m.stop()
    assert status == 503 and state["storage"] is False


def _serve_refused(path: Path, started: str) -> tuple[int, str]:
    """``fsapp serve -c path``, expected to exit at once: (exit code, stderr); a daemon that starts fails."""
    proc = subprocess.Popen([sys.executable, "-m", "fsapp", "serve", "-c", str(path)], cwd=path.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(started)
    return proc.returncode, err


def test_serve_refuses_a_read_only_database(tmp_path: Path) -> None:
    """A database SQLite opens read-only (its write version above 2): serve exits 1 naming storage.url."""
    from harness.faults import db_path, sample_setup

    path = sample_setup(tmp_path)
    db = db_path(configmod.load(path))
    data = bytearray(db.read_bytes())
    data[18] = 3  # the file format's write version: SQLite reads the file but writes nothing
    db.write_bytes(bytes(data))
    code, err = _serve_refused(path, "serve started on a read-only database")
    assert code == 1
    assert f"{path}:storage.url: cannot write: attempt to write a readonly database" in err


def test_serve_refuses_a_database_whose_folder_is_missing(tmp_path: Path) -> None:
    """No database and no folder for it (a mount not there): refused, nothing created."""
    data = sample_data(tmp_path)
    gone = tmp_path / "mnt" / "fsapp.db"
    data["storage"]["url"] = f"sqlite:///{gone}"
    path = tmp_path / "fsapp.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    code, err = _serve_refused(path, "serve created a database in a folder that was not there")
    assert code == 1
    assert f"{path}:storage.url: no database at {gone}, and no folder {gone.parent}" in err
    assert not gone.parent.exists()


# ---------------------------------------------------------------- 10: a slow CRM login


CLUB_REGISTERS = """
[crm]
kind = "payamgostar"
url = "{url}"
timeout_seconds = 5
username = "{username}"
password_env = "FSAPP_TEST_PG_PASSWORD"

[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
register_unknown = true
unknown = "hangup:NORMAL_CLEARING"
next = "hangup"
error = "hangup:CALL_REJECTED"
"""


def _get_seconds(address: tuple[str, int]) -> float:
    """How long one GET /metrics takes (the daemon's event loop answers it)."""
    import time

    import gevent.socket

    started = time.monotonic()
    sock = gevent.socket.create_connection(address, timeout=10)
    try:
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")
        while sock.recv(65536):
            pass
    finally:
        sock.close()
    return time.monotonic() - started


def test_a_slow_crm_login_does_not_freeze_the_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payamgostar takes 1.5 s to log in while two unknown callers need a token to be registered:
    the daemon keeps answering (its /metrics every 50 ms), both callers are registered, one login."""
    import json

    import gevent

    from fsapp.fakefs import Script, run_call
    from harness import write_config
    from harness.faults import serve
    from tests.payamgostar_standin import PayamgostarStandIn

    pg = PayamgostarStandIn().start()
    pg.login_delay = 1.5
    path = write_config(tmp_path, CLUB_REGISTERS.format(url=pg.url, username=pg.username))
    text = path.read_text(encoding="utf-8").replace('command_timeout_seconds = 5\n',
                                                    'command_timeout_seconds = 5\nmetrics_listen = "127.0.0.1:0"\n')
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("FSAPP_TEST_PG_PASSWORD", pg.password)
    served = serve(path)
    try:
        listen = json.loads(next(line for line in served.lines if '"metrics_started"' in line))["listen"]
        metrics = (listen.rsplit(":", 1)[0], int(listen.rsplit(":", 1)[1]))
        calls = [gevent.spawn(run_call, served.address, Script(caller=f"0912000000{i}")) for i in range(2)]
        gaps = []
        while not all(c.ready() for c in calls):
            gaps.append(_get_seconds(metrics))
            gevent.sleep(0.05)
        fakes = [c.get() for c in calls]
    finally:
        served.stop()
        pg.stop()
    assert len(pg.persons) == 2 and pg.logins == 1
    assert all(f.steps[-1].arg == "NORMAL_CLEARING" for f in fakes), [f.steps[-1] for f in fakes]
    assert len(gaps) >= 10 and max(gaps) < 0.5, max(gaps)


# ---------------------------------------------------------------- 6: customer import

HEADER = "id,number,name,type,phones,mobile,pin,sales,support,other,debt"


def _import(tmp_path: Path, config: Path, *lines: str) -> subprocess.CompletedProcess[str]:
    csv_path = tmp_path / "customers.csv"
    csv_path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return fsapp("customers", "import", "-c", str(config), str(csv_path), cwd=tmp_path)


def _directory(tmp_path: Path, config: Path) -> str:
    proc = fsapp("customers", "list", "-c", str(config), "--format", "csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """A config whose directory holds one customer, C-1, with the phone 02188776655."""
    path = tmp_path / "fsapp.toml"
    path.write_text(toml_text(sample_data(tmp_path)), encoding="utf-8")
    proc = _import(tmp_path, path, "C-1,1,Sara,VIP,02188776655,09121234567,,,,,0")
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.mark.parametrize(("row", "message"), [
    ("C-2,2,{big},,,,,,,,0", "customers.csv:2: name: 1048576 characters, at most 1000"),
    ("C-2,2,Reza,,,,,,,,100000000000000000000", "customers.csv:2: debt: must be from -1000000000000000 to"),
    ("C-2,1,Reza,,,,,,,,0", "customers.csv:2: number: '1' is already customer C-1's"),
    ("C-2,2,Reza,,02188776655,,,,,,0", "customers.csv:2: phones: +982188776655 is already customer C-1's"),
])
def test_import_refusals_name_the_line_and_column_and_change_nothing(tmp_path: Path, directory: Path, row: str,
                                                                    message: str) -> None:
    before = _directory(tmp_path, directory)
    proc = _import(tmp_path, directory, row.replace("{big}", "x" * 2**20))
    assert proc.returncode == 2
    assert f"{tmp_path / message}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "nothing imported" in proc.stderr
    assert _directory(tmp_path, directory) == before


def test_a_phone_two_rows_of_one_file_share_is_refused(tmp_path: Path, directory: Path) -> None:
    proc = _import(tmp_path, directory, "C-2,2,Reza,,02177665544,,,,,,0", "C-3,3,Mina,,021-7766-5544,,,,,,0")
    assert proc.returncode == 2
    assert f"{tmp_path / 'customers.csv'}:3: phones: +982177665544 is also customer C-2's (line 2)" in proc.stderr


def test_a_phone_moved_between_customers_in_one_file_is_accepted(tmp_path: Path, directory: Path) -> None:
    """C-1 gives its phone up and C-2 takes it, in one file: no customer shares it afterwards."""
    proc = _import(tmp_path, directory, "C-1,1,Sara,VIP,02100000000,,,,,,0", "C-2,2,Reza,,02188776655,,,,,,0")
    assert proc.returncode == 0, proc.stderr
    assert "C-2,2,Reza,,'+982188776655" in _directory(tmp_path, directory)


def test_customers_add_refuses_a_phone_another_customer_has(tmp_path: Path, directory: Path) -> None:
    proc = fsapp("customers", "add", "-c", str(directory), "--id", "C-9", "--number", "9",
                 "--phone", "02188776655", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--phone: +982188776655 is already customer C-1's" in proc.stderr and "Traceback" not in proc.stderr


def test_customers_list_warns_of_a_phone_an_older_import_let_two_customers_share(tmp_path: Path,
                                                                                 directory: Path) -> None:
    from fsapp.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'fsapp.db'}")
    try:  # as an import before the rule left it
        store.upsert_customer({"id": "C-2", "number": "2", "debt": 0}, ["+982188776655"])
    finally:
        store.close()
    proc = fsapp("customers", "list", "-c", str(directory), cwd=tmp_path)
    assert proc.returncode == 0
    assert "warning: phone +982188776655 is held by C-1, C-2: caller ID identifies only C-1" in proc.stderr
