"""The four musical attributes of a measure, vectorised over (N, 24) token-id arrays.

Definitions follow the AR-VAE reference (docs/reference.md §1.5, paper Appendix A):

* rhythmic_complexity: Toussaint-style weighted onset sum / sum of weights, in [0, 1];
* note_density: onsets / 24, in [0, 1];
* pitch_range: (highest - lowest onset pitch) / 26, 0 with fewer than 2 notes;
* contour: (last - first onset pitch) / 26 (the telescoped sum of intervals), signed.

The same functions serve training, evaluation, ``analyze`` and the bridge readout.
"""

from __future__ import annotations

import numpy as np

from arvae_midi.core.tokens import TICKS_PER_BAR, Vocabulary

ATTRIBUTE_NAMES: tuple[str, ...] = ("rhythmic_complexity", "note_density", "pitch_range", "contour")
#: Short forms for narrow displays (table headers, the bridge's status line).
ATTRIBUTE_SHORT: dict[str, str] = {"rhythmic_complexity": "rhy", "note_density": "den", "pitch_range": "rng",
                                   "contour": "con"}  # fmt: skip

#: Inverse metrical weights per tick (beats 1..4 x fractions 0, 1/4, 1/3, 1/2, 2/3, 3/4).
#: Downbeats weigh little, off-beat 16ths and triplets a lot; sum = 27.79.
RHYTHM_WEIGHTS = np.array(
    [0.20, 1, 2, 0.5, 2, 1,
     0.67, 1, 2, 0.5, 2, 1,
     0.25, 1, 2, 0.5, 2, 1,
     0.67, 1, 2, 0.5, 2, 1],
    dtype=np.float64,
)  # fmt: skip
#: Normaliser of pitch range and contour, in semitones (the reference divides by 26).
PITCH_NORM = 26.0


def _onset_pitches(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """(N, T) MIDI pitch at every onset tick, -1 elsewhere."""
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"tokens must have shape (N, T), got {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(vocab)):
        raise ValueError(f"token ids must lie in 0..{len(vocab) - 1}")
    result: np.ndarray = vocab.pitch_table[ids]
    return result


def rhythmic_complexity(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Weighted share of onsets on metrically weak positions; shape (N,), float64 in [0, 1]."""
    onsets = _onset_pitches(tokens, vocab) >= 0
    if onsets.shape[1] != TICKS_PER_BAR:
        raise ValueError(f"rhythmic_complexity needs {TICKS_PER_BAR}-tick measures, got {onsets.shape[1]}")
    result: np.ndarray = onsets @ RHYTHM_WEIGHTS / RHYTHM_WEIGHTS.sum()
    return result


def note_density(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Onsets per tick; shape (N,), float64 in [0, 1]."""
    onsets = _onset_pitches(tokens, vocab) >= 0
    result: np.ndarray = onsets.sum(axis=1) / onsets.shape[1]
    return result


def pitch_range(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """(max - min onset pitch) / 26, 0 for fewer than two notes; shape (N,), float64."""
    pitches = _onset_pitches(tokens, vocab)
    has = pitches >= 0
    hi = np.where(has, pitches, -1).max(axis=1, initial=-1)
    lo = np.where(has, pitches, 1000).min(axis=1, initial=1000)
    result: np.ndarray = np.where(has.sum(axis=1) >= 2, (hi - lo) / PITCH_NORM, 0.0)
    return result


def contour(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """(last - first onset pitch) / 26, 0 for fewer than two notes; shape (N,), float64."""
    pitches = _onset_pitches(tokens, vocab)
    has = pitches >= 0
    n, t = has.shape
    rows = np.arange(n)
    first = pitches[rows, np.argmax(has, axis=1)]
    last = pitches[rows, t - 1 - np.argmax(has[:, ::-1], axis=1)]
    result: np.ndarray = np.where(has.sum(axis=1) >= 2, (last - first) / PITCH_NORM, 0.0)
    return result


def compute_attributes(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """All four attributes in :data:`ATTRIBUTE_NAMES` order; shape (N, 4), float32.

    One pitch lookup shared by the four (the engine's closed loop calls this on every decode);
    the values equal the single-attribute functions above.
    """
    ids = np.asarray(tokens, dtype=np.int64)
    if not len(ids):
        return np.zeros((0, 4), np.float32)
    pitches = _onset_pitches(ids, vocab)
    has = pitches >= 0
    n, t = has.shape
    if t != TICKS_PER_BAR:
        raise ValueError(f"rhythmic_complexity needs {TICKS_PER_BAR}-tick measures, got {t}")
    count = has.sum(axis=1)
    out = np.empty((n, 4), np.float64)
    out[:, 0] = has @ RHYTHM_WEIGHTS / RHYTHM_WEIGHTS.sum()
    out[:, 1] = count / t
    hi = np.where(has, pitches, -1).max(axis=1, initial=-1)
    lo = np.where(has, pitches, 1000).min(axis=1, initial=1000)
    rows = np.arange(n)
    first = pitches[rows, np.argmax(has, axis=1)]
    last = pitches[rows, t - 1 - np.argmax(has[:, ::-1], axis=1)]
    two = count >= 2
    out[:, 2] = np.where(two, (hi - lo) / PITCH_NORM, 0.0)
    out[:, 3] = np.where(two, (last - first) / PITCH_NORM, 0.0)
    return out.astype(np.float32)
