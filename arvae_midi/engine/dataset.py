"""A measure dataset npz read into a model's vocabulary (numpy only: no torch, no onnx).

Used where a model file meets a dataset without a training run: ``arvae-midi calibrate``
(:mod:`arvae_midi.export.recalibrate`) and ``bench/knobs.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from arvae_midi.core.tokens import TICKS_PER_BAR, Vocabulary
from arvae_midi.errors import DatasetError


class DatasetBars(NamedTuple):
    """Rows of a measure dataset: ``tokens`` (N, 24) int64 in the model's ids, ``split`` (N,),
    ``transpose`` (N,) semitones (zeros when the file does not record it)."""

    tokens: np.ndarray
    split: np.ndarray
    transpose: np.ndarray


def dataset_bars(path: str | Path, vocab: Vocabulary) -> DatasetBars:
    """The bars of a measure dataset npz in ``vocab``'s ids.

    DatasetError when the file is not a measure dataset or uses tokens outside the vocabulary.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            tokens, split, file_vocab = data["tokens"], data["split"], [str(t) for t in data["vocab"]]
            transpose = data["transpose"] if "transpose" in data.files else np.zeros(len(tokens), np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"{path}: not a measure dataset npz with tokens, split and vocab ({e})") from e
    if tokens.ndim != 2 or tokens.shape[1] != TICKS_PER_BAR or split.shape != (len(tokens),):
        raise DatasetError(f"{path}: tokens have shape {tokens.shape}; the engine plays (N, 24) bars")
    index = {tok: i for i, tok in enumerate(vocab.tokens)}
    missing = [t for t in file_vocab if t not in index]
    if missing:
        raise DatasetError(f"{path}: tokens {missing[:5]} are outside the model's vocabulary {vocab.low}..{vocab.high}")
    remap = np.asarray([index[t] for t in file_vocab], np.int64)
    return DatasetBars(remap[np.asarray(tokens, np.int64)], np.asarray(split), np.asarray(transpose))
