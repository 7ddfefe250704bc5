"""`fsapp crm probe`: the configured CRM's login and a read-only lookup, through the command line,
against the Payamgostar stand-in and an HTTP CRM stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.helpers import HANGUP_MENU, ROOT, write_config
from tests.payamgostar_standin import PayamgostarStandIn


def probe(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", "crm", "probe", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture
def pg() -> Iterator[PayamgostarStandIn]:
    standin = PayamgostarStandIn().start()
    yield standin
    standin.stop()


def _payamgostar(tmp_path: Path, pg: PayamgostarStandIn) -> Path:
    return write_config(tmp_path, HANGUP_MENU, extra=f"""
[crm]
kind = "payamgostar"
url = "{pg.url}"
username = "{pg.username}"
password_env = "FSAPP_TEST_PG_PASSWORD"
""")


def test_probe_logs_in_to_payamgostar_and_finds_the_customer(tmp_path: Path, pg: PayamgostarStandIn) -> None:
    """Login ok, the identity found by phone and by number; the stand-in saw no write."""
    pg.add_identity("Sara Ahmadi", phones=["0912-123-4567"], customer_number="C-1001")
    writes_before = (len(pg.persons), len(pg.calls))
    proc = probe(_payamgostar(tmp_path, pg), "--phone", "09121234567", "--customer-number", "C-1001",
                 env={"FSAPP_TEST_PG_PASSWORD": pg.password})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"crm payamgostar at {pg.url}"
    assert lines[1].startswith("  login: ok in ")
    assert lines[2].startswith("  find_by_phone 09121234567: ok, customer ") and "(Sara Ahmadi)" in lines[2]
    assert lines[3].startswith("  find_by_number C-1001: ok, customer ")
    assert (len(pg.persons), len(pg.calls)) == writes_before


def test_probe_with_a_wrong_password_fails_at_the_login(tmp_path: Path, pg: PayamgostarStandIn) -> None:
    """A wrong password: exit 1, the login step FAILED, the password nowhere in the output."""
    proc = probe(_payamgostar(tmp_path, pg), env={"FSAPP_TEST_PG_PASSWORD": "not-the-password"})
    assert proc.returncode == 1
    assert "  login: FAILED" in proc.stderr
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_probe_names_a_missing_password_variable(tmp_path: Path, pg: PayamgostarStandIn) -> None:
    path = _payamgostar(tmp_path, pg)
    proc = probe(path, env={"FSAPP_TEST_PG_PASSWORD": ""})
    assert proc.returncode == 2
    assert f"{path}:crm.password_env" in proc.stderr


def test_probe_of_an_http_crm_reports_the_failed_lookup(tmp_path: Path, httpserver: HTTPServer) -> None:
    """The HTTP CRM answers the login (GET /) but fails the lookup with a 500: exit 1, the step and status named."""
    httpserver.expect_request("/api/", method="GET").respond_with_json({"ok": True})
    httpserver.expect_request("/api/customers", method="GET").respond_with_data("boom", status=500)
    path = write_config(tmp_path, HANGUP_MENU, extra=f"""
[crm]
kind = "http"
url = "{httpserver.url_for('/api')}"
token_env = "FSAPP_TEST_CRM_TOKEN"
""")
    proc = probe(path, "--phone", "+989121234567", env={"FSAPP_TEST_CRM_TOKEN": "t0ken-probe"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "  login: ok in " in proc.stdout
    assert "  find_by_phone +989121234567: FAILED (" in proc.stderr and "500" in proc.stderr
    assert "t0ken-probe" not in proc.stdout + proc.stderr


def test_probe_of_the_local_crm_reads_the_directory(tmp_path: Path) -> None:
    """The local CRM: the probe opens the database and says there is no such customer."""
    proc = probe(write_config(tmp_path, HANGUP_MENU))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "crm local"
    assert "find_by_phone 09120000000: ok, no such customer" in proc.stdout
