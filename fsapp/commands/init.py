"""``fsapp init DIR``: lay out a site that passes ``fsapp check`` at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsapp import config as configmod
from fsapp.commands.base import EXIT_OK, UsageError

NAME = "init"
HELP = "lay out a site: config, prompts FreeSWITCH can read, customer directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder for fsapp.toml (made if missing)")
    p.add_argument("--sounds-dir", default="", help="where the prompts go (default: DIR/sounds); "
                   "FreeSWITCH must read it, e.g. /usr/share/freeswitch/sounds/fsapp")
    p.add_argument("--language", default="fa", choices=("fa", "en"))
    p.add_argument("--storage", default="sqlite:fsapp.db", help="[storage] url (default: sqlite:fsapp.db beside it)")
    p.add_argument("--customers", default="empty", choices=("empty", "sample"),
                   help="an empty customer directory (default) or the sample customers")


def run(args: argparse.Namespace) -> int:
    from fsapp import site

    try:
        made = site.lay_out(Path(args.dir), sounds_dir=Path(args.sounds_dir) if args.sounds_dir else None,
                            language=args.language, storage_url=args.storage, customers=args.customers)
    except site.SiteError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {made.config}")
    kept = f", {made.kept} already there kept" if made.kept else ""
    print(f"prompts: {made.copied} files copied to {made.sounds}{kept}")
    if made.customers:
        print(made.customers)
    cfg = configmod.load(str(made.config))
    print(f"{cfg.file}: ok ({len(cfg.modules)} modules)")
    for line in site.warnings(cfg):
        print(line, file=sys.stderr)
    print(f"next: fsapp check -c {made.config}")
    return EXIT_OK
