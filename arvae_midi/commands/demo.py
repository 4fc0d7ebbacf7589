"""``arvae-midi demo``: hear and see what the knobs do, no MIDI ports needed.

A built-in one-bar melody goes through the engine with each knob swept 0 -> 127 (the other
knobs untouched); the variations are written to ``demo.mid`` (one bar each, in sweep order,
the original bar first) and drawn as a piano roll PNG with each bar's attribute value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from arvae_midi.core.tokens import Note

#: A folk-like bar in D major: eighths and a triplet, mid register (MIDI 62..74).
DEMO_MELODY: tuple[Note, ...] = (
    Note(62, 0.0, 0.5, 90),
    Note(66, 0.5, 1.0, 80),
    Note(69, 1.0, 1.5, 88),
    Note(71, 1.5, 2.0, 78),
    Note(74, 2.0, 2 + 1 / 3, 86),
    Note(73, 2 + 1 / 3, 2 + 2 / 3, 76),
    Note(71, 2 + 2 / 3, 3.0, 80),
    Note(69, 3.0, 4.0, 84),
)
SWEEP = (0, 32, 64, 96, 127)


def demo(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where demo.mid and demo.png go.")] = Path("."),
    model: Annotated[Path | None, typer.Option(help="ONNX model (default: the shipped model).")] = None,
    key_lock: Annotated[bool, typer.Option("--key-lock/--no-key-lock", help="Keep variations in key.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the variation noise.")] = 0,
) -> None:
    """Sweep every knob over a built-in melody; write demo.mid and a piano-roll PNG."""
    from rich.console import Console
    from rich.table import Table

    from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
    from arvae_midi.core.midi import bars_to_notes, write_midi
    from arvae_midi.core.tokens import quantize_bar
    from arvae_midi.engine.engine import Engine
    from arvae_midi.plotting import plot_piano_roll

    engine = Engine.load(model)
    vocab = engine.meta.vocab
    bar = quantize_bar(list(DEMO_MELODY), vocab)
    bars, titles = [bar], ["input"]
    for attribute in engine.meta.attributes:
        for value in SWEEP:
            out = engine.vary(bar, {attribute: value}, amount=0.0, seed=seed, n=1, key_lock=key_lock)
            bars.append(out[0])
            titles.append(f"{attribute} {value}")
    stack = np.stack(bars)
    attrs = compute_attributes(stack, vocab)

    out_dir.mkdir(parents=True, exist_ok=True)
    midi_path, png_path = out_dir / "demo.mid", out_dir / "demo.png"
    write_midi(midi_path, bars_to_notes(stack, vocab), bpm=100)
    # Each bar's dot shows the attribute its knob drives (the input bar: rhythmic complexity).
    swept = [ATTRIBUTE_NAMES[0]] + [t.split()[0] for t in titles[1:]]
    values = [float(attrs[i, ATTRIBUTE_NAMES.index(name)]) for i, name in enumerate(swept)]
    plot_piano_roll(
        stack, vocab, png_path, titles=titles, values=values, value_label="swept attribute",
        title="arvae-midi demo: each knob swept 0 -> 127",
    )

    table = Table(title=f"demo on {engine.meta.name} ({engine.provider})")
    table.add_column("bar", no_wrap=True)  # "rhythmic_complexity 127" stays on one line
    for name in ATTRIBUTE_NAMES:
        table.add_column(name, justify="right")
    for title, row in zip(titles, attrs, strict=True):
        table.add_row(title, *(f"{v:.3f}" for v in row))
    Console().print(table)
    typer.echo(f"wrote {midi_path}")
    typer.echo(f"wrote {png_path}")


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the app."""
    app.command()(demo)
