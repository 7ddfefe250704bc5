"""What several test files share: paths, a config from TOML text, an in-process daemon,
a throwaway TCP server, the sample customer and a club-then-balance flow."""

from __future__ import annotations

import socket
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsapp import config as configmod
from fsapp import customers
from fsapp.fakefs import FakeFreeSWITCH, Script, run_call
from fsapp.simulate import in_process_server, wait_idle
from fsapp.store import Store

ROOT = Path(__file__).resolve().parents[1]
SOUNDS = ROOT / "sounds"
SHARED = ROOT.parent / "shared"

BASE = """
[server]
listen = "127.0.0.1:0"
allow = ["127.0.0.1"]
command_timeout_seconds = 5

[storage]
url = "sqlite:///{db}"

[sounds]
dir = "{sounds}"
language = "fa"

[entry]
default = "{entry}"
"""


Handler = Callable[[socket.socket, threading.Event], None]


@contextmanager
def raw_server(handler: Handler) -> Iterator[str]:
    """A TCP server on a free port running `handler` for every connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def run(conn: socket.socket) -> None:
        try:
            handler(conn, stop)
        except OSError:
            pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for conn in conns:
            conn.close()



def write_config(tmp_path: Path, body: str, *, entry: str = "main", extra: str = "") -> Path:
    text = BASE.format(db=tmp_path / "fsapp.db", sounds=SOUNDS, entry=entry) + textwrap.dedent(extra) + "\n"
    text += textwrap.dedent(body)
    path = tmp_path / "fsapp.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Daemon:
    """An in-process fsapp daemon on a free loopback port."""

    def __init__(self, cfg: configmod.Config) -> None:
        self.server = in_process_server(cfg)
        self.app = self.server.app
        self.store = self.app.store

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def call(self, **script: Any) -> tuple[FakeFreeSWITCH, dict[str, Any] | None]:
        """Play one call to its end; return the stand-in and the journal row."""
        fake = run_call(self.address, Script(**script))
        wait_idle(self.server)
        return fake, self.store.get_call(fake.uuid)

    def stop(self) -> None:
        self.server.stream.close()
        self.app.stop()
        self.app.store.close()


MakeConfig = Callable[..., configmod.Config]
StartDaemon = Callable[[configmod.Config], Daemon]

PG_ENV = "FSAPP_TEST_PG_URL"

HEADER = "id,number,name,type,phones,mobile,pin,sales,support,other,debt"
SARA = "C-1001,C-1001,Sara Ahmadi,VIP,09121234567,09121234567,1234,1001,1002,1003,{debt}"


def balance_flow(*, link: bool = False, require_mobile: bool = False, anonymous: bool = False) -> str:
    """A club identifying callers by caller ID, then the balance; next and error are distinct hangups."""
    return f"""
[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
next = "balance"
error = "hangup:UNALLOCATED_NUMBER"

[[modules]]
code = "balance"
name = "Balance and payment link"
kind = "balance"
anonymous = {str(anonymous).lower()}
require_mobile = {str(require_mobile).lower()}
send_payment_link = {str(link).lower()}
invoice_type = "sales-invoice"
account = "acc-main"
intro = "balance/intro"
balance_is = "balance/balance_is"
debt = "balance/debt"
credit = "balance/credit"
no_debt = "balance/no_debt"
enter_mobile = "balance/enter_mobile"
confirm_mobile = "balance/confirm_mobile"
invalid_mobile = "balance/invalid_mobile"
link_sent = "balance/link_sent"
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""


def seed(store: Store, *lines: str) -> None:
    """Fill the local directory from CSV lines, as `fsapp customers import` would."""
    customers.save_rows(store, customers.parse_csv("\n".join([HEADER, *lines]) + "\n"))
