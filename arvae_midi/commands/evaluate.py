"""``arvae-midi evaluate`` (disentanglement metrics of a run) and ``arvae-midi plot`` (its PNGs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from arvae_midi.commands._progress import progress_bar
from arvae_midi.errors import ConfigError

_METRIC_LABELS = {
    "interpretability": "Interpretability",
    "mig": "MIG",
    "modularity": "Modularity",
    "sap": "SAP",
    "scc": "SCC",
}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def _table(title: str, columns: list[str]) -> Any:
    """A rich table with a left-aligned first column and right-aligned numeric ones."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column(columns[0])
    for col in columns[1:]:
        table.add_column(col, justify="right")
    return table


def _print_tables(result: dict[str, Any]) -> None:
    """Rich tables: AR-VAE metrics per attribute (sampled z), means for both codes, dMelodies ones."""
    from rich.console import Console

    console = Console()
    names = result["label_names"]
    sampled = result["metrics"]["sampled"]["ar_vae"]
    title = (f"{result['run_dir']}: {result['objective']}, {result['split']} split, {result['n_items']} items "
             f"(AR-VAE definitions, sampled z)")  # fmt: skip
    table = _table(title, ["metric", *names, "mean"])
    for key, label in _METRIC_LABELS.items():
        if key not in sampled:
            continue
        per = sampled[key].get("per_attribute", {})
        table.add_row(label, *(_fmt(per.get(n)) for n in names), _fmt(sampled[key]["mean"]))
    dims = sampled["interpretability"]["dims"]
    table.add_row("  best dim", *(str(dims[n]) for n in names), "")
    if result["reg_dims"]:
        table.add_row("  reg. dim", *(str(result["reg_dims"].get(n, "-")) for n in names), "")
    console.print(table)

    means = _table("Means over labels", ["metric", "sampled z", "mean z"])
    for key, label in _METRIC_LABELS.items():
        if key in sampled:
            means.add_row(label, *(_fmt(result["metrics"][rep]["ar_vae"][key]["mean"]) for rep in ("sampled", "mean")))
    recon = result["reconstruction_accuracy"]
    means.add_row("Recon. accuracy", f"{100 * recon['sampled']:.2f} %", f"{100 * recon['mean']:.2f} %")
    console.print(means)

    if "dmelodies" in result["metrics"]["sampled"]:
        dm = _table("dMelodies / disentanglement_lib definitions (sampled z)", ["metric", *names, "mean"])
        d = result["metrics"]["sampled"]["dmelodies"]
        for key in ("mig", "sap"):
            per = d[key]["per_attribute"]
            dm.add_row(_METRIC_LABELS[key], *(_fmt(per.get(n)) for n in names), _fmt(d[key]["mean"]))
        if "modularity" in d:
            dm.add_row("Modularity", *([""] * len(names)), _fmt(d["modularity"]["mean"]))
        if "explicitness" in d:
            ex = d["explicitness"]
            dm.add_row("Explicitness (test)", *([""] * len(names)), _fmt(ex["test"]))
        console.print(dm)
    console.print(f"[dim]wrote {Path(result['run_dir']) / 'eval.json'} in {result['seconds']:.1f} s[/dim]")


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `arvae-midi train`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
    split: Annotated[str, typer.Option(help="Held-out split: test or val.")] = "test",
    max_items: Annotated[
        int, typer.Option(help="Evaluate a seeded random subset of at most N items of the split (0 = all).")
    ] = 20_000,
    data: Annotated[
        Path | None, typer.Option(help="Dataset npz to use instead of the one recorded in the run.")
    ] = None,
    device: Annotated[str, typer.Option(help="torch device for encoding and decoding.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the item subset, z samples and kNN estimators.")] = 0,
) -> None:
    """Disentanglement metrics and greedy reconstruction accuracy of a run; writes RUN_DIR/eval.json."""
    from arvae_midi.train.evaluate import EvalConfig, evaluate_run

    if split not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, got {split!r}")
    if max_items < 0:
        raise ConfigError(f"--max-items must be >= 0 (0 = all), got {max_items}")
    cfg = EvalConfig(split=split, max_items=max_items or None, device=device, seed=seed)
    with progress_bar() as draw:
        result = evaluate_run(run_dir, config=cfg, data=data, progress=draw)
    if as_json:
        from arvae_midi.train.run import json_safe

        typer.echo(json.dumps(json_safe(result), indent=2))
        return
    _print_tables(result)


def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `arvae-midi train`.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the PNGs (default RUN_DIR/plots).")] = None,
    grid: Annotated[int, typer.Option(help="Attribute-surface grid points per axis (the paper used 200).")] = 60,
    split: Annotated[str, typer.Option(help="Split whose bars are encoded for traversals and scatter.")] = "test",
    data: Annotated[
        Path | None, typer.Option(help="Dataset npz to use instead of the one recorded in the run.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fixed latent draw and the chosen bars.")] = 0,
    label: Annotated[
        list[str] | None, typer.Option(help="Only plot this label (repeatable; default every label).")
    ] = None,
) -> None:
    """Attribute surfaces, latent traversals, loss curves and latent scatter plots as PNG files."""
    from arvae_midi.train.plots import PlotConfig, plot_run

    if split not in ("test", "val", "train"):
        raise ConfigError(f"--split must be test, val or train, got {split!r}")
    cfg = PlotConfig(grid=grid, split=split, seed=seed, labels=tuple(label) if label else None)
    with progress_bar() as draw:
        paths = plot_run(run_dir, out, config=cfg, data=data, progress=draw)
    for path in paths:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``plot`` to the app."""
    app.command()(evaluate)
    app.command()(plot)
