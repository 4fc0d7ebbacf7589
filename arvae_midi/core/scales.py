"""Key/scale estimation for the key lock: which pitch classes a variation may use.

The AR-VAE paper notes that variations drift out of key. The lock estimates the scale of the
input (one bar, or the recent bars in the bridge) and the decoder is only allowed pitch tokens
of that scale, plus the pitch classes the input itself plays (so a chromatic passing note of
the input stays available).

Estimation (precomputed key-profile tables, tens of microseconds): among the 12 diatonic
pitch-class sets (which also cover the church modes that folk tunes use) and the 12
harmonic-minor sets, take those covering the largest share of the input's duration-weighted
pitch classes; break ties with the Krumhansl-Kessler key-profile correlation of the set's tonic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arvae_midi.core.tokens import HOLD_ID, TICK_DURATIONS, Vocabulary

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
}
# Krumhansl-Kessler probe-tone profiles (major, minor), tonic first.
_KK = {
    "major": np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    "harmonic minor": np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}


@dataclass(frozen=True)
class Scale:
    """A scale as tonic pitch class (0 = C) and mode name from :data:`MODES`."""

    tonic: int
    mode: str

    @property
    def pitch_classes(self) -> frozenset[int]:
        """The seven pitch classes of the scale."""
        return frozenset((self.tonic + step) % 12 for step in MODES[self.mode])

    @property
    def name(self) -> str:
        """Human-readable name such as 'D major'."""
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"


def pitch_class_histogram(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Duration (beats) each pitch class sounds in (N, 24) token bars; shape (12,), float64."""
    ids = np.atleast_2d(np.asarray(tokens, dtype=np.int64))
    pitches = vocab.pitch_table[ids]  # (N, T): MIDI pitch at onsets, -1 at HOLD and REST
    # Carry each onset's pitch through its HOLD ticks so notes weigh by duration: the index of
    # the last non-HOLD tick at or before every tick (a HOLD at tick 0 sounds nothing: its own
    # pitch_table entry is -1).
    t = np.arange(ids.shape[1])
    last = np.maximum.accumulate(np.where(ids == HOLD_ID, 0, t), axis=1)
    sounding = np.take_along_axis(pitches, last, axis=1)
    weights = np.broadcast_to(TICK_DURATIONS[: ids.shape[1]], ids.shape)
    mask = sounding >= 0
    hist = np.bincount(sounding[mask] % 12, weights=weights[mask], minlength=12)
    return hist.astype(np.float64)


def _scale_tables() -> tuple[list[Scale], np.ndarray, np.ndarray]:
    """Every candidate scale, its pitch-class membership (S, 12) and centred unit KK profile (S, 12)."""
    scales = [Scale(tonic, mode) for mode in MODES for tonic in range(12)]
    member = np.zeros((len(scales), 12))
    profiles = np.zeros((len(scales), 12))
    for i, sc in enumerate(scales):
        member[i, sorted(sc.pitch_classes)] = 1.0
        p = np.roll(_KK[sc.mode], sc.tonic)
        p = p - p.mean()
        profiles[i] = p / np.linalg.norm(p)
    return scales, member, profiles


#: Precomputed key profiles: the estimate is two (24, 12) @ (12,) products, a few microseconds.
_SCALES, _MEMBER, _PROFILES = _scale_tables()


def estimate_scale(tokens: np.ndarray, vocab: Vocabulary) -> Scale | None:
    """Best-fitting scale of one or more bars (N, 24); None when they hold no notes."""
    return scale_of_histogram(pitch_class_histogram(tokens, vocab))


def scale_of_histogram(hist: np.ndarray) -> Scale | None:
    """Best scale for a pitch-class duration histogram (12,): the largest covered share, then the
    highest key-profile correlation, then the first in (major C..B, harmonic minor C..B) order."""
    total = float(hist.sum())
    if total <= 0:
        return None
    coverage = np.round(_MEMBER @ hist / total, 9)
    centred = hist - hist.mean()
    norm = float(np.linalg.norm(centred))
    corr = _PROFILES @ centred / norm if norm > 0 else np.zeros(len(_SCALES))
    best = int(np.argmax(np.where(coverage == coverage.max(), corr, -np.inf)))
    return _SCALES[best]


def allowed_mask_bits(tokens: np.ndarray, vocab: Vocabulary) -> int | None:
    """:func:`allowed_pitch_classes` as a 12-bit integer (bit pc set = allowed); None = no lock."""
    hist = pitch_class_histogram(tokens, vocab)
    scale = scale_of_histogram(hist)
    if scale is None:
        return None
    bits = 0
    for pc in scale.pitch_classes:
        bits |= 1 << pc
    for played in np.flatnonzero(hist > 0).tolist():
        bits |= 1 << played
    return bits


def allowed_pitch_classes(tokens: np.ndarray, vocab: Vocabulary) -> frozenset[int] | None:
    """Pitch classes the key lock allows for variations of ``tokens``: scale + the input's own.

    None means no lock (the input holds no notes).
    """
    bits = allowed_mask_bits(tokens, vocab)
    return None if bits is None else frozenset(pc for pc in range(12) if bits >> pc & 1)


def token_mask(pitch_classes: frozenset[int] | None, vocab: Vocabulary) -> np.ndarray:
    """Allowed token ids as a bool array (V,): HOLD and REST always, pitches by pitch class."""
    pitches = vocab.pitch_table
    if pitch_classes is None:
        return np.ones(len(vocab), dtype=bool)
    allowed = np.isin(pitches % 12, sorted(pitch_classes))
    result: np.ndarray = (pitches < 0) | allowed
    return result


def in_scale_share(tokens: np.ndarray, vocab: Vocabulary, pitch_classes: frozenset[int]) -> float:
    """Share of note onsets in ``tokens`` (N, T) whose pitch class is in ``pitch_classes``."""
    pitches = vocab.pitch_table[np.asarray(tokens, dtype=np.int64)]
    onsets = pitches[pitches >= 0]
    if onsets.size == 0:
        return 1.0
    return float(np.isin(onsets % 12, sorted(pitch_classes)).mean())
