"""Evaluate a run folder: encode a held-out split, disentanglement metrics, greedy reconstruction.

:func:`evaluate_run` loads ``RUN_DIR`` (:func:`arvae_midi.train.checkpoint.load_run`) and its
dataset, encodes a seeded random subset of the split in batches, and reports, for the sampled z
(as the reference, reference-impl.md §5.3) and for the posterior means:

* the AR-VAE metrics (:mod:`arvae_midi.train.metrics`) against the run's labels (the four
  attributes, or the nine dMelodies factors treated as continuous values);
* for dMelodies, also the disentanglement_lib metrics (:mod:`arvae_midi.train.metrics_dl`);
* token accuracy of greedy (argmax-feedback, no teacher forcing) reconstructions.

The result is written to ``RUN_DIR/eval.json``. Its ``summary`` holds the headline numbers: the
AR-VAE definitions on sampled z, as in the AR-VAE paper. Everything is seeded, so evaluating the
same run twice gives the same numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arvae_midi.errors import ConfigError, DatasetError
from arvae_midi.train import metrics as ar
from arvae_midi.train import metrics_dl as dl

if TYPE_CHECKING:
    from arvae_midi.train.checkpoint import LoadedRun
    from arvae_midi.train.data import TokenData
    from arvae_midi.train.models import VAE

EVAL_FILE = "eval.json"
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


#: progress(advance, description) callback; advance = units of work done since the last call.
ProgressFn = Callable[[int, str], None]


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def encode_tokens(
    model: VAE,
    tokens: np.ndarray,
    batch_size: int = 512,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and one seeded sample: ``(mu (N, Z), z (N, Z))`` float32 for tokens (N, T)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    mus, zs = [], []
    with torch.inference_mode():
        for sl in _batches(len(tokens), batch_size):
            mu, logvar = model.encode(torch.as_tensor(tokens[sl], dtype=torch.long, device=device))
            # eps drawn on CPU from our generator so results do not depend on the device.
            eps = torch.randn(mu.shape, generator=gen).to(mu.device)
            mus.append(mu.float().cpu().numpy())
            zs.append((mu + torch.exp(0.5 * logvar) * eps).float().cpu().numpy())
            if progress:
                progress(sl.stop - sl.start, "encode")
    z_dim = int(model.config.latent_dim)
    empty = np.zeros((0, z_dim), np.float32)
    return (np.concatenate(mus) if mus else empty), (np.concatenate(zs) if zs else empty)


def greedy_decode(
    model: VAE,
    z: np.ndarray,
    batch_size: int = 512,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Greedy (argmax feedback) tokens (N, T) int64 from latents (N, Z), in batches."""
    import torch

    out = []
    with torch.inference_mode():
        for sl in _batches(len(z), batch_size):
            out.append(model.generate(torch.as_tensor(z[sl], dtype=torch.float32, device=device)).cpu().numpy())
            if progress:
                progress(sl.stop - sl.start, "decode")
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, model.config.seq_len), np.int64)


def resolve_data_path(data_path: str, run_dir: Path) -> Path:
    """The run's dataset file: as recorded (relative to the working directory), else next to the run."""
    p = Path(data_path)
    if p.is_file() or p.is_absolute():
        return p
    for base in (run_dir, run_dir.parent):
        if (base / p).is_file():
            return base / p
    return p


def load_eval_data(run: LoadedRun, data: str | Path | None = None) -> TokenData:
    """The run's dataset (or ``data``), checked against the run's vocabulary."""
    from arvae_midi.train.data import load_npz

    path = Path(data) if data is not None else resolve_data_path(run.data_path, run.run_dir)
    token_data = load_npz(path, split_seed=run.config.seed)
    if token_data.vocab != run.vocab:
        raise DatasetError(
            f"{path}: its vocabulary ({len(token_data.vocab)} tokens) differs from the run's "
            f"({len(run.vocab)} tokens); evaluate on the dataset the run was trained on"
        )
    if token_data.seq_len != run.model.config.seq_len:
        raise DatasetError(
            f"{path}: sequences of {token_data.seq_len} tokens, the model expects {run.model.config.seq_len}"
        )
    return token_data


def select_items(token_data: TokenData, split: str, max_items: int | None, seed: int) -> np.ndarray:
    """Seeded random order of the split's rows, truncated to ``max_items``.

    The order is shuffled even when nothing is dropped: the dMelodies metrics cut train/test
    positionally, and the file's row order varies the factors systematically.
    """
    idx = token_data.indices(split)
    if len(idx) < 10:
        raise DatasetError(f"{token_data.path}: the {split} split has {len(idx)} rows; metrics need at least 10")
    idx = np.random.default_rng(seed).permutation(idx)
    return idx[:max_items] if max_items is not None else idx


def _metrics_for(
    z: np.ndarray, labels: np.ndarray, names: list[str], kind: str, settings: ar.MetricSettings
) -> dict[str, Any]:
    out: dict[str, Any] = {"ar_vae": ar.ar_vae_metrics(z, labels, names, settings)}
    if kind == "dmelodies":
        out["dmelodies"] = dl.dmelodies_metrics(z, labels, names)
    return out


@contextmanager
def rich_progress(enabled: bool, total: int) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr (stdout stays clean for ``--json``)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=not enabled, transient=True) as bar:  # fmt: skip
        task = bar.add_task("evaluate", total=total)

        def advance(n: int, what: str) -> None:
            bar.update(task, advance=n, description=what)

        yield advance


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    max_items: int | None = EvalConfig.max_items,
    *,
    config: EvalConfig | None = None,
    data: str | Path | None = None,
    progress: bool = True,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a run folder on one split; returns (and writes to ``RUN_DIR/eval.json``) a dict.

    ``split`` / ``max_items`` are shorthands for the same fields of ``config`` (``config`` wins
    when given). ``data`` overrides the dataset path recorded in the run. Keys: ``summary``
    (:data:`SUMMARY_KEYS`, AR-VAE definitions on sampled z), ``reconstruction_accuracy``
    {sampled, mean}, ``metrics`` {sampled, mean} -> {ar_vae, dmelodies (dMelodies only)}, plus
    what was evaluated (run, data, split, n_items, label_names, reg_dims, settings, seconds).
    """
    from arvae_midi.train.checkpoint import load_run

    cfg = config or EvalConfig(split=split, max_items=max_items)
    t0 = time.perf_counter()
    run = load_run(run_dir, device=cfg.device)
    token_data = load_eval_data(run, data)
    names = list(run.label_names)
    labels = token_data.labels[:, token_data.label_index(names)]
    idx = select_items(token_data, cfg.split, cfg.max_items, cfg.seed)
    tokens, labels = token_data.tokens[idx], labels[idx].astype(np.float64)
    settings = ar.MetricSettings(max_points=cfg.knn_max_points, seed=cfg.seed)

    n = len(idx)
    metric_steps = 2  # one unit per representation; the metrics cannot report finer progress
    with rich_progress(progress, 3 * n + metric_steps) as advance:
        mu, z = encode_tokens(run.model, tokens, cfg.batch_size, cfg.seed, cfg.device, advance)
        recon = {
            "sampled": ar.token_accuracy(greedy_decode(run.model, z, cfg.batch_size, cfg.device, advance), tokens),
            "mean": ar.token_accuracy(greedy_decode(run.model, mu, cfg.batch_size, cfg.device, advance), tokens),
        }
        metrics: dict[str, Any] = {}
        for rep, codes in (("sampled", z), ("mean", mu)):
            advance(0, f"metrics ({rep} z)")
            metrics[rep] = _metrics_for(codes, labels, names, token_data.kind, settings)
            advance(1, f"metrics ({rep} z)")

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


def write_eval(run_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` to ``RUN_DIR/eval.json`` (NaN written as null) and return the path."""
    path = Path(run_dir) / EVAL_FILE
    path.write_text(json.dumps(json_safe(result), indent=2) + "\n", encoding="utf-8")
    return path


def read_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN_DIR/eval.json`` as a dict, or None when the run was not evaluated yet."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def json_safe(obj: Any) -> Any:
    """Replace NaN / inf floats by None so the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
