"""``arvae-midi fit PATH... --out MODEL.onnx``: your MIDI files -> a fine-tuned model for ``serve``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from arvae_midi.commands._progress import progress_bar

if TYPE_CHECKING:
    from arvae_midi.train.fit import FitReport


def _print_report(report: FitReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    before, after = report.before, report.after
    table = Table(
        "figure (held-out bars)",
        "before",
        "after",
        "change",
        title=f"{after.bars} bars of {report.dataset.files_per_split[2]} held-out files "
        f"(knobs: {after.sweep_bars} of them, 9 positions each)",
    )
    table.add_row(
        "reconstruction accuracy",
        f"{before.reconstruction:.1%}",
        f"{after.reconstruction:.1%}",
        f"{100 * (after.reconstruction - before.reconstruction):+.1f} points",
    )
    table.add_row(
        "bars reproduced exactly",
        f"{before.exact_bars:.1%}",
        f"{after.exact_bars:.1%}",
        f"{100 * (after.exact_bars - before.exact_bars):+.1f} points",
    )
    for name in after.spearman:
        b = before.spearman.get(name)
        table.add_row(
            f"knob Spearman: {name}",
            "-" if b is None else f"{b:.3f}",
            f"{after.spearman[name]:.3f}",
            "-" if b is None else f"{after.spearman[name] - b:+.3f}",
        )
    console.print(table)
    for warning in report.warnings():
        console.print(f"note: {warning}", highlight=False)
    console.print(
        f"fine-tuned {report.steps} steps in {report.train_seconds / 60:.1f} min; "
        f"total {report.seconds / 60:.1f} min; run folder {report.run_dir}"
    )
    console.print(f"wrote {report.out}; play it with:")
    console.print(f"  arvae-midi serve --model {report.out}", highlight=False)


def fit(
    paths: Annotated[list[Path], typer.Argument(help="MIDI files and folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (.onnx).")],
    minutes: Annotated[float, typer.Option("--minutes", min=0.01, help="Wall-clock budget of the whole fit.")] = 10.0,
    track: Annotated[str | None, typer.Option("--track", help="The melody track, by name or 1-based index.")] = None,
    channel: Annotated[int | None, typer.Option("--channel", min=1, max=16, help="The melody channel (1..16).")] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run folder (default: runs/<name> next to --out).")
    ] = None,
    init: Annotated[str, typer.Option("--init", help="Start from 'default' (shipped model) or a RUN_DIR.")] = "default",
    calibration_bars: Annotated[
        int, typer.Option("--calibration-bars", min=1, hidden=True, help="Held-out bars the export calibrates on.")
    ] = 512,
    figure_bars: Annotated[
        int, typer.Option("--figure-bars", min=1, hidden=True, help="Held-out bars of the before/after figures.")
    ] = 100,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Fine-tune the default model on your own MIDI files: dataset, training within --minutes,
    evaluation on held-out files, export. Prints the figures before / after and the serve line."""
    from arvae_midi.train.fit import FitConfig
    from arvae_midi.train.fit import fit as run_fit
    from arvae_midi.train.midi_dataset import MidiDatasetConfig

    config = FitConfig(
        minutes=minutes,
        init=init,
        run_dir=str(run_dir) if run_dir else None,
        calibration_bars=calibration_bars,
        figure_bars=figure_bars,
    )
    with progress_bar(progress) as draw:
        report = run_fit(paths, out, config, MidiDatasetConfig(track=track, channel=channel), progress=draw)
    for path, reason in report.dataset.skipped_files:
        typer.echo(f"skipped {path}: {reason}")
    d = report.dataset
    typer.echo(
        f"{d.files_used} of {d.files_found} files used: {d.bars} bars "
        f"({d.files_per_split[0]} / {d.files_per_split[1]} / {d.files_per_split[2]} files train / val / "
        f"test)" + "".join(f"; skipped {n} passages in {m}" for m, n in sorted(d.skipped_passages.items()))
    )
    _print_report(report)


def register(app: typer.Typer) -> None:
    """Add ``fit`` to the app."""
    app.command()(fit)
