"""``fsapp cdr import DIR``: FreeSWITCH's CDR files (mod_json_cdr's err-log-dir) into the journal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME, UsageError, add_actions, load_config

NAME = "cdr"
HELP = "FreeSWITCH's CDRs: import the files mod_json_cdr left on disk"


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the folder of <uuid>.cdr.json files (err-log-dir, or log-dir)")


def _import(args: argparse.Namespace, cfg: Any) -> int:
    from fsapp.cdr import importer
    from fsapp.cdr.aftercall import AfterCall
    from fsapp.cdr.writer import CDRWriter
    from fsapp.store import StorageError, open_store

    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"DIR: no such directory: {directory}")
    try:
        store = open_store(cfg.storage_url, pool_size=cfg.storage_pool_size)
        try:
            # a CDR-only call gets its after-call work (the daemon's outbox delivers its call log)
            after = AfterCall(_app(cfg, store))
            writer = CDRWriter(store, lambda: cfg.journal.too_long_seconds, after)
            report = importer.import_dir(directory, writer, max_bytes=cfg.cdr.max_body_bytes)
        finally:
            store.close()
    except StorageError as exc:
        print(f"fsapp cdr import: {cfg.file}:storage.url: {exc} (the files not yet imported stay in {directory})",
              file=sys.stderr)
        return EXIT_RUNTIME
    for name, reason in report.refused:
        print(f"{directory / name}: refused: {reason} (moved to {importer.REFUSED}/)", file=sys.stderr)
    print(f"{len(report.imported)} imported, {len(report.already)} already in the journal, "
          f"{len(report.refused)} refused")
    return EXIT_BAD_INPUT if report.refused else EXIT_OK


def _app(cfg: Any, store: Any) -> Any:
    """The daemon's App over ``store``; a CRM its config cannot build is a usage error (nothing imported)."""
    from fsapp.app import App

    try:
        return App(cfg, store=store)
    except ValueError as exc:
        raise UsageError(f"{cfg.file}: {exc} (fsapp cdr import queues the CRM's call log of the calls "
                         "it completes, as the daemon does)") from None


ACTIONS = {
    "import": ("import err-log-dir (or log-dir) files; each is moved aside once done", _import_arguments, _import),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_actions(p, "cdr_command", ACTIONS)


def run(args: argparse.Namespace) -> int:
    return ACTIONS[args.cdr_command][2](args, load_config(args, check_files=False))
