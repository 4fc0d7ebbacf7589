"""Reproduce the dMelodies benchmark grid: train, evaluate, write the results file and the figures.

One command runs the paper's grid (β-VAE β ∈ {0.2, 1, 4}, Annealed-VAE C ∈ {25, 50, 75},
FactorVAE γ ∈ {1, 10, 50}; CNN and/or RNN VAE; any seeds) at a given budget
(:mod:`arvae_midi.train.grid`). Every run checkpoints after each epoch and resumes where it
stopped, so the command can be interrupted and re-run; evaluated runs are skipped.

    # the budget of docs/results.md, two runs at a time (one thread each)
    python bench/dmelodies_grid.py --grid default --budget 10x250 --rnn-budget 10x100 --jobs 2 \\
        --out /work/runs/i15 --results docs/results/dmelodies.json --figures docs/img
    # the paper's budget on a GPU: 100 full epochs, lr 1e-4, seeds 0-2
    python bench/dmelodies_grid.py --grid full --budget paper --seeds 0 1 2 --out runs/dmelodies-paper

``--collect`` skips training and only gathers the finished runs under ``--out`` into the results
file and figures. Last line of stdout: JSON ``{"grid", "budget", "rnn_budget", "finished",
"planned", "runs": {run id: {recon, mig, modularity, sap}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    from arvae_midi.train import grid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="default", choices=grid.GRIDS, help="which runs (see plan_grid)")
    parser.add_argument("--budget", default="10x250", help="EPOCHSxBATCHES of 512 per run, or 'paper'")
    parser.add_argument("--rnn-budget", default=None, help="budget of the RNN runs (default: --budget)")
    parser.add_argument("--batch-size", type=int, default=512, help="melodies per batch (the paper: 512)")
    parser.add_argument("--lr", type=float, default=None, help="Adam lr (default 1e-3; 1e-4 for 'paper')")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-items", type=int, default=10_000, help="test melodies evaluated per run")
    parser.add_argument("--data", default="data/dmelodies.npz")
    parser.add_argument("--out", type=Path, default=Path("runs/dmelodies-grid"), help="root of the run folders")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time (one thread each)")
    parser.add_argument("--max-epochs", type=int, default=None, help="train each run at most this many more epochs")
    parser.add_argument("--only", nargs="*", default=None, help="run ids (or parts of them) to keep")
    parser.add_argument("--collect", action="store_true", help="do not train; gather finished runs only")
    parser.add_argument("--results", type=Path, default=None, help="write the records here (JSON)")
    parser.add_argument("--report", type=Path, default=None, help="write tables + findings here (markdown)")
    parser.add_argument("--figures", type=Path, default=None, help="write figures 3-6 (PNG) into this folder")
    parser.add_argument("--note", default="", help="free text stored in the results file")
    args = parser.parse_args(argv)

    extra: dict[str, Any] = {"eval_items": args.eval_items, "batch_size": args.batch_size}
    if args.lr is not None:
        extra["lr"] = args.lr
    budget = grid.Budget.parse(args.budget, **extra)
    rnn_budget = grid.Budget.parse(args.rnn_budget, **extra) if args.rnn_budget else budget
    specs = grid.plan_grid(args.grid, args.seeds)
    if args.only:
        specs = [s for s in specs if any(part in s.run_id for part in args.only)]

    def progress(event: str, run_id: str, details: dict[str, Any]) -> None:
        shown = {k: details[k] for k in ("epochs_done", "reconstruction_accuracy", "mig", "sap") if k in details}
        print(f"{event:9s} {run_id} {json.dumps(shown)}", file=sys.stderr, flush=True)

    if not args.collect:
        grid.run_grid(specs, {"cnn": budget, "rnn": rnn_budget}, args.data, args.out, jobs=args.jobs,
                      max_epochs=args.max_epochs, progress=progress)  # fmt: skip
    records = grid.collect(args.out, specs)
    from arvae_midi.train import grid_report

    findings = grid_report.check_findings(records)
    if args.results is not None:
        grid.write_results(args.results, records, note=args.note, findings=findings)
    if args.report is not None:
        args.report.write_text(grid_report.report_markdown(records), encoding="utf-8")
    if args.figures is not None and records:
        from arvae_midi.train.plots_dmelodies import write_figures

        for path in write_figures(records, args.figures):
            print(f"figure    {path}", file=sys.stderr)
    summary = {
        "grid": args.grid, "budget": args.budget, "rnn_budget": args.rnn_budget or args.budget,
        "finished": len(records), "planned": len(specs),
        "findings": {f["finding"]: f["holds"] for f in findings},
        "runs": {r["run_id"]: {k: round(r[k], 4) for k in ("reconstruction_accuracy", "mig", "modularity", "sap")}
                 for r in records},
    }  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
