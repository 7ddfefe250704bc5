"""What several test files share: paths, a config from TOML text, an in-process daemon,
a throwaway TCP server, the sample customer and a club-then-balance flow."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fsapp import config as configmod
from fsapp import customers
from fsapp.store import Store
from harness import ROOT, SHARED, SOUNDS, Daemon, write_config

__all__ = ["HEADER", "HANGUP_MENU", "PG_ENV", "RATE", "ROOT", "SARA", "SHARED", "SOUNDS", "Daemon", "MakeConfig",
           "StartDaemon", "balance_flow", "paid_line", "raw_server", "seed", "write_config"]

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



MakeConfig = Callable[..., configmod.Config]
StartDaemon = Callable[[configmod.Config], Daemon]

PG_ENV = "FSAPP_TEST_PG_URL"

# The least flow a daemon runs: one menu whose every way out hangs up.
HANGUP_MENU = """
[[modules]]
code = "main"
kind = "menu"
prompt = "menu/main"
options = { "1" = "hangup" }
next = "hangup"
error = "hangup"
"""

HEADER = "id,number,name,type,phones,mobile,pin,sales,support,other,debt"
SARA = "C-1001,C-1001,Sara Ahmadi,VIP,09121234567,09121234567,1234,1001,1002,1003,{debt}"


RATE = 50_000  # rial per started minute in PAID


def club_then(code: str) -> str:
    """The entry module: a club identifying callers by caller ID, going on to ``code``."""
    return f"""
[[modules]]
code = "main"
kind = "customer_club"
auth = "phone"
next = "{code}"
error = "hangup:UNALLOCATED_NUMBER"
"""


def paid_line(*, link: bool = True, interval: int = 1, amount: int = RATE, max_debt: int = 5_000_000,
              targets: str = '["ext:1001", "ext:1002"]', search_field: str = "") -> str:
    """A club identifying callers by caller ID, then the paid line; error and next are distinct hangups."""
    return club_then("paid") + f"""
[[modules]]
code = "paid"
name = "Paid expert line"
kind = "telephone_bill"
product_name = "Expert consultation"
product_code = "EXPERT-MIN"
invoice_type = "sales-invoice"
invoice_search_field = "{search_field}"
interval_minutes = {interval}
amount_per_interval = {amount}
send_payment_link = {str(link).lower()}
account = "acc-main"
max_debt = {max_debt}
debt_prompt = "bill/debt_exceeded"
connecting = "bill/connecting"
ring_seconds = 20
targets = {targets}
next = "hangup:NORMAL_CLEARING"
error = "hangup:CALL_REJECTED"
"""


def balance_flow(*, link: bool = False, require_mobile: bool = False, anonymous: bool = False, amount: int = 0,
                 search_field: str = "", product_code: str = "") -> str:
    """A club identifying callers by caller ID, then the balance; next and error are distinct hangups."""
    return club_then("balance") + f"""
[[modules]]
code = "balance"
name = "Balance and payment link"
kind = "balance"
anonymous = {str(anonymous).lower()}
require_mobile = {str(require_mobile).lower()}
send_payment_link = {str(link).lower()}
invoice_type = "sales-invoice"
invoice_amount = {amount}
invoice_search_field = "{search_field}"
product_code = "{product_code}"
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
