"""``fsapp web`` through its command line: users added from standard input, the config checked,
the console served over real HTTP by its own process."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import write_config
from tests.webconsole import PAID, extra, free_port, fsapp, serve


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, PAID, extra=extra(tmp_path / "rec", f'listen = "127.0.0.1:{free_port()}"'))


def test_users_add_reads_the_password_from_stdin_and_stores_a_hash(config: Path) -> None:
    added = fsapp("web", "users", "add", "maryam", "--role", "reviewer", "-c", str(config), stdin="s3cret-pass\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "maryam: added as reviewer\n"
    again = fsapp("web", "users", "add", "maryam", "--role", "admin", "-c", str(config), stdin="other-pass\n")
    assert again.stdout == "maryam: updated as admin\n"
    listed = fsapp("web", "users", "list", "-c", str(config))
    assert listed.stdout.startswith("maryam\tadmin\t")
    db = (config.parent / "fsapp.db").read_bytes()
    assert b"other-pass" not in db and b"scrypt$16384$8$1$" in db


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["bad name", "--role", "viewer"], "longenough\n", "NAME must be 1-64 printable characters"),
    (["ali", "--role", "viewer"], "short\n", "the password must be at least 8 characters"),
    (["ali", "--role", "boss"], "longenough\n", "invalid choice: 'boss'"),
])
def test_users_add_refuses_bad_input(config: Path, args: list[str], stdin: str, message: str) -> None:
    proc = fsapp("web", "users", "add", *args, "-c", str(config), stdin=stdin)
    assert proc.returncode == 2 and message in proc.stderr
    assert fsapp("web", "users", "list", "-c", str(config)).stdout == ""


def test_check_names_bad_web_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, PAID, extra='[web]\nlisten = "nowhere"\nlanguage = "de"\ncolour = "red"\n')
    proc = fsapp("check", "-c", str(path))
    assert proc.returncode == 2
    assert f"{path}:web.listen: not HOST:PORT: 'nowhere'" in proc.stderr
    assert f"{path}:web.language: must be one of fa, en, not 'de'" in proc.stderr
    assert f"{path}:web.colour: unknown key" in proc.stderr


@pytest.fixture
def served(config: Path) -> Iterator[str]:
    assert fsapp("web", "users", "add", "admin", "--role", "admin", "-c", str(config),
                 stdin="admin-password\n").returncode == 0
    with serve(config) as url:
        yield url


def test_fsapp_web_serves_the_console_over_http(served: str, config: Path) -> None:
    s = requests.Session()
    page = s.get(served, timeout=5)
    assert page.url == served + "login"
    assert "HttpOnly" in page.headers["Set-Cookie"] and "SameSite=Lax" in page.headers["Set-Cookie"]
    assert page.status_code == 200 and '<html lang="fa" dir="rtl">' in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = s.post(served + "login", data={"name": "admin", "password": "admin-password", "csrf": token}, timeout=5)
    assert r.status_code == 200 and r.url == served and "گزارش تماس‌ها" in r.text
    assert (config.parent / "web-secret").stat().st_mode & 0o777 == 0o600
    started = time.monotonic()
    assert s.get(served + "calls.csv", timeout=5).text.startswith("uuid,started_at,")
    assert time.monotonic() - started < 30


def test_fsapp_web_refuses_an_unset_secret_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, PAID, extra='[web]\nsecret_env = "FSAPP_NO_SUCH_SECRET"\n')
    proc = fsapp("web", "-c", str(path))
    assert proc.returncode == 2
    assert f"{path}:web.secret_env: environment variable FSAPP_NO_SUCH_SECRET must hold at least 16" in proc.stderr


def test_users_add_never_demotes_the_last_admin(config: Path) -> None:
    def add(name: str, role: str):  # noqa: ANN202 - a CompletedProcess
        return fsapp("web", "users", "add", name, "--role", role, "-c", str(config), stdin="s3cret-pass\n")

    assert add("boss", "admin").returncode == 0
    demoted = add("boss", "viewer")
    assert demoted.returncode == 2 and "boss is the last admin" in demoted.stderr
    assert fsapp("web", "users", "list", "-c", str(config)).stdout.startswith("boss\tadmin\t")
    # with a second admin, the first may become a viewer
    assert add("sara", "admin").returncode == 0
    again = add("boss", "viewer")
    assert again.returncode == 0 and again.stdout == "boss: updated as viewer\n"
