"""``arvae-midi export`` (run folder -> model file) and ``arvae-midi info`` (what a model file holds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arvae_midi.commands._progress import progress_bar
from arvae_midi.errors import ConfigError

if TYPE_CHECKING:
    from arvae_midi.engine.engine import Engine


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `arvae-midi train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (.onnx).")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset npz for calibration and parity (default: the run's).")
    ] = None,
    calibration_bars: Annotated[int, typer.Option(min=1, help="Held-out bars decoded per calibration point.")] = 512,
    calibration_points: Annotated[int, typer.Option(min=2, help="Latent grid points per attribute.")] = 33,
    parity_bars: Annotated[int, typer.Option(min=1, help="Held-out bars checked torch vs onnxruntime.")] = 256,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Export a trained run to one ONNX model file: encoder + greedy decoder, calibration, metadata.

    The export fails (and writes nothing) unless onnxruntime reproduces torch on held-out bars:
    identical greedy tokens and mu within 1e-4.
    """
    try:
        from arvae_midi.export.exporter import ExportConfig, export_run
    except ModuleNotFoundError as e:  # torch / onnx come with the `export` extra
        raise ConfigError(f"export needs {e.name}: pip install 'arvae-midi[export]'") from e

    config = ExportConfig(calibration_points=calibration_points, calibration_bars=calibration_bars,
                          parity_bars=parity_bars)
    with progress_bar(progress) as draw:
        report = export_run(run_dir, out, config, data=data, progress=draw)
    typer.echo(
        f"wrote {report.path} ({report.size_bytes / 1e6:.2f} MB): parity on {report.parity_bars} held-out bars "
        f"(identical tokens, max |d mu| {report.max_mu_diff:.1e}); calibrated "
        f"{', '.join(report.attributes) or 'no attributes'} on {report.calibration_bars} bars"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def _print_info(engine: Engine, size: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from arvae_midi.engine.calibration import knob_attribute, knob_table

    meta, console = engine.meta, Console(soft_wrap=True)  # long lines stay whole (greppable)
    recipe, export_info, data = meta.recipe, meta.document.export, meta.data
    console.print(f"[bold]{engine.path}[/bold] ({size / 1e6:.2f} MB), format {meta.document.format_version}")
    console.print(
        f"vocabulary: {len(meta.vocab)} tokens (hold, rest, MIDI {meta.vocab.low}..{meta.vocab.high}); "
        f"grid: {meta.grid.ticks_per_bar} ticks per bar; latent: {meta.latent_dim} dims"
    )
    if recipe:
        console.print(f"recipe: {recipe.get('name', '?')} ({recipe.get('objective', '?')}), "
                      f"{recipe.get('epochs', '?')} epochs, data {recipe.get('data', '?')}")
    if data:
        console.print("data: " + ", ".join(f"{k} {v}" for k, v in data.items()))
    if export_info:
        console.print("export: " + ", ".join(f"{k} {v}" for k, v in export_info.items()))

    summary = meta.metrics.get("summary") if isinstance(meta.metrics, dict) else None
    if isinstance(summary, dict) and summary:
        split = meta.metrics.get("split", "?")
        table = Table("metric", "value", title=f"metrics ({split} split, {meta.metrics.get('n_items', '?')} items)")
        for key, value in summary.items():
            table.add_row(key, _fmt(value))
        console.print(table)
    else:
        console.print("metrics: none (run `arvae-midi evaluate RUN_DIR` before exporting)")

    if not meta.attributes:
        console.print("calibration: none (no regularised attribute: knobs have no effect)")
        return
    table = Table("attribute", "dim", "latent range", "knob 0", "knob 64", "knob 127", "median IQR",
                  title="calibration (knob targets in attribute units; latent start of the closed loop)")
    for name in meta.attributes:
        cal = meta.calibration[name]
        expected = knob_attribute(cal)
        latents = knob_table(cal)
        iqr = float(sum(hi - lo for lo, hi in zip(cal.q25, cal.q75, strict=True)) / len(cal.q25))
        table.add_row(name, str(cal.dim), f"{latents[0]:+.2f} .. {latents[-1]:+.2f}",
                      f"{expected[0]:.3f}", f"{expected[64]:.3f}", f"{expected[127]:.3f}", f"{iqr:.3f}")
    console.print(table)


def info(
    model: Annotated[Path | None, typer.Argument(help="Model file (default: the shipped default model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
) -> None:
    """Show what a model file holds: vocabulary, latent size, recipe, metrics, calibration."""
    from arvae_midi.engine.engine import Engine

    engine = Engine.load(model, device="cpu")
    size = engine.path.stat().st_size
    if as_json:
        doc = json.loads(engine.meta.to_json())
        typer.echo(json.dumps({"path": str(engine.path), "bytes": size, "metadata": doc}, indent=2))
        return
    _print_info(engine, size)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``info`` to the app."""
    app.command()(export)
    app.command()(info)
