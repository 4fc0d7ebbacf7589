"""CLI command modules, one per area; :func:`register_all` adds them to the typer app.

Each module defines plain functions with typer annotations and a ``register(app)`` that adds
them. Modules import their heavy dependencies inside the command bodies, so importing them all
here costs little; a module that fails to import is a bug and fails loudly.
"""

from __future__ import annotations

import typer

from arvae_midi.commands import analyze, calibrate, dataset, demo, evaluate, export, fit, serve, train, vary

#: Command modules in help order; each defines ``register(app)``.
MODULES = (analyze, dataset, train, fit, evaluate, export, calibrate, vary, serve, demo)


def register_all(app: typer.Typer) -> None:
    """Register every command module on ``app``."""
    for module in MODULES:
        module.register(app)
