"""``arvae-midi dataset``: build a training set (dMelodies, folk, chorales, folk-chorales) as npz."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from arvae_midi.commands._progress import progress_bar


class DatasetName(str, enum.Enum):
    """Datasets the command builds."""

    dmelodies = "dmelodies"
    folk = "folk"
    chorales = "chorales"
    folk_chorales = "folk-chorales"
    midi = "midi"


class Voices(str, enum.Enum):
    """Chorale lines: the soprano only, or all four voices as separate lines."""

    soprano = "soprano"
    all = "all"


def dataset(
    name: Annotated[DatasetName, typer.Argument(help="Which dataset to build.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz file (e.g. data/folk.npz).")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="midi: MIDI files and folders (searched recursively).")
    ] = None,
    track: Annotated[
        str | None, typer.Option("--track", help="midi: the melody track, by name or 1-based index.")
    ] = None,
    channel: Annotated[
        int | None, typer.Option("--channel", min=1, max=16, help="midi: the melody channel (1..16).")
    ] = None,
    voices: Annotated[
        Voices, typer.Option(help="Chorales: soprano line only, or all four voices as separate lines.")
    ] = Voices.soprano,
    jobs: Annotated[int, typer.Option(min=1, help="Parallel parsing processes.")] = 2,
    strict_bars: Annotated[
        bool, typer.Option("--strict-bars", help="Drop tunes whose barlines had to be realigned with a rest.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Parse again instead of reading the cache.")] = False,
    only: Annotated[
        str | None,
        typer.Option(
            hidden=True, help="Comma-separated globs on corpus file names, e.g. 'ryansMammoth/A*,bach/bwv26.6'."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(hidden=True, min=1, help="First N files of each corpus.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Build a dataset file: parse (cached, in parallel), augment by transposition, split by tune.

    `dataset midi PATH... --out FILE.npz` builds one from your own MIDI files (4/4 passages, the
    highest voice of the non-drum channels unless --track / --channel choose the line).
    """
    if name is DatasetName.midi:
        from arvae_midi.commands.dataset_midi import dataset_midi

        dataset_midi(paths or [], out, track, channel, as_json)
        return
    if paths or track is not None or channel is not None:
        raise typer.BadParameter("file and folder arguments, --track and --channel are for `dataset midi` only")
    if name is DatasetName.dmelodies:
        from arvae_midi.train.dmelodies import save_dmelodies

        with progress_bar() as draw:
            _print_dmelodies(save_dmelodies(out, progress=draw), as_json)
        return
    from arvae_midi.train.corpus import CorpusConfig, save_dataset

    config = CorpusConfig(
        voices=voices.value, jobs=jobs, use_cache=not no_cache, only=only, limit=limit, strict_bars=strict_bars
    )
    with progress_bar() as draw:
        summary = save_dataset(name.value, out, config, progress=draw)
    if as_json:
        import json

        typer.echo(json.dumps(summary.to_dict()))
        return
    _print_summary(summary.to_dict())


def _print_dmelodies(summary: dict[str, Any], as_json: bool) -> None:
    import json

    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(
        f"dmelodies: {summary.get('melodies')} melodies -> {summary.get('path')} "
        f"in {float(summary.get('seconds', 0.0)):.1f} s"
    )


def _print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("", "train", "val", "test", "total", title=f"{s['name']} -> {s['path']}")
    for label, key, total in (
        ("tunes", "tunes_per_split", "tunes"),
        ("bars", "bars_per_split", "bars"),
        ("bars x transpositions", "rows_per_split", "rows"),
    ):
        table.add_row(label, *(f"{v:,}" for v in s[key]), f"{s[total]:,}")
    console.print(table)
    dropped = s["dropped"]
    console.print(f"dropped {sum(dropped.values()):,} lines:")
    for reason, count in dropped.items():
        console.print(f"  {count:>6,}  {reason}")
    console.print(
        f"kept lines with chords reduced to the top note: {s['reduced']:,}; "
        f"with a rest inserted to realign barlines: {s['realigned']:,}"
    )
    console.print(f"{s['files']:,} files ({s['cached_files']:,} from the cache) in {s['seconds']:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``dataset`` to the app."""
    app.command()(dataset)
