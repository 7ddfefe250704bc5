"""The command layout: one module per command in one ordered table, sub-actions through handler maps."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fsapp import cli
from fsapp.commands import BY_NAME, COMMANDS
from fsapp.commands import customers as customers_cmd
from fsapp.commands import ledger as ledger_cmd
from fsapp.commands import sounds as sounds_cmd

COMMANDS_DIR = Path(cli.__file__).parent / "commands"


def fsapp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.NAME)
def test_every_command_has_the_four_parts(command) -> None:  # noqa: ANN001 - a module
    assert isinstance(command.NAME, str) and command.NAME
    assert isinstance(command.HELP, str) and command.HELP
    assert callable(command.add_arguments) and callable(command.run)


def test_every_command_file_is_in_the_table_once() -> None:
    files = {p.stem for p in COMMANDS_DIR.glob("*.py")} - {"__init__", "base"}
    assert sorted(c.__name__.rpartition(".")[2] for c in COMMANDS) == sorted(files)
    assert len(BY_NAME) == len(COMMANDS)


def test_help_lists_the_commands_in_table_order(tmp_path: Path) -> None:
    proc = fsapp("--help", cwd=tmp_path)
    assert proc.returncode == 0
    listed = [line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith("    ") and line.split()[0] in BY_NAME]
    assert listed == [c.NAME for c in COMMANDS]
    for c in COMMANDS:
        assert c.HELP.split()[0] in proc.stdout


@pytest.mark.parametrize(("command", "dest"), [(sounds_cmd, "sounds"), (customers_cmd, "customers")])
def test_sub_action_maps_cover_every_choice(command, dest: str) -> None:  # noqa: ANN001 - a module
    actions = _subparsers(_subparsers(cli.build_parser())[dest])
    assert set(actions) == set(command.ACTIONS)
    for name, (_help, _add, run) in command.ACTIONS.items():
        assert callable(run), name


def test_ledger_action_map_covers_every_choice() -> None:
    ledger = _subparsers(cli.build_parser())["ledger"]
    (action,) = [a for a in ledger._actions if a.dest == "action"]
    assert set(action.choices) == set(ledger_cmd.ACTIONS)
    assert action.default in ledger_cmd.ACTIONS


def test_an_unknown_sub_action_exits_2_naming_it(tmp_path: Path) -> None:
    for args in (["ledger", "refund"], ["customers", "delete"], ["sounds", "play"]):
        proc = fsapp(*args, cwd=tmp_path)
        assert proc.returncode == 2, args
        assert f"invalid choice: '{args[1]}'" in proc.stderr


def test_a_usage_error_exits_2_with_the_command_named(tmp_path: Path) -> None:
    proc = fsapp("simulate", "--caller", "09121234567", "--bridge", "ring:5", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("fsapp simulate: --bridge:")
    assert proc.stdout == ""
