"""``arvae-midi calibrate``: re-calibrate a model file's knobs from a dataset, in place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from arvae_midi.errors import ConfigError


def calibrate(
    model: Annotated[Path, typer.Argument(help="Model file (.onnx) whose calibration is rewritten.")],
    data: Annotated[Path, typer.Option(help="Measure dataset npz: training bars set the knob ranges, "
                                            "held-out bars the latent curves.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of in place.")] = None,
    calibration_bars: Annotated[int, typer.Option(min=1, help="Held-out bars decoded per grid point.")] = 512,
    points: Annotated[int, typer.Option(min=2, help="Latent grid points per attribute.")] = 33,
    as_json: Annotated[bool, typer.Option("--json", help="Print the knob ranges as JSON.")] = False,
) -> None:
    """Knob 0..127 := the attribute's 2nd..98th percentile over the dataset's training bars.

    Only the metadata's calibration changes; the file is replaced atomically once the engine
    has loaded the new one, so an error leaves MODEL as it was. Needs the [export] extra (onnx).
    """
    try:
        from arvae_midi.export.recalibrate import recalibrate
    except ModuleNotFoundError as e:
        raise ConfigError(f"calibrate needs {e.name}: pip install 'arvae-midi[export]'") from e
    report = recalibrate(model, data, out=out, calibration_bars=calibration_bars, points=points)
    ranges = {a: [round(lo, 4), round(hi, 4)] for a, (lo, hi) in report.target_ranges.items()}
    if as_json:
        typer.echo(json.dumps({"model": str(report.path), "train_bars": report.train_bars,
                               "calibration_bars": report.calibration_bars, "knob_ranges": ranges}))
        return
    typer.echo(f"{report.path}: knob ranges from {report.train_bars} training bars, curves from "
               f"{report.calibration_bars} {report.heldout_split} bars")
    for name, (lo, hi) in ranges.items():
        typer.echo(f"  {name}: knob 0 -> {lo}, knob 127 -> {hi}")


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the app."""
    app.command()(calibrate)
