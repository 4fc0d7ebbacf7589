"""Token datasets: npz files (as `arvae-midi dataset` writes them) -> :class:`TokenData` -> torch loaders.

Two kinds of file are accepted (the builder is ``arvae-midi dataset``):

* measure (folk, chorales, folk-chorales): ``tokens`` (M, 24) int, ``attributes`` (M, 4) float in
  :data:`~arvae_midi.core.attributes.ATTRIBUTE_NAMES` order, ``split`` (M,) 0 train / 1 val / 2 test,
  ``vocab`` (array of str), optionally ``tune`` (M,);
* dMelodies: ``tokens`` (N, 16) int, ``factors`` (N, 9) int, ``vocab``. No split is shipped: as in
  the reference loader (docs/reference.md §2.5) the rows are shuffled once with a seed and cut
  70 / 20 / 10 into train / val / test, so the split depends on the recipe's seed.

Batches are fetched with one fancy-indexing call per batch (``__getitems__``), not one Python
call per row, so the loader keeps up with the 1.35 M-row dMelodies set.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.constants import SPLITS
from arvae_midi.core.tokens import DMELODIES_TICKS, TICKS_PER_BAR, Vocabulary
from arvae_midi.errors import DatasetError
from arvae_midi.train.dmelodies import FACTOR_NAMES

#: dMelodies factor columns in npz order (docs/reference.md §2.1).
DMELODIES_FACTOR_NAMES: tuple[str, ...] = FACTOR_NAMES
#: dMelodies train / val fractions (the rest is test), as the reference's ``split=(0.70, 0.20)``.
DMELODIES_FRACTIONS = (0.70, 0.20)


@dataclass
class TokenData:
    """A loaded dataset: token ids, per-row labels and the split column.

    ``tokens`` (N, T) int64 ids into ``vocab``; ``labels`` (N, K) float32 named by ``label_names``
    (the four attributes, or the nine dMelodies factor indices as floats); ``split`` (N,) int8 with
    0 train, 1 val, 2 test; ``kind`` is ``"measure"`` or ``"dmelodies"``.
    """

    tokens: np.ndarray
    vocab: list[str]
    labels: np.ndarray
    label_names: list[str]
    split: np.ndarray
    kind: str
    path: str = ""

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        """Tokens per row T (24 for measures, 16 for dMelodies)."""
        return int(self.tokens.shape[1])

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split (``"train"``, ``"val"``, ``"test"``), ascending."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS[split])

    def label_index(self, names: Sequence[str]) -> list[int]:
        """Column of each label name; DatasetError naming the valid labels otherwise."""
        missing = [n for n in names if n not in self.label_names]
        if missing:
            raise DatasetError(
                f"{self.path or 'dataset'}: no label(s) {', '.join(missing)}; "
                f"this {self.kind} dataset has {', '.join(self.label_names)}"
            )
        return [self.label_names.index(n) for n in names]


def dmelodies_split(n: int, seed: int) -> np.ndarray:
    """Seeded 70/20/10 split of ``n`` rows: (n,) int8, 0 train / 1 val / 2 test.

    Same recipe as the reference (``np.random.seed(seed)`` then one shuffle of all rows, first 70%
    train, next 20% val), so a seed selects the same rows there and here.
    """
    order = np.random.RandomState(seed).permutation(n)
    n_train = int(DMELODIES_FRACTIONS[0] * n)
    n_val = int(DMELODIES_FRACTIONS[1] * n)
    split = np.full(n, SPLITS["test"], dtype=np.int8)
    split[order[:n_train]] = SPLITS["train"]
    split[order[n_train : n_train + n_val]] = SPLITS["val"]
    return split


def _require(arrays: dict[str, np.ndarray], keys: Sequence[str], path: Path, kind: str) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DatasetError(
            f"{path}: {kind} dataset lacks array(s) {', '.join(missing)}; it needs {', '.join(keys)} "
            f"(has {', '.join(sorted(arrays)) or 'nothing'})"
        )


def _int_matrix(a: np.ndarray, name: str, path: Path, cols: int | None = None) -> np.ndarray:
    if a.ndim != 2 or (cols is not None and a.shape[1] != cols):
        want = f"(N, {cols})" if cols is not None else "(N, T)"
        raise DatasetError(f"{path}: {name} must have shape {want}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise DatasetError(f"{path}: {name} must be integer, got {a.dtype}")
    return a.astype(np.int64)


def load_npz(path: str | Path, split_seed: int = 0) -> TokenData:
    """Load and validate a dataset file; ``split_seed`` only matters for dMelodies.

    Raises DatasetError saying what is missing or wrong (file, arrays, shapes, dtypes, token ids
    outside the vocabulary, split values).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file (build one with `arvae-midi dataset`)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"{path}: not a readable npz file ({e})") from e

    if "factors" in arrays:
        kind = "dmelodies"
        _require(arrays, ("tokens", "factors", "vocab"), path, kind)
        tokens = _int_matrix(arrays["tokens"], "tokens", path, DMELODIES_TICKS)
        factors = _int_matrix(arrays["factors"], "factors", path, len(DMELODIES_FACTOR_NAMES))
        labels = factors.astype(np.float32)
        label_names = list(DMELODIES_FACTOR_NAMES)
        split = dmelodies_split(len(tokens), split_seed)
    elif "attributes" in arrays:
        kind = "measure"
        _require(arrays, ("tokens", "attributes", "split", "vocab"), path, kind)
        tokens = _int_matrix(arrays["tokens"], "tokens", path, TICKS_PER_BAR)
        attrs = arrays["attributes"]
        if attrs.ndim != 2 or attrs.shape[1] != len(ATTRIBUTE_NAMES):
            raise DatasetError(f"{path}: attributes must have shape (M, {len(ATTRIBUTE_NAMES)}), got {attrs.shape}")
        if not np.issubdtype(attrs.dtype, np.floating) or not np.isfinite(attrs).all():
            raise DatasetError(f"{path}: attributes must be finite floats, got {attrs.dtype}")
        labels = attrs.astype(np.float32)
        label_names = list(ATTRIBUTE_NAMES)
        split_raw = arrays["split"]
        if split_raw.shape != (len(tokens),) or not np.issubdtype(split_raw.dtype, np.integer):
            raise DatasetError(f"{path}: split must be an integer array of shape ({len(tokens)},), got "
                               f"{split_raw.dtype} {split_raw.shape}")
        if split_raw.size and not np.isin(split_raw, (0, 1, 2)).all():
            raise DatasetError(f"{path}: split values must be 0 (train), 1 (val) or 2 (test)")
        split = split_raw.astype(np.int8)
    else:
        raise DatasetError(
            f"{path}: not a dataset file: it needs `attributes` (measure datasets) or `factors` "
            f"(dMelodies) next to `tokens` and `vocab`; has {', '.join(sorted(arrays)) or 'nothing'}"
        )

    if len(labels) != len(tokens):
        raise DatasetError(f"{path}: {len(tokens)} token rows but {len(labels)} label rows")
    if len(tokens) == 0:
        raise DatasetError(f"{path}: the dataset is empty")
    vocab_arr = arrays["vocab"]
    if vocab_arr.ndim != 1 or vocab_arr.dtype.kind not in "US":
        raise DatasetError(f"{path}: vocab must be a 1-d array of strings, got {vocab_arr.dtype} {vocab_arr.shape}")
    vocab = [str(t) for t in vocab_arr.astype(str)]
    try:
        Vocabulary.from_tokens(vocab)
    except ValueError as e:
        raise DatasetError(f"{path}: invalid vocab: {e}") from e
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= len(vocab):
        raise DatasetError(f"{path}: token ids span {lo}..{hi} but the vocabulary has ids 0..{len(vocab) - 1}")
    return TokenData(tokens, vocab, labels, label_names, split, kind, str(path))


class TokenDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split of a :class:`TokenData` as tensors: item = (tokens (T,) int64, labels (K,) float32)."""

    def __init__(self, data: TokenData, split: str) -> None:
        idx = data.indices(split)
        self.tokens = torch.from_numpy(data.tokens[idx])
        self.labels = torch.from_numpy(data.labels[idx])

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader calls this once per batch; one gather beats B __getitem__ calls + collate.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.tokens[idx], self.labels[idx]


def _keep_batch(batch: Any) -> Any:
    """collate_fn for :meth:`TokenDataset.__getitems__`: the batch is already stacked."""
    return batch


def make_loader(
    dataset: TokenDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    world_size: int = 1,
    rank: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """DataLoader over ``dataset`` yielding (tokens (B, T), labels (B, K)).

    Always goes through a :class:`DistributedSampler` (one replica when not distributed) so the
    shuffle order is a pure function of (seed, epoch): call ``loader.sampler.set_epoch(epoch)``
    before each epoch; a resumed run then sees the same batches as an uninterrupted one.
    """
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=_keep_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
