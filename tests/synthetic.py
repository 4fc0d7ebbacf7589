"""Small valid dataset files for tests: synthetic measures, or a random subset of real dMelodies.

Test-only code, kept out of the package. (``tests/fixtures/make_tiny_model.py`` has its own bar
generator, shaped for a toy model to learn in a minute.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arvae_midi.core.attributes import compute_attributes
from arvae_midi.core.tokens import HOLD_ID, REST_ID, TICKS_PER_BAR, Vocabulary
from arvae_midi.errors import DatasetError
from arvae_midi.train.data import SPLITS
from arvae_midi.train.dmelodies import NUM_MELODIES, generate_dmelodies
from arvae_midi.train.dmelodies import VOCAB as DMELODIES_VOCAB


def write_synthetic_npz(path: str | Path, kind: str = "measure", n: int = 400, seed: int = 0) -> Path:
    """Write a small valid dataset file for tests and fixtures; returns ``path``.

    ``measure``: ``n`` random bars (per-bar onset density 0.1..0.7, a random walk of pitches,
    some rests) with their true attributes, rows cut 70/20/10 into train/val/test in order.
    ``dmelodies``: ``n`` randomly chosen real dMelodies melodies with their factors.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    if kind == "measure":
        vocab = Vocabulary()
        onset = rng.random((n, TICKS_PER_BAR)) < rng.uniform(0.1, 0.7, (n, 1))
        onset[:, 0] |= rng.random(n) < 0.8  # most bars start with an event, as real ones do
        steps = rng.integers(-4, 5, (n, TICKS_PER_BAR))
        start = rng.integers(vocab.low + 6, vocab.high - 6, (n, 1))
        pitches = np.clip(start + np.cumsum(steps, axis=1), vocab.low, vocab.high)
        events = np.where(rng.random((n, TICKS_PER_BAR)) < 0.1, REST_ID, pitches - vocab.low + 2)
        tokens = np.where(onset, events, HOLD_ID).astype(np.int64)
        split = np.select([np.arange(n) * 10 < 7 * n, np.arange(n) * 10 < 9 * n],
                          [SPLITS["train"], SPLITS["val"]], SPLITS["test"]).astype(np.int8)
        np.savez(path, tokens=tokens, attributes=compute_attributes(tokens, vocab).astype(np.float32),
                 tune=np.arange(n) // 8, split=split, vocab=np.array(vocab.tokens))
    elif kind == "dmelodies":
        tokens, factors = generate_dmelodies(np.sort(rng.choice(NUM_MELODIES, n, replace=False)))
        np.savez(path, tokens=tokens, factors=factors, vocab=np.array(DMELODIES_VOCAB.tokens))
    else:
        raise DatasetError(f"unknown synthetic dataset kind {kind!r}; valid: measure, dmelodies")
    return path
