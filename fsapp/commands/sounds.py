"""``fsapp sounds build|check|tts``: the prompt pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsapp import config as configmod
from fsapp.commands.base import EXIT_BAD_INPUT, EXIT_OK, UsageError, add_actions, load_config

NAME = "sounds"
HELP = "the prompt pipeline: build, check, tts"


def _build_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--src", required=True, help="drop folder laid out as <language>/<group>/<name>.<ext>")
    b.add_argument("--dest", default="", help="prompt folder (default: [sounds] dir)")
    b.add_argument("--silence-thresh", type=float, default=-50.0, help="dBFS below which edges are trimmed")
    b.add_argument("--loudness", type=float, default=None, metavar="LUFS",
                   help="EBU R128 loudness to normalise to (default: [sounds] loudness_lufs, -20)")


def _tts_arguments(t: argparse.ArgumentParser) -> None:
    t.add_argument("--language", default="", help="fa or en (default: [sounds] language)")
    t.add_argument("--overwrite", nargs="*", default=None, metavar="NAME",
                   help="re-render the placeholders tts made (recordings are kept); "
                        "with prompt names, replace exactly those, recordings too")


def _build(args: argparse.Namespace, cfg: configmod.Config) -> int:
    from fsapp import sounds

    dest = Path(args.dest) if args.dest else _writable(cfg)
    loudness = cfg.sounds.loudness_lufs if args.loudness is None else args.loudness
    reports = sounds.build(Path(args.src), dest, silence_thresh_dbfs=args.silence_thresh, loudness_lufs=loudness)
    print(sounds.format_report(reports))
    return EXIT_BAD_INPUT if any(r.status == "error" for r in reports) else EXIT_OK


def _check(args: argparse.Namespace, cfg: configmod.Config) -> int:
    problems = configmod.check_prompt_files(cfg)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    print(f"{len(configmod.prompt_names(cfg))} prompts ok in {cfg.sounds.dir}/{cfg.sounds.language}")
    return EXIT_OK


def _tts(args: argparse.Namespace, cfg: configmod.Config) -> int:
    from fsapp import sounds

    report = sounds.tts(_writable(cfg), args.language or cfg.sounds.language, overwrite=args.overwrite is not None,
                        names=args.overwrite or (), loudness_lufs=cfg.sounds.loudness_lufs)
    print(report.describe())
    return EXIT_OK


def _writable(cfg: configmod.Config) -> Path:
    """[sounds] dir, unless it is the prompt set installed inside the package."""
    if cfg.sounds.dir == configmod.INSTALLED_SOUNDS:
        raise UsageError(f"[sounds] dir is the prompt set installed with fsapp ({cfg.sounds.dir}), not to be "
                         "written: lay out a site (fsapp init DIR) and use its config, or give --dest")
    return cfg.sounds.dir


ACTIONS = {
    "build": ("convert a designer's drop folder into the prompt layout", _build_arguments, _build),
    "check": ("list prompts the config names that are missing or in the wrong format", lambda p: None, _check),
    "tts": ("render placeholder prompts from <dir>/<language>/prompts.toml (espeak-ng)", _tts_arguments, _tts),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_actions(p, "sounds_command", ACTIONS)


def run(args: argparse.Namespace) -> int:
    from fsapp import sounds

    cfg = load_config(args, check_files=False)
    try:
        return ACTIONS[args.sounds_command][2](args, cfg)
    except sounds.SoundsError as exc:
        raise UsageError(str(exc)) from None
