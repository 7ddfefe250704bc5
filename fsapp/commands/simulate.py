"""``fsapp simulate``: play FreeSWITCH's side of one call and print a transcript."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from fsapp import config as configmod
from fsapp.commands.base import EXIT_OK, EXIT_RUNTIME, UsageError, config_arg, config_path, load_config

if TYPE_CHECKING:
    from fsapp.fakefs import Script

NAME = "simulate"
HELP = "play FreeSWITCH's side of one call and print a transcript"
GEVENT = True
QUIET = True


def add_arguments(s: argparse.ArgumentParser) -> None:
    config_arg(s)
    s.add_argument("--caller", required=True, help="caller ID number, e.g. 09121234567")
    s.add_argument("--caller-name", default="Simulated caller")
    s.add_argument("--called", default="7000", help="destination number")
    s.add_argument("--module", default="", help="entry module code (the fsapp_module channel variable)")
    s.add_argument("--direction", default="inbound", choices=("inbound", "outbound"))
    s.add_argument("--dtmf", default="", help="comma-separated inputs, one per digit prompt ('' = no input)")
    s.add_argument("--bridge", action="append", default=[],
                   help="answer:SECONDS[:caller] | no-answer | busy | unregistered | failed (repeat per bridge)")
    s.add_argument("--hangup-after", type=int, default=None, help="caller hangs up during the Nth app")
    s.add_argument("--connect", default="", help="HOST:PORT of a running daemon (default: in-process)")


def run(args: argparse.Namespace) -> int:
    from fsapp import simulate

    script = _script(args)
    cfg = load_config(args)
    if config_path(args) is None:
        note = simulate.seed_sample_directory(cfg)
        if note:
            print(note)
    else:
        from fsapp import site

        empty = site.empty_directory_note(cfg)
        if empty:
            print(f"({empty.split(': warning: ', 1)[1]})\n")
    if args.connect:
        call, row = _against_daemon(cfg, args.connect, script)
    else:
        call, row = _in_process(cfg, script)
    print(simulate.describe(cfg, call, row))
    return EXIT_OK if not call.error else EXIT_RUNTIME


def _script(args: argparse.Namespace) -> Script:
    from fsapp.fakefs import BridgePlan, Script

    for plan in args.bridge:
        try:
            BridgePlan.parse(plan)
        except ValueError as exc:
            raise UsageError(f"--bridge: {exc}") from None
    dtmf = args.dtmf.split(",") if args.dtmf else []
    variables = {"fsapp_module": args.module} if args.module else {}
    return Script(caller=args.caller, caller_name=args.caller_name, destination=args.called,
                  direction=args.direction, variables=variables, dtmf=dtmf, bridges=args.bridge,
                  hangup_after=args.hangup_after)


def _against_daemon(cfg: configmod.Config, connect: str, script: Script) -> tuple[Any, dict | None]:
    import gevent

    from fsapp.fakefs import run_call

    try:
        host, port = configmod.parse_listen(connect)
    except ValueError as exc:
        raise UsageError(f"--connect: {exc}") from None
    call = run_call((host, port), script)
    try:
        from fsapp.store import open_store

        gevent.sleep(0.2)
        row = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size).get_call(call.uuid)
    except Exception:  # noqa: BLE001 - the daemon's journal may live elsewhere
        row = None
    return call, row


def _in_process(cfg: configmod.Config, script: Script) -> tuple[Any, dict | None]:
    from fsapp import simulate
    from fsapp.fakefs import run_call

    server = simulate.in_process_server(cfg)
    try:
        call = run_call(server.address, script)
        simulate.wait_idle(server)
        row = server.app.store.get_call(call.uuid)
    finally:
        server.stream.close()
        server.app.stop()
    return call, row
