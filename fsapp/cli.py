"""The ``fsapp`` command line: the parser from the command table, gevent, logging, exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 bad input or config (``fsapp.commands.base``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fsapp import config as configmod
from fsapp import log as logmod
from fsapp.commands import BY_NAME, COMMANDS
from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_RUNTIME, UsageError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fsapp", description="Customer-club engine for FreeSWITCH (outbound ESL).")
    p.add_argument("--log-level", default=os.environ.get("FSAPP_LOG_LEVEL", ""),
                   help="debug, info, warning, error (default: info; warning for simulate)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.NAME, help=command.HELP))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = BY_NAME[args.command]
    if getattr(command, "GEVENT", False):
        # Cooperative sockets for requests (the HTTP CRM) and psycopg: one slow
        # CRM or database answer must not stall the other calls.
        from gevent import monkey

        if not monkey.is_module_patched("socket"):
            monkey.patch_all(thread=False, subprocess=False)
    logmod.configure(args.log_level or ("warning" if getattr(command, "QUIET", False) else "info"),
                     buffered=args.command == "serve")
    try:
        return int(command.run(args) or 0)
    except configmod.ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except UsageError as exc:
        print(f"fsapp {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
