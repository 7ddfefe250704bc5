"""``fsapp web``: the managers' web console (gevent WSGI), and ``fsapp web users add``."""

from __future__ import annotations

import argparse
import getpass
import sys

from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, UsageError, config_arg, load_config, open_store
from fsapp.store import LastAdmin
from fsapp.web.auth import ROLES, hash_password, name_problem, password_problem

NAME = "web"
HELP = "the managers' web console: journal, calls, recordings in a browser"
GEVENT = True

def _serve(args: argparse.Namespace) -> int:
    from fsapp.store import StorageError
    from fsapp.web import serving

    cfg = load_config(args, check_files=False)
    try:
        server = serving.start(cfg)
    except StorageError as exc:
        print(f"fsapp web: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except ValueError as exc:  # the session secret's variable is unset or too short
        print(f"fsapp web: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"{cfg.file}:web.listen: cannot listen on {cfg.web.listen_host}:{cfg.web.listen_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"fsapp web: listening on {serving.address(cfg, server)}", flush=True)
    server.serve_forever()
    return EXIT_OK


def _password() -> str:
    """From the terminal (asked twice, not echoed), else one line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("users add: the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _users_add(args: argparse.Namespace) -> int:

    name = args.name.strip()
    if name_problem(name):
        raise UsageError(f"users add: {name_problem(args.name)}")
    password = _password()
    if password_problem(password):
        raise UsageError(f"users add: {password_problem(password)}")
    _cfg, store = open_store(args)
    try:
        new = store.web_user_set(name, args.role, hash_password(password))
    except LastAdmin as exc:
        raise UsageError(f"users add: {exc}") from None
    print(f"{name}: {'added' if new else 'updated'} as {args.role}")
    return EXIT_OK


def _users_list(args: argparse.Namespace) -> int:
    _cfg, store = open_store(args)
    for u in store.web_users():
        print(f"{u['name']}\t{u['role']}\t{u['created_at']}")
    return EXIT_OK


ACTIONS = {"add": _users_add, "list": _users_list}


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)
    sub = p.add_subparsers(dest="web_action", metavar="ACTION")
    users = sub.add_parser("users", help="console users: add NAME --role ROLE, list")
    users.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")
    users_sub = users.add_subparsers(dest="users_action", required=True, metavar="ACTION")
    add = users_sub.add_parser("add", help="add a user or change one's role and password")
    add.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    listing = users_sub.add_parser("list", help="list the users")
    listing.add_argument("-c", "--config", default=argparse.SUPPRESS, help="config file")


def run(args: argparse.Namespace) -> int:
    if args.web_action == "users":
        return ACTIONS[args.users_action](args)
    return _serve(args)
