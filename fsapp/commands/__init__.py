"""The command table: one module per command, in the order ``fsapp --help`` lists them.

Each module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
optional ``GEVENT = True`` (patch the standard library for cooperative sockets first)
and ``QUIET = True`` (log warnings and above unless --log-level says otherwise).
A command with sub-actions dispatches them through an ``ACTIONS`` map.
"""

from __future__ import annotations

from fsapp.commands import (
    analyse,
    calls,
    cdr,
    check,
    crm,
    customers,
    init,
    ledger,
    loadtest,
    serve,
    simulate,
    sounds,
    web,
)

COMMANDS = (serve, check, init, crm, simulate, sounds, calls, cdr, analyse, loadtest, customers, ledger, web)

BY_NAME = {c.NAME: c for c in COMMANDS}
