"""Output that survives logs: whole lines in pipes whatever COLUMNS says, data printed verbatim."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
from rich.table import Table
from plankline.terminal import console, echo, escape
path = "/data/" + "cruise 42 " * 20 + "[t]/:cat:/frame.png"
echo(f"[yellow]warning:[/] unreadable image {escape(path)}: skipped", err=True)
echo(f"wrote {escape(path)}")
table = Table(title="ROIs per predicted class")
table.add_column("class")
table.add_column("ROIs", justify="right")
table.add_row("a very long class name of a rare appendicularian, with words", "12345")
console(stderr=True).print(table)
"""
PATH = "/data/" + "cruise 42 " * 20 + "[t]/:cat:/frame.png"


def run_piped(columns: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS=columns, LINES="10")
    env.pop("FORCE_COLOR", None)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )


def test_messages_in_a_pipe_are_never_wrapped_nor_cut_at_a_narrow_columns() -> None:
    for columns in ("20", "80"):
        done = run_piped(columns)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"wrote {PATH}\n"  # brackets and :cat: printed as they are
        err = done.stderr.splitlines()
        assert err[0] == f"warning: unreadable image {PATH}: skipped"
        assert "\x1b" not in done.stderr  # no colour codes in a log


def test_tables_in_a_pipe_keep_every_cell_whole() -> None:
    err = run_piped("20").stderr.splitlines()
    (row,) = [line for line in err if "appendicularian" in line]
    assert "a very long class name of a rare appendicularian, with words" in row
    assert row.rstrip().endswith("12345 │")
    assert len({len(line) for line in err[2:] if line.strip()}) == 1  # the table is aligned


def test_help_in_a_pipe_shows_defaults_without_markup_escapes() -> None:
    env = dict(os.environ, COLUMNS="80")
    env.pop("FORCE_COLOR", None)
    done = subprocess.run(
        [sys.executable, "-m", "plankline.cli", "run", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "[default: no-debug]" in done.stdout
    assert "[required]" in done.stdout
    assert "\\[" not in done.stdout  # rich's escape, meaningless in plain text


def test_python_warnings_print_as_one_line_without_the_source(monkeypatch) -> None:
    """A batch worker's warning came out with the library's file, line and source line."""
    import warnings

    from plankline.terminal import plain_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    plain_warnings()
    text = warnings.formatwarning(
        UserWarning("12 of 40 ROIs look dark-field [sic]"), UserWarning, "infer.py", 308, "x = 1"
    )
    assert text == "warning: 12 of 40 ROIs look dark-field [sic]\n"


def test_help_starts_without_loading_the_pipeline_libraries() -> None:
    """Every command builds its help at start: a second of imports (OpenCV, PyAV, pydantic,
    torch) for each ``--help`` or typo is what users feel first."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from plankline.cli import app\n"
        "result = CliRunner().invoke(app, ['train', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(' '.join(sorted(m for m in ('cv2', 'av', 'torch', 'pydantic_settings',"
        " 'numpy') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"--help imported {done.stdout.strip()}"
