"""``fsapp check``: validate the config and every prompt it names."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_OK, config_arg, load_config

if TYPE_CHECKING:
    from fsapp.config import Config

NAME = "check"
HELP = "validate the config and every prompt it names"


def add_arguments(p: argparse.ArgumentParser) -> None:
    config_arg(p)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if cfg.crm.kind != "local":
        # What serve would refuse: a CRM section that cannot work (its token variable unset, ...).
        from fsapp.app import NullMetrics, make_crm

        try:
            make_crm(cfg, None, NullMetrics())  # type: ignore[arg-type]
        except ValueError as exc:
            print(f"{cfg.file}:{exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from fsapp import pins

    warning = pins.pepper_warning(cfg)
    if warning:
        print(f"{cfg.file}: warning: {warning}", file=sys.stderr)
    for line in warnings(cfg):
        print(line, file=sys.stderr)
    print(f"{cfg.file}: ok ({len(cfg.modules)} modules)")
    return EXIT_OK


def warnings(cfg: Config) -> list[str]:
    """What works but does not do what it says: a payment link the local CRM never sends."""
    if cfg.crm.kind != "local":
        return []
    return [f"{cfg.file}:{m.where}.send_payment_link: warning: the local CRM sends nothing; the link is only recorded"
            " in the outbox (state recorded), yet the caller hears link_sent"
            for m in cfg.modules.values() if m.kind == "balance" and m.enabled and m["send_payment_link"]]
