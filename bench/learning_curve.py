"""Quality per wall-clock minute: two (or more) training recipes on the same data and seed.

Each recipe trains with the project's trainer (``arvae_midi.train.trainer.train``) in its own
process, all side by side (``--sequential``: one after the other), one epoch at a time with
``resume=True``. Whenever ``--eval-every`` minutes of *training* wall time (the trainer's own
clock: epochs plus their validation, not the evaluations below) have passed, the run is evaluated
on a fixed, seeded subset of the held-out **test** tunes:

* reconstruction accuracy: greedy (argmax-feedback) decoding of a sampled z, every token counts;
* mean Interpretability (AR-VAE definition) of the sampled z against the four attributes.

Outputs under ``--out``: ``RECIPE/`` run folders (resumable: ``arvae-midi train --resume``),
``RECIPE.curve.jsonl`` (one point per evaluation), ``learning_curve.png`` (quality against
minutes, and against measures seen) and, last on stdout, one JSON line: per recipe the final
point, the quality at the longest time every recipe reached and at the most measures every recipe
saw (both interpolated), and ``last_not_worse_than_first``: whether the last recipe is at least as
good as the first (the baseline) on both metrics at that common time, within the evaluation's
noise (:data:`TOLERANCE`). A worker re-run on the same ``--out`` continues its run and its curve
(``--worker RECIPE --minutes LONGER``); ``--report-only`` redraws the plot and the JSON line.

    python bench/learning_curve.py --recipes default default-fast --minutes 40 --eval-every 4 \\
        --data data/folk-chorales.npz --out runs/learning-curve [--threads 1] [--eval-items 4000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/train_throughput.py

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

#: A recipe may be this much (absolute) below the baseline and still count as "not worse":
#: the evaluation's own sampling noise on a few thousand test bars.
TOLERANCE = {"reconstruction_accuracy": 0.002, "interpretability": 0.005}


def _evaluate(run_dir: Path, tokens: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Greedy recon accuracy and mean Interpretability of sampled z on the given test rows."""
    from arvae_midi.train import metrics as ar
    from arvae_midi.train.checkpoint import load_run
    from arvae_midi.train.evaluate import encode_tokens, greedy_decode

    run = load_run(run_dir)
    _, z = encode_tokens(run.model, tokens, seed=0)
    recon = ar.token_accuracy(greedy_decode(run.model, z), tokens)
    _, _, interp = ar.interpretability(z, labels)
    return {"reconstruction_accuracy": recon, "interpretability": interp}


def worker(args: argparse.Namespace) -> None:
    """Train one recipe epoch by epoch, evaluating every ``eval_every`` minutes of training."""
    import torch

    from arvae_midi.train.data import load_npz
    from arvae_midi.train.evaluate import select_items
    from arvae_midi.train.recipe import load_recipe
    from arvae_midi.train.trainer import train

    cfg = load_recipe(args.worker)
    changes: dict[str, Any] = {"data": args.data, "epochs": 10_000}
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.seed is not None:
        changes["seed"] = args.seed
    cfg = cfg.replace(**changes)
    torch.set_num_threads(cfg.threads or 1)
    data = load_npz(args.data, split_seed=cfg.seed)
    idx = select_items(data, "test", args.eval_items, seed=0)
    tokens, labels = data.tokens[idx], data.labels[idx][:, data.label_index(cfg.reg_names or cfg.regularized)]
    name = Path(args.worker).stem
    run_dir, curve = Path(args.out) / name, Path(args.out) / f"{name}.curve.jsonl"
    epochs, next_eval, budget = 0, 0.0, 60.0 * args.minutes
    if curve.exists() and run_dir.exists():  # resumed bench: continue the curve
        points = [json.loads(ln) for ln in curve.read_text().splitlines() if ln.strip()]
        if points:
            next_eval = 60.0 * (points[-1]["minutes"] + args.eval_every)
    while True:
        summary = train(cfg.replace(epochs=epochs + 1), run_dir, resume=True)
        epochs = summary.epochs
        done = summary.seconds >= budget
        if summary.seconds >= next_eval or done:
            point = {
                "recipe": name,
                "minutes": round(summary.seconds / 60.0, 3),
                "epochs": epochs,
                "measures": summary.step * cfg.batch_size,
                "val_accuracy": summary.last.get("val_accuracy"),
                **_evaluate(run_dir, tokens, labels),
            }
            with curve.open("a", encoding="utf-8") as f:
                f.write(json.dumps(point) + "\n")
            print(json.dumps(point), flush=True)
            next_eval = summary.seconds + 60.0 * args.eval_every
        if done:
            return


def _interp(points: list[dict[str, Any]], x: float, key: str, axis: str = "minutes") -> float:
    """``key`` linearly interpolated at ``axis`` = x (minutes or measures)."""
    return float(np.interp(x, [p[axis] for p in points], [p[key] for p in points]))


def _plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """2 x 2 panels: recon accuracy and Interpretability against minutes (top) and measures (bottom)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7), dpi=110)
    axes = fig.subplots(2, 2)
    titles = {"reconstruction_accuracy": "reconstruction accuracy (greedy, sampled z, test)",
              "interpretability": "mean Interpretability (sampled z, test)"}  # fmt: skip
    for row, (axis, xlabel, scale) in enumerate(
        (("minutes", "training wall time (minutes)", 1.0), ("measures", "measures seen (millions)", 1e-6))
    ):
        for ax, (key, title) in zip(axes[row], titles.items(), strict=True):
            for name, pts in curves.items():
                ax.plot([p[axis] * scale for p in pts], [p[key] for p in pts], marker="o", label=name)
            ax.set_xlabel(xlabel)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    """Run the workers (or one worker with ``--worker``), then plot and print the JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--recipes",
        nargs="+",
        default=["default", "default-fast"],
        help="preset names or TOML paths; the first is the baseline",
    )
    p.add_argument("--data", default="data/folk-chorales.npz")
    p.add_argument("--out", default="runs/learning-curve")
    p.add_argument("--minutes", type=float, default=20.0, help="training wall time per recipe")
    p.add_argument("--eval-every", type=float, default=3.0, help="minutes of training between evaluations")
    p.add_argument("--eval-items", type=int, default=4000, help="test bars evaluated (seeded subset)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per recipe (default: the recipe's)")
    p.add_argument("--seed", type=int, default=None, help="seed for every recipe (default: the recipes')")
    p.add_argument("--sequential", action="store_true", help="one recipe after the other instead of side by side")
    p.add_argument("--report-only", action="store_true", help="no training: plot and summarise the curves in --out")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    forwarded = [
        "--data",
        args.data,
        "--out",
        str(out),
        "--minutes",
        str(args.minutes),
        "--eval-every",
        str(args.eval_every),
        "--eval-items",
        str(args.eval_items),
    ]
    if args.threads is not None:
        forwarded += ["--threads", str(args.threads)]
    if args.seed is not None:
        forwarded += ["--seed", str(args.seed)]
    start = time.perf_counter()
    procs = []
    for recipe in [] if args.report_only else args.recipes:
        cmd = [sys.executable, __file__, "--worker", recipe, *forwarded]
        procs.append(subprocess.Popen(cmd))
        if args.sequential and procs[-1].wait() != 0:
            raise SystemExit(f"recipe {recipe} failed")
    if not args.sequential and any([proc.wait() != 0 for proc in procs]):  # a list: wait for every one
        raise SystemExit("a recipe failed")
    curves = {}
    for recipe in args.recipes:
        name = Path(recipe).stem
        curves[name] = [json.loads(ln) for ln in (out / f"{name}.curve.jsonl").read_text().splitlines() if ln.strip()]
    _plot(curves, out / "learning_curve.png")
    common = min(pts[-1]["minutes"] for pts in curves.values())
    common_measures = min(pts[-1]["measures"] for pts in curves.values())
    result: dict[str, Any] = {"minutes_common": round(common, 2), "measures_common": common_measures, "recipes": {}}
    for name, pts in curves.items():
        result["recipes"][name] = {
            "final": pts[-1],
            "at_common": {k: round(_interp(pts, common, k), 4) for k in TOLERANCE},
            "at_common_measures": {k: round(_interp(pts, common_measures, k, "measures"), 4) for k in TOLERANCE},
            "measures_per_minute": round(pts[-1]["measures"] / max(pts[-1]["minutes"], 1e-9), 1),
        }
    base, last = (result["recipes"][Path(r).stem]["at_common"] for r in (args.recipes[0], args.recipes[-1]))
    result["last_not_worse_than_first"] = all(last[k] >= base[k] - tol for k, tol in TOLERANCE.items())
    result["tolerance"] = TOLERANCE
    result["png"] = str(out / "learning_curve.png")
    result["bench_seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
