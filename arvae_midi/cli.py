"""The ``arvae-midi`` command line: a typer app assembled from thin per-area command modules.

Each command parses its options, builds a config and calls a library function. A library error
(:class:`arvae_midi.errors.ArvaeError`) is printed as one ``error: ...`` line on stderr in one
place, :class:`_App`, for every command; the console script then exits with status 1, while an
in-process caller (``CliRunner``, an embedding program) gets the typed exception. Heavy
imports (torch, onnxruntime) happen inside the commands that need them, so ``--help`` and
``serve`` start fast.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from arvae_midi.commands import register_all
from arvae_midi.errors import ArvaeError


class _App(TyperGroup):
    """The root group: the one place where a library error is printed, as one ``error: ...`` line."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer >= 0.20 vendors click)
        """Run the chosen command; an :class:`ArvaeError` from it is printed on one line and re-raised."""
        try:
            return super().invoke(ctx)
        except ArvaeError as e:
            typer.echo(f"error: {e}", err=True)
            raise


app = typer.Typer(
    name="arvae-midi",
    cls=_App,
    help="Controllable melody variations from Attribute-Regularized VAEs: train, export, vary, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
register_all(app)


@app.callback()
def _root() -> None:
    """Controllable melody variations from Attribute-Regularized VAEs."""


def command_names() -> list[str]:
    """Names of every registered command, in help order (CI runs ``--help`` on each)."""
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    return list(commands)


def main() -> None:
    """Console-script entry point: exit status 1 after a library error (already printed by
    :class:`_App`), 2 after a usage error (click prints those itself)."""
    try:
        typer.main.get_command(app).main(prog_name="arvae-midi")
    except ArvaeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
