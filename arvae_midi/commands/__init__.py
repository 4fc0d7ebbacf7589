"""CLI command modules, one per area; :func:`register_all` adds them to the typer app.

Each module defines plain functions with typer annotations and a ``register(app)`` that adds
them. Modules import their heavy dependencies inside the command bodies.
"""

from __future__ import annotations

import importlib

import typer

#: Command modules in help order. A module listed here must define ``register(app)``.
MODULES = ("analyze", "dataset", "train", "fit", "evaluate", "export", "vary", "serve", "demo")


def register_all(app: typer.Typer) -> None:
    """Register every available command module on ``app``."""
    for name in MODULES:
        try:
            module = importlib.import_module(f"arvae_midi.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"arvae_midi.commands.{name}":
                continue  # area not built yet
            raise
        module.register(app)
