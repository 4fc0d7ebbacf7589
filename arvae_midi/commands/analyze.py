"""``arvae-midi analyze``: the four attributes of every 4/4 bar of a MIDI file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.midi import read_midi
from arvae_midi.core.tokens import Vocabulary


def analyze(
    midi_file: Annotated[Path, typer.Argument(help="A 4/4 MIDI file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print rhythmic complexity, note density, pitch range and contour of every bar."""
    song = read_midi(midi_file)
    vocab = Vocabulary()
    attrs = compute_attributes(song.bar_tokens(vocab), vocab)
    rows = [
        {"index": i, **{name: round(float(v), 4) for name, v in zip(ATTRIBUTE_NAMES, row, strict=True)}}
        for i, row in enumerate(attrs)
    ]
    if as_json:
        typer.echo(json.dumps({"bars": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("bar", *ATTRIBUTE_NAMES, title=f"{midi_file.name}: {len(rows)} bars at {song.bpm:g} bpm")
    for row in rows:
        table.add_row(str(row["index"]), *(f"{row[name]:.3f}" for name in ATTRIBUTE_NAMES))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``analyze`` to the app."""
    app.command()(analyze)
