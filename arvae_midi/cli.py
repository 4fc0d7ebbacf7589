"""The ``arvae-midi`` command line: a typer app assembled from thin per-area command modules.

Each command parses its options, builds a config and calls a library function. Library errors
(:class:`arvae_midi.errors.ArvaeError`) become one line on stderr and exit status 1. Heavy
imports (torch, onnxruntime) happen inside the commands that need them, so ``--help`` and
``serve`` start fast.
"""

from __future__ import annotations

import sys

import typer

from arvae_midi.commands import register_all
from arvae_midi.errors import ArvaeError

app = typer.Typer(
    name="arvae-midi",
    help="Controllable melody variations from Attribute-Regularized VAEs: train, export, vary, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
register_all(app)




@app.callback()
def _root() -> None:
    """Controllable melody variations from Attribute-Regularized VAEs."""


def main() -> None:
    """Console-script entry point: run the app, turning library errors into one line and exit 1."""
    command = typer.main.get_command(app)
    try:
        # Standalone mode: click prints usage errors itself and exits with status 2.
        command.main(prog_name="arvae-midi")
    except ArvaeError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
