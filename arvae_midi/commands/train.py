"""``arvae-midi train``: train a preset (or a TOML recipe) into a run folder.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m arvae_midi.cli train --preset ...``;
every process runs this command, rank 0 alone prints and writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from arvae_midi.commands._progress import progress_bar
from arvae_midi.errors import ConfigError


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def train(
    preset: Annotated[
        str | None, typer.Option("--preset", "-p", help="Preset name (see --list) or a TOML recipe file.")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset npz overriding the recipe's.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: runs/<preset name>).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Number of epochs (total).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (also the dMelodies split).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    max_batches: Annotated[
        int | None, typer.Option("--max-batches", min=1, help="At most this many batches per epoch (quick runs).")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads per process.")] = None,
    init: Annotated[
        str | None,
        typer.Option("--init", help="Fine-tune from 'default' (the shipped model) or a RUN_DIR, with the "
                     "finetune preset's learning rate and steps."),
    ] = None,
    list_presets: Annotated[bool, typer.Option("--list", help="List the training presets and exit.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
) -> None:
    """Train a VAE (AR-VAE, beta-VAE, Annealed-VAE, FactorVAE) from a preset into a run folder."""
    from arvae_midi import presets

    if list_presets:
        for name in presets.list_presets():
            typer.echo(name)
        return
    from arvae_midi.train.recipe import load_recipe
    from arvae_midi.train.trainer import train as run_training

    if preset is not None:
        config = load_recipe(preset)
    elif resume and out is not None:
        from arvae_midi.train.checkpoint import checkpoint_recipe

        config = checkpoint_recipe(out)
    else:
        raise ConfigError("give --preset NAME|FILE (or --resume with --out RUN_DIR); presets: "
                          + ", ".join(presets.list_presets()))
    if init is not None:
        from arvae_midi.train.finetune import finetune_recipe

        config = finetune_recipe(config, init)
    changes: dict[str, Any] = {}
    if data is not None:
        changes["data"] = str(data)
    if epochs is not None:
        changes["epochs"] = epochs
    if device is not None:
        changes["device"] = device
    if seed is not None:
        changes["seed"] = seed
    if max_batches is not None:
        changes["max_train_batches"] = max_batches
    if threads is not None:
        changes["threads"] = threads
    config = config.replace(**changes)
    run_dir = out if out is not None else Path("runs") / config.name
    if _is_main():
        typer.echo(f"{'resuming' if resume else 'training'} {config.name} ({config.objective}, data "
                   f"{config.data}) in {run_dir}"
                   + (f", from {config.init} (lr {config.lr:g}, {config.epochs} epochs)" if config.init else ""))
    with progress_bar(progress and _is_main()) as draw:
        summary = run_training(config, run_dir, resume=resume, progress=draw)
    if _is_main():
        last = summary.last
        parts = [f"done: {summary.epochs} epochs, {summary.step} steps in {_duration(summary.seconds)}"]
        if "val_accuracy" in last:
            parts.append(f"val accuracy {last['val_accuracy']:.4f}")
        if "val_ar" in last:
            parts.append(f"val AR loss {last['val_ar']:.4f}")
        typer.echo(", ".join(parts) + f" -> {run_dir}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the app."""
    app.command()(train)
