"""Train and evaluate the dMelodies methods (β-VAE, Annealed-VAE, FactorVAE × RNN/CNN, AR-VAE) on a
budget that fits a CPU, and print one JSON document with their headline metrics.

The paper trains 100 epochs of ~1,850 batches of 512 on a GPU. Here every preset keeps its model,
objective and hyper-parameters, and only the schedule is scaled to ``--epochs`` x ``--batches``:
the β=0 warm-up becomes the first epoch and the 100,000-iteration ramp becomes half of the
remaining iterations, so each method still passes through warm-up, ramp and plateau. Metrics use
the dMelodies / disentanglement_lib definitions (20-bin MIG, Modularity, discrete SAP) on the test
split, plus greedy reconstruction accuracy.

    python bench/dmelodies_methods.py --epochs 3 --batches 200 --out runs/dmelodies

Last line of stdout: JSON ``{"budget": {...}, "runs": {preset: {...}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

PRESETS = (
    "dmelodies-betavae-rnn",
    "dmelodies-betavae-cnn",
    "dmelodies-annealed-rnn",
    "dmelodies-annealed-cnn",
    "dmelodies-factorvae-rnn",
    "dmelodies-factorvae-cnn",
    "dmelodies-arvae-rnn",
)


def scaled_recipe(preset: str, epochs: int, batches: int, lr: float, data: str) -> Any:
    """The preset with its schedule compressed to ``epochs`` x ``batches`` iterations."""
    from arvae_midi.train.recipe import load_recipe

    config = load_recipe(preset)
    warmup = 1 if config.warmup_epochs > 0 else 0
    ramp = max(1, (epochs - warmup) * batches // 2)
    return config.replace(
        data=data, epochs=epochs, max_train_batches=batches, max_val_batches=10, lr=lr,
        warmup_epochs=warmup, ramp_iterations=ramp, threads=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200, help="batches of 512 per epoch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", default="data/dmelodies.npz")
    parser.add_argument("--out", type=Path, default=Path("runs/dmelodies"))
    parser.add_argument("--eval-items", type=int, default=20000)
    parser.add_argument("--only", nargs="*", default=list(PRESETS), help="subset of presets")
    args = parser.parse_args()

    from arvae_midi.train.evaluate import evaluate_run
    from arvae_midi.train.trainer import train

    results: dict[str, Any] = {}
    for preset in args.only:
        run_dir = args.out / preset
        config = scaled_recipe(preset, args.epochs, args.batches, args.lr, args.data)
        t0 = time.perf_counter()
        if not (run_dir / "model.safetensors").exists():
            train(config, run_dir, resume=True)
        train_s = time.perf_counter() - t0
        result = evaluate_run(run_dir, split="test", max_items=args.eval_items)
        dm = result["metrics"]["sampled"].get("dmelodies", {})
        results[preset] = {
            "train_seconds": round(train_s, 1),
            "reconstruction_accuracy": result["reconstruction_accuracy"]["sampled"],
            **{key: dm[key]["mean"] for key in ("mig", "modularity", "sap") if key in dm},
            "ar_vae_interpretability": result["summary"].get("interpretability"),
        }
        print(preset, json.dumps(results[preset]), file=sys.stderr, flush=True)
    budget = {"epochs": args.epochs, "batches_per_epoch": args.batches, "batch_size": 512, "lr": args.lr,
              "samples": args.epochs * args.batches * 512}
    print(json.dumps({"budget": budget, "runs": results}))


if __name__ == "__main__":
    main()
