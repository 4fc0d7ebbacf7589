"""The CLI as a whole: every command module registered, every command's ``--help``, one error path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import arvae_midi.commands as commands
from arvae_midi.cli import app, command_names
from arvae_midi.errors import MidiFileError

runner = CliRunner()
COMMANDS_DIR = Path(commands.__file__).parent


def test_every_command_module_is_registered() -> None:
    """A module of commands/ that defines ``register`` is registered (helpers define none)."""
    files = {p.stem for p in COMMANDS_DIR.glob("*.py") if "\ndef register(" in p.read_text(encoding="utf-8")}
    registered = {m.__name__.rsplit(".", 1)[1] for m in commands.MODULES}
    assert files == registered


def test_the_commands_the_readme_lists_exist() -> None:
    names = set(command_names())
    assert {"analyze", "dataset", "train", "evaluate", "plot", "export", "info", "vary", "serve", "ports",
            "demo"} <= names  # fmt: skip


@pytest.mark.parametrize("name", command_names())
def test_help_of_every_command(name: str) -> None:
    res = runner.invoke(app, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and name in res.output


def test_root_help_lists_every_command() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in command_names():
        assert name in res.output


def test_a_library_error_is_one_line_and_status_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mid"
    proc = subprocess.run([sys.executable, "-m", "arvae_midi.cli", "analyze", str(missing)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {missing}: no such file"]


def test_in_process_callers_get_the_typed_exception(tmp_path: Path) -> None:
    res = runner.invoke(app, ["analyze", str(tmp_path / "missing.mid")])
    assert res.exit_code == 1 and isinstance(res.exception, MidiFileError)
    assert res.output.startswith("error: ")


def test_usage_errors_are_status_2() -> None:
    res = runner.invoke(app, ["vary", "--no-such-option"])
    assert res.exit_code == 2


def test_the_cli_and_the_runtime_helpers_import_without_torch() -> None:
    code = ("import sys, arvae_midi.cli, arvae_midi.plotting, arvae_midi.progress, arvae_midi.engine.feeds; "
            "sys.exit('torch' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
