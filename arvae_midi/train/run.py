"""A trained run folder as data: its dataset, held-out items, batched encoding and decoding, eval.json.

:func:`arvae_midi.train.checkpoint.load_run` loads the model and its recorded settings; this module
gives evaluation, plots and the exporter the rest they share: the run's dataset checked against
its vocabulary (:func:`load_run_data`), a seeded subset of a split (:func:`select_items`), the
model over numpy arrays in batches (:func:`encode_tokens`, :func:`greedy_decode`) and the
``eval.json`` file (:func:`read_eval`, :func:`write_eval`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arvae_midi.errors import DatasetError
from arvae_midi.progress import Progress, ProgressFn

if TYPE_CHECKING:
    from arvae_midi.train.checkpoint import LoadedRun
    from arvae_midi.train.data import TokenData
    from arvae_midi.train.models import VAE

EVAL_FILE = "eval.json"


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
    task: str = "encode",
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and one seeded sample: ``(mu (N, Z), z (N, Z))`` float32 for tokens (N, T).

    Rows done are reported to ``progress`` as ``task``.
    """
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
                progress(Progress(task, sl.stop, len(tokens)))
    z_dim = int(model.config.latent_dim)
    empty = np.zeros((0, z_dim), np.float32)
    return (np.concatenate(mus) if mus else empty), (np.concatenate(zs) if zs else empty)


def greedy_decode(
    model: VAE,
    z: np.ndarray,
    batch_size: int = 512,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    task: str = "decode",
) -> np.ndarray:
    """Greedy (argmax feedback) tokens (N, T) int64 from latents (N, Z), in batches; rows done are
    reported to ``progress`` as ``task``."""
    import torch

    out = []
    with torch.inference_mode():
        for sl in _batches(len(z), batch_size):
            out.append(model.generate(torch.as_tensor(z[sl], dtype=torch.float32, device=device)).cpu().numpy())
            if progress:
                progress(Progress(task, sl.stop, len(z)))
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


def load_run_data(run: LoadedRun, data: str | Path | None = None) -> TokenData:
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
