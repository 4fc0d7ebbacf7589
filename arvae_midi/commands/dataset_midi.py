"""``arvae-midi dataset midi PATH... --out FILE.npz``: a dataset from the user's own MIDI files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from arvae_midi.commands._progress import progress_bar
from arvae_midi.errors import ConfigError

if TYPE_CHECKING:
    from arvae_midi.train.midi_dataset import MidiDatasetSummary


def build_with_progress(
    paths: list[Path], out: Path, track: str | None, channel: int | None, show: bool = True
) -> MidiDatasetSummary:
    """Build and save the dataset with a progress bar on stderr; returns the summary."""
    from arvae_midi.train.midi_dataset import MidiDatasetConfig, save_midi_dataset

    if not paths:
        raise ConfigError("give MIDI files or folders: arvae-midi dataset midi PATH... --out FILE.npz")
    config = MidiDatasetConfig(track=track, channel=channel)
    with progress_bar(show) as draw:
        return save_midi_dataset(paths, out, config, progress=draw)

def print_summary(s: MidiDatasetSummary) -> None:
    """Skipped files one line each, then the counts per split and the skip reasons."""
    for path, reason in s.skipped_files:
        typer.echo(f"skipped {path}: {reason}")
    typer.echo(f"{s.files_found} files found, {s.files_read} read, {s.files_used} used -> {s.path}")
    typer.echo(
        f" files {s.files_per_split[0]} / {s.files_per_split[1]} / {s.files_per_split[2]}   "
        f"bars {s.bars_per_split[0]:,} / {s.bars_per_split[1]:,} / {s.bars_per_split[2]:,}   "
        f"bars x transpositions {s.rows_per_split[0]:,} / {s.rows_per_split[1]:,} / "
        f"{s.rows_per_split[2]:,} (train / val / test)"
    )
    for reason, count in s.skip_groups().items():
        typer.echo(f" skipped {count} file{'s' if count != 1 else ''}: {reason}")
    for meter, count in sorted(s.skipped_passages.items()):
        typer.echo(
            f" skipped {count} passage{'s' if count != 1 else ''} in {meter} "
            f"({s.skipped_bars.get(meter, 0)} bars): only 4/4 becomes bars"
        )
    if s.cut_files:
        typer.echo(f" {s.cut_files} file(s) wider than the model's pitch range were transposed in passages that fit")


def dataset_midi(paths: list[Path], out: Path, track: str | None, channel: int | None, as_json: bool) -> None:
    """The ``dataset midi`` command body."""
    summary = build_with_progress(paths, out, track, channel, show=not as_json)
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
        return
    print_summary(summary)
