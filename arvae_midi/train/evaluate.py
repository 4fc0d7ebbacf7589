"""Evaluate a run folder: encode a held-out split, disentanglement metrics, greedy reconstruction.

:func:`evaluate_run` loads ``RUN_DIR`` (:func:`arvae_midi.train.checkpoint.load_run`) and its
dataset, encodes a seeded random subset of the split in batches, and reports, for the sampled z
(as the reference, docs/reference.md §5.3) and for the posterior means:

* the AR-VAE metrics (:mod:`arvae_midi.train.metrics`) against the run's labels (the four
  attributes, or the nine dMelodies factors treated as continuous values);
* for dMelodies, also the disentanglement_lib metrics (:mod:`arvae_midi.train.metrics_dl`);
* token accuracy of greedy (argmax-feedback, no teacher forcing) reconstructions.

The result is written to ``RUN_DIR/eval.json``. Its ``summary`` holds the headline numbers: the
AR-VAE definitions on sampled z, as in the AR-VAE paper. Everything is seeded, so evaluating the
same run twice gives the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arvae_midi.errors import ConfigError
from arvae_midi.progress import Progress, ProgressFn, reporter
from arvae_midi.train import metrics as ar
from arvae_midi.train import metrics_dl as dl
from arvae_midi.train.run import (
    encode_tokens,
    greedy_decode,
    load_run_data,
    select_items,
    write_eval,
)

if TYPE_CHECKING:
    pass

#: Metrics in table order; all present in every ``summary``.
SUMMARY_KEYS = ("interpretability", "mig", "modularity", "sap", "scc", "reconstruction_accuracy")


@dataclass(frozen=True)
class EvalConfig:
    """How a run is evaluated; the defaults keep a 32-dim model on CPU within a minute or two."""

    split: str = "test"
    #: Items evaluated: a seeded random subset of the split (None = all). The kNN MI runs on at
    #: most ``knn_max_points`` of them, the dMelodies classifiers on at most 10,000 / 5,000.
    max_items: int | None = 20_000
    batch_size: int = 512
    seed: int = 0  # item subset, z sampling and the kNN estimators
    knn_max_points: int = ar.KNN_MAX_POINTS
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, got {self.split!r}")
        if self.max_items is not None and self.max_items < 10:
            raise ConfigError(f"max_items must be >= 10 (metrics need points), got {self.max_items}")
        if self.batch_size < 1 or self.knn_max_points < 10:
            raise ConfigError("batch_size must be >= 1 and knn_max_points >= 10")


def _metrics_for(
    z: np.ndarray, labels: np.ndarray, names: list[str], kind: str, settings: ar.MetricSettings
) -> dict[str, Any]:
    out: dict[str, Any] = {"ar_vae": ar.ar_vae_metrics(z, labels, names, settings)}
    if kind == "dmelodies":
        out["dmelodies"] = dl.dmelodies_metrics(z, labels, names)
    return out


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    max_items: int | None = EvalConfig.max_items,
    *,
    config: EvalConfig | None = None,
    data: str | Path | None = None,
    progress: ProgressFn | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a run folder on one split; returns (and writes to ``RUN_DIR/eval.json``) a dict.

    ``split`` / ``max_items`` are shorthands for the same fields of ``config`` (``config`` wins
    when given). ``data`` overrides the dataset path recorded in the run; ``progress`` gets a report
    per batch of each pass (encode, decode, metrics). Keys: ``summary``
    (:data:`SUMMARY_KEYS`, AR-VAE definitions on sampled z), ``reconstruction_accuracy``
    {sampled, mean}, ``metrics`` {sampled, mean} -> {ar_vae, dmelodies (dMelodies only)}, plus
    what was evaluated (run, data, split, n_items, label_names, reg_dims, settings, seconds).
    """
    from arvae_midi.train.checkpoint import load_run

    cfg = config or EvalConfig(split=split, max_items=max_items)
    t0 = time.perf_counter()
    run = load_run(run_dir, device=cfg.device)
    token_data = load_run_data(run, data)
    names = list(run.label_names)
    labels = token_data.labels[:, token_data.label_index(names)]
    idx = select_items(token_data, cfg.split, cfg.max_items, cfg.seed)
    tokens, labels = token_data.tokens[idx], labels[idx].astype(np.float64)
    settings = ar.MetricSettings(max_points=cfg.knn_max_points, seed=cfg.seed)

    n = len(idx)
    report = reporter(progress)
    mu, z = encode_tokens(run.model, tokens, cfg.batch_size, cfg.seed, cfg.device, report, "encode")
    recon = {
        "sampled": ar.token_accuracy(greedy_decode(run.model, z, cfg.batch_size, cfg.device, report,
                                                   "decode (sampled z)"), tokens),
        "mean": ar.token_accuracy(greedy_decode(run.model, mu, cfg.batch_size, cfg.device, report,
                                                "decode (mean z)"), tokens),
    }  # fmt: skip
    metrics: dict[str, Any] = {}
    for i, (rep, codes) in enumerate((("sampled", z), ("mean", mu))):
        report(Progress("metrics", i, 2, detail=f"{rep} z"))  # the metrics cannot report finer progress
        metrics[rep] = _metrics_for(codes, labels, names, token_data.kind, settings)

    headline = metrics["sampled"]["ar_vae"]
    result: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "weights": str(run.weights),
        "objective": run.config.objective,
        "data_path": token_data.path,
        "data_kind": token_data.kind,
        "split": cfg.split,
        "n_items": n,
        "label_names": names,
        "reg_dims": run.reg_dims,
        "summary": {
            **{k: headline[k]["mean"] for k in SUMMARY_KEYS if k in headline},
            "reconstruction_accuracy": recon["sampled"],
        },
        "reconstruction_accuracy": recon,
        "metrics": metrics,
        "settings": asdict(cfg),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    result["summary"].setdefault("modularity", None)  # one label only: modularity is undefined
    if write:
        write_eval(run.run_dir, result)
    return result
