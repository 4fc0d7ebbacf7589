"""``arvae-midi vary``: offline variations of every bar of a MIDI file, knobs set from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, ATTRIBUTE_SHORT
from arvae_midi.core.constants import KNOB_MAX
from arvae_midi.engine.policy import CONTEXT_BARS, DEFAULT_CANDIDATES, DEFAULT_ROUNDS, KEY_LOCK
from arvae_midi.errors import ConfigError

#: Closed-loop rows per round and variation: the engine's policy (numpy-only module, cheap to import).
CANDIDATES = DEFAULT_CANDIDATES


def parse_knob_settings(items: list[str]) -> dict[str, int]:
    """``["note_density=100", ...]`` -> ``{"note_density": 100}``; ConfigError on bad syntax or range.

    Attribute names are checked against the model later (:meth:`Engine.knob_to_latent`).
    """
    knobs: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected ATTRIBUTE=VALUE with VALUE in 0..{KNOB_MAX}")
        try:
            number = int(value)
        except ValueError as e:
            raise ConfigError(f"--set {item!r}: {value!r} is not an integer (knob values are 0..{KNOB_MAX})") from e
        if not 0 <= number <= KNOB_MAX:
            raise ConfigError(f"--set {item!r}: {number} is outside 0..{KNOB_MAX}")
        if name in knobs:
            raise ConfigError(f"--set {name} given twice")
        knobs[name] = number
    return knobs


def vary(
    midi_file: Annotated[Path, typer.Argument(help="A 4/4 MIDI file; every bar is varied.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="MIDI file to write the variations to.")],
    model: Annotated[Path | None, typer.Option(help="Model file (default: the shipped default model).")] = None,
    knob: Annotated[
        list[str] | None,
        typer.Option("--set", help=f"ATTRIBUTE=0..{KNOB_MAX} (repeatable); unset attributes keep each bar's own "
                     "value."),
    ] = None,
    amount: Annotated[float, typer.Option(min=0.0, max=1.0, help="Noise on the free latent dims, 0..1.")] = 0.0,
    variations: Annotated[int, typer.Option(min=1, max=64, help="Variations per bar, written one after another.")] = 1,
    seed: Annotated[int, typer.Option(help="Noise seed (bar i uses seed + i).")] = 0,
    candidates: Annotated[
        int,
        typer.Option(min=1, max=64, help="Latents decoded per closed-loop round and variation when a knob is "
                     "set; the one nearest the knob targets is kept (1 = raw latent traversal)."),
    ] = CANDIDATES,
    rounds: Annotated[
        int, typer.Option(min=1, max=8, help="Closed-loop rounds (each narrows the bracket around the targets).")
    ] = DEFAULT_ROUNDS,
    key_lock: Annotated[
        bool, typer.Option("--key-lock/--no-key-lock", help="Keep each bar's variations in the scale of that bar "
                           f"and the {CONTEXT_BARS - 1} before it, as serve does.")
    ] = KEY_LOCK,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print per-bar attributes as JSON.")] = False,
) -> None:
    """Write, for each bar of MIDI_FILE, its variation(s) in order at the input's tempo.

    Prints every bar's input and output attributes.
    """
    knobs = parse_knob_settings(knob or [])
    import numpy as np

    from arvae_midi.core.midi import bars_to_notes, read_midi, write_midi
    from arvae_midi.engine.engine import Engine

    engine = Engine.load(model, device=device)
    for name, value in knobs.items():
        engine.knob_to_latent(name, value)  # unknown attribute -> ConfigError naming the valid ones
    song = read_midi(midi_file)
    vocab = engine.meta.vocab
    bars = song.bar_tokens(vocab)
    if len(bars) == 0:
        raise ConfigError(f"{midi_file}: no notes, so no bar to vary")
    # The engine call serve makes: the key lock reads the bar and the ones before it (serve's
    # recent bars; silent bars carry no scale, so they are left out as serve leaves them).
    played = [i for i, bar in enumerate(bars) if (vocab.pitch_table[bar] >= 0).any()]
    outputs = np.concatenate(
        [engine.vary(bar, knobs, amount=amount, seed=seed + i, n=variations, key_lock=key_lock,
                     candidates=candidates, rounds=rounds,
                     context=bars[[j for j in played if j < i][-(CONTEXT_BARS - 1):]])
         for i, bar in enumerate(bars)]
    )  # (bars * variations, 24): bar 0's variations, then bar 1's, ...  # fmt: skip
    velocities = [v for v in song.bar_velocities() for _ in range(variations)]
    write_midi(out, bars_to_notes(outputs, vocab, velocities), bpm=song.bpm)

    attrs_in = engine.attributes(bars)
    attrs_out = engine.attributes(outputs).reshape(len(bars), variations, -1)
    rows: list[dict[str, Any]] = [
        {"bar": i, "variation": k,
         "input": {a: round(float(v), 4) for a, v in zip(ATTRIBUTE_NAMES, attrs_in[i], strict=True)},
         "output": {a: round(float(v), 4) for a, v in zip(ATTRIBUTE_NAMES, attrs_out[i, k], strict=True)}}
        for i in range(len(bars)) for k in range(variations)
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps({"out": str(out), "bpm": song.bpm, "provider": engine.provider, "bars": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("bar", "var", *(f"{ATTRIBUTE_SHORT[a]} in→out" for a in ATTRIBUTE_NAMES),
                  title=f"{midi_file.name} -> {out.name}: {len(bars)} bars x {variations} at {song.bpm:g} bpm "
                        f"({engine.provider})")  # fmt: skip
    for row in rows:
        cells = [f"{row['input'][a]:.3f}→{row['output'][a]:.3f}" for a in ATTRIBUTE_NAMES]
        table.add_row(str(row["bar"]), str(row["variation"]), *cells)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``vary`` to the app."""
    app.command()(vary)
