"""What every command shares: the exit codes, the bad-input error and the config argument."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from fsapp import config as configmod

if TYPE_CHECKING:
    from fsapp.store import Store

EXIT_OK, EXIT_RUNTIME, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input: the message names the argument or file at fault."""


def config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="config file (default: fsapp.toml if present, else the shipped sample)")


def format_arg(p: argparse.ArgumentParser) -> None:
    """``--format`` of a listing, and ``--bom``/``--no-bom`` for its CSV."""
    from fsapp import render

    p.add_argument("--format", default="table", choices=render.FORMATS)
    p.add_argument("--bom", action=argparse.BooleanOptionalAction, default=None,
                   help="CSV: start with a UTF-8 byte-order mark, for Excel (default: only when writing to a file)")


def config_path(args: argparse.Namespace) -> str | None:
    if args.config:
        return args.config
    return "fsapp.toml" if os.path.exists("fsapp.toml") else None


def load_config(args: argparse.Namespace, *, check_files: bool = True) -> configmod.Config:
    return configmod.load(config_path(args), check_files=check_files)


def open_store(args: argparse.Namespace) -> tuple[configmod.Config, Store]:
    """The store the config names (prompt files are not checked: a listing needs none)."""
    from fsapp.store import open_store as open_

    cfg = load_config(args, check_files=False)
    return cfg, open_(cfg.storage_url, pool_size=cfg.storage_pool_size)


Action = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]


def add_actions(p: argparse.ArgumentParser, dest: str, actions: dict[str, Action]) -> None:
    """Sub-actions as sub-parsers, one per entry of ``actions``: name -> (help, add_arguments, run)."""
    sub = p.add_subparsers(dest=dest, required=True, metavar="ACTION")
    for name, (help_, add_arguments, _run) in actions.items():
        a = sub.add_parser(name, help=help_)
        config_arg(a)
        add_arguments(a)
