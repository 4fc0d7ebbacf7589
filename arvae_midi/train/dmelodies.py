"""The dMelodies dataset, generated from its rules, fully vectorised in numpy.

dMelodies (Pati, Gururani & Lerch 2020; docs/reference.md §2) is every 2-bar melody of 12
eighth-note arpeggio notes fixed by 9 independent factors:

==  ============  =====  ========================================================
#   factor        size   values (index -> value)
==  ============  =====  ========================================================
0   tonic         12     C, C#, D, ... B
1   octave        3      4, 5, 6 (root MIDI = 12 * (octave + 1) + pitch class)
2   scale         3      major, harmonic minor, "blues" ([0, 2, 3, 5, 6, 9, 10, 12, 14])
3   rhythm_bar1   28     onset pattern of bar 1 (6 of its 8 eighth slots)
4   rhythm_bar2   28     onset pattern of bar 2
5-8 arp_chord1..4 2      0 = up, 1 = down (arpeggio direction of I, IV, V, I)
==  ============  =====  ========================================================

Chords are index triples into the scale's 9 semitone offsets: I = (0, 2, 4), IV = (3, 5, 7),
V = (4, 6, 8), I again at the end; "down" plays the triple reversed. Bar 1 plays the 6 notes of
I and IV on its rhythm, bar 2 the 6 notes of V and I. The rhythm dictionary is
``itertools.combinations(range(8), 6)`` in lexicographic order (index 0 = slots 0..5 sound).

Melody index ``i`` enumerates ``itertools.product`` of the factor ranges with the last factor
varying fastest, i.e. ``i = ravel_multi_index(factors, FACTOR_SIZES)``; 1,354,752 melodies.

Tokens use the 16-tick eighth-note grid and ``Vocabulary(60, 109)`` (52 ids: HOLD = 0,
REST = 1, MIDI pitch p -> 2 + p - 60). Every note and every rest lasts exactly one tick and is its
own event in the reference, so a sounding slot is its pitch token, a silent slot is REST (two
silent slots in a row are REST, REST, never REST, HOLD) and HOLD never occurs.

Nothing here builds a per-melody Python object: a melody's tokens are one gather from two small
tables, ``pitch ids (1728 tonic/octave/scale/arpeggio combinations, 13)`` (column 12 = REST) and
``slot -> note number (784 rhythm pairs, 16)``, because the index factorises into those two parts.
"""

from __future__ import annotations

import itertools
import os
import time
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from arvae_midi.core.tokens import (
    DMELODIES_PITCH_RANGE,
    DMELODIES_TICKS,
    REST_ID,
    Vocabulary,
)
from arvae_midi.errors import DatasetError
from arvae_midi.progress import Progress, ProgressFn, reporter

FACTOR_NAMES: tuple[str, ...] = (
    "tonic",
    "octave",
    "scale",
    "rhythm_bar1",
    "rhythm_bar2",
    "arp_chord1",
    "arp_chord2",
    "arp_chord3",
    "arp_chord4",
)
FACTOR_SIZES: tuple[int, ...] = (12, 3, 3, 28, 28, 2, 2, 2, 2)
NUM_MELODIES = int(np.prod(FACTOR_SIZES))  # 1,354,752

TONIC_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
OCTAVES: tuple[int, ...] = (4, 5, 6)
SCALE_NAMES: tuple[str, ...] = ("major", "minor", "blues")
ARP_NAMES: tuple[str, ...] = ("up", "down")

#: Semitones above the root of the 9 scale entries a chord triple indexes, shape (3, 9).
SCALE_SEMITONES = np.array(
    [
        [0, 2, 4, 5, 7, 9, 11, 12, 14],  # major
        [0, 2, 3, 5, 7, 8, 11, 12, 14],  # harmonic minor
        [0, 2, 3, 5, 6, 9, 10, 12, 14],  # the dataset's "blues": I is diminished, V is (6, 10, 14)
    ],
    dtype=np.int64,
)
#: Chords I, IV, V, I as index triples into a row of SCALE_SEMITONES, shape (4, 3).
CHORD_DEGREES = np.array([[0, 2, 4], [3, 5, 7], [4, 6, 8], [0, 2, 4]], dtype=np.int64)
#: Rhythm dictionary: onset (1) / rest (0) per eighth slot of a bar, shape (28, 8), int8.
RHYTHM_PATTERNS = np.zeros((28, 8), dtype=np.int8)
for _k, _slots in enumerate(itertools.combinations(range(8), 6)):
    RHYTHM_PATTERNS[_k, list(_slots)] = 1

NOTES_PER_BAR = 6
TICKS_PER_BAR_8TH = 8
VOCAB = Vocabulary(*DMELODIES_PITCH_RANGE)
_ROOT_LOW = 60  # MIDI of C4, the root of tonic 0 / octave index 0

for _arr in (SCALE_SEMITONES, CHORD_DEGREES, RHYTHM_PATTERNS):
    _arr.setflags(write=False)
_DEFAULT_CHUNK = 1 << 16


@lru_cache(maxsize=1)
def _pitch_table() -> np.ndarray:
    """Token ids of the 12 notes (+ REST in column 12) per (tonic, octave, scale, arpeggio code).

    Row = ((tonic * 3 + octave) * 3 + scale) * 16 + (a1 * 8 + a2 * 4 + a3 * 2 + a4), the order of
    those factors in the melody index; shape (1728, 13), int8.
    """
    arps = np.array(list(itertools.product((0, 1), repeat=4)), dtype=np.int64)  # (16, 4)
    # Degree index of each of the 12 notes per arpeggio code: a down chord reverses its triple.
    degrees = np.where(arps[:, :, None] == 1, CHORD_DEGREES[None, :, ::-1], CHORD_DEGREES[None])  # (16,4,3)
    semis = SCALE_SEMITONES[:, degrees.reshape(16, 12)]  # (3 scales, 16, 12)
    roots = _ROOT_LOW + np.arange(12)[:, None] + 12 * np.arange(3)[None, :]  # (tonic, octave)
    pitches = roots[:, :, None, None, None] + semis[None, None]  # (12, 3, 3, 16, 12)
    ids = (2 + pitches - VOCAB.low).reshape(-1, 12)
    table = np.concatenate([ids, np.full((ids.shape[0], 1), REST_ID)], axis=1).astype(np.int8)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=1)
def _slot_table() -> np.ndarray:
    """Which of the 12 notes sounds in each of the 16 slots (12 = rest) per rhythm pair.

    Row = rhythm_bar1 * 28 + rhythm_bar2; shape (784, 16), int8.
    """
    onsets = RHYTHM_PATTERNS.astype(np.int64)
    # Note number inside the bar at each onset slot = number of onsets before it.
    within = np.where(onsets == 1, np.cumsum(onsets, axis=1) - 1, -1)  # (28, 8)
    bar1 = np.where(within >= 0, within, 12)
    bar2 = np.where(within >= 0, within + NOTES_PER_BAR, 12)
    table = np.concatenate([np.repeat(bar1, 28, axis=0), np.tile(bar2, (28, 1))], axis=1).astype(np.int8)
    table.setflags(write=False)
    return table


def _check_indices(indices: np.ndarray) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"melody indices must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= NUM_MELODIES):
        raise DatasetError(f"melody indices must lie in 0..{NUM_MELODIES - 1}, got {int(arr.min())}..{int(arr.max())}")
    return arr.astype(np.int64, copy=False)


def index_to_factors(indices: np.ndarray) -> np.ndarray:
    """Melody indices (N,) -> factor values (N, 9) int8 in FACTOR_NAMES order."""
    idx = _check_indices(indices)
    return np.stack(np.unravel_index(idx, FACTOR_SIZES), axis=1).astype(np.int8)


def factors_to_index(factors: np.ndarray) -> np.ndarray:
    """Factor values (..., 9) -> melody indices (...,) int64 (last factor fastest)."""
    arr = np.asarray(factors)
    if arr.ndim < 1 or arr.shape[-1] != len(FACTOR_SIZES) or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"factors must be an integer array of shape (..., 9), got {arr.shape} {arr.dtype}")
    sizes = np.array(FACTOR_SIZES)
    bad = (arr < 0) | (arr >= sizes)
    if bad.any():
        col = int(np.argwhere(bad)[0][-1])
        raise DatasetError(
            f"factor {FACTOR_NAMES[col]} must lie in 0..{FACTOR_SIZES[col] - 1}, "
            f"got {int(arr[..., col][bad[..., col]].flat[0])}"
        )
    flat = arr.reshape(-1, len(FACTOR_SIZES)).astype(np.int64)
    return np.asarray(np.ravel_multi_index(tuple(flat.T), FACTOR_SIZES), dtype=np.int64).reshape(arr.shape[:-1])


def _tokens_for(idx: np.ndarray) -> np.ndarray:
    """Token ids (n, 16) int8 of valid melody indices (n,) int64."""
    # idx = (tos * 784 + rhythm pair) * 16 + arp code, tos = (tonic * 3 + octave) * 3 + scale.
    pitch_row = (idx // (784 * 16)) * 16 + idx % 16
    slot_row = (idx // 16) % 784
    return _pitch_table()[pitch_row[:, None], _slot_table()[slot_row]]


def generate_dmelodies(
    indices: np.ndarray | None = None,
    *,
    chunk_size: int = _DEFAULT_CHUNK,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate dMelodies melodies as tokens and their factors.

    Args:
        indices: melody indices (N,) to generate, in the given order; None = all 1,354,752 in
            index order.
        chunk_size: melodies per chunk (bounds the int64 temporaries to ~chunk_size x 16 x 8 B).
        progress: gets the number of melodies finished after every chunk (task "dMelodies").

    Returns:
        ``tokens`` (N, 16) int8 ids of ``Vocabulary(60, 109)`` and ``factors`` (N, 9) int8 in
        FACTOR_NAMES order.
    """
    idx = np.arange(NUM_MELODIES, dtype=np.int64) if indices is None else _check_indices(indices)
    if chunk_size < 1:
        raise DatasetError(f"chunk_size must be >= 1, got {chunk_size}")
    n = idx.shape[0]
    tokens = np.empty((n, DMELODIES_TICKS), dtype=np.int8)
    factors = np.empty((n, len(FACTOR_SIZES)), dtype=np.int8)
    for start in range(0, n, chunk_size):
        part = idx[start : start + chunk_size]
        tokens[start : start + part.shape[0]] = _tokens_for(part)
        factors[start : start + part.shape[0]] = index_to_factors(part)
        if progress is not None:
            progress(Progress("dMelodies", start + part.shape[0], n))
    return tokens, factors


def factors_from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Recover the 9 factors from token rows (N, 16); -1 where a factor cannot be determined.

    Exact on dMelodies melodies; on other rows (e.g. a model's output) it follows the reference
    loader's estimators (docs/reference.md §2.5):

    * tonic / octave: from the lowest of the first 3 notes (octave -1 outside octaves 4..6);
    * scale: the first of major, minor, blues whose pitch classes (relative to that root) contain
      every note's;
    * rhythm_bar1/2: the bar's onset pattern looked up in the rhythm dictionary (HOLD and REST
      are both silence here, so a held note is not an onset);
    * arp_chord1..4: only with exactly 12 notes: sign of the summed step directions per 3-note group.

    Ids outside the vocabulary count as HOLD, as in the reference. A row without notes is all -1.
    """
    arr = np.asarray(tokens)
    if arr.ndim != 2 or arr.shape[1] != DMELODIES_TICKS or not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"dMelodies tokens must be an integer array of shape (N, 16), got {arr.shape} {arr.dtype}")
    out = np.empty((arr.shape[0], len(FACTOR_SIZES)), dtype=np.int8)
    # Chunks keep the int64 temporaries (chunk x 16 x 8 B) in cache instead of ~170 MB each.
    for start in range(0, arr.shape[0], _DEFAULT_CHUNK):
        out[start : start + _DEFAULT_CHUNK] = _factors_chunk(arr[start : start + _DEFAULT_CHUNK])
    return out


def _factors_chunk(tokens: np.ndarray) -> np.ndarray:
    """factors_from_tokens on one chunk (n, 16) of already-validated rows."""
    n = tokens.shape[0]
    ids = tokens.astype(np.int64, copy=False)
    # Pitch per slot, -1 for silence; ids outside the vocabulary read the extra -1 entry.
    pitch_lut = np.append(VOCAB.pitch_table, -1).astype(np.int16)
    pitch = pitch_lut[np.where((ids >= 0) & (ids < len(VOCAB)), ids, len(VOCAB))]  # (n, 16) int16
    is_note = pitch >= 0
    out = np.full((n, len(FACTOR_SIZES)), -1, dtype=np.int8)

    # Rhythm: 8-bit onset code per bar -> dictionary index (-1 for the 228 codes not in it).
    lookup = np.full(256, -1, dtype=np.int8)
    weights = 1 << np.arange(TICKS_PER_BAR_8TH - 1, -1, -1)
    lookup[RHYTHM_PATTERNS.astype(np.int64) @ weights] = np.arange(len(RHYTHM_PATTERNS))
    codes = is_note.reshape(n, 2, TICKS_PER_BAR_8TH) @ weights.astype(np.int16)  # (n, 2)
    out[:, 3:5] = lookup[codes]

    # Notes in playing order: a stable sort moves the sounding slots to the front.
    count = is_note.sum(axis=1)
    order = np.argsort(~is_note, axis=1, kind="stable")
    seq = np.take_along_axis(pitch, order, axis=1)  # (n, 16), first `count` entries are notes
    has_root = count > 0
    first3 = np.where(np.arange(3)[None, :] < count[:, None], seq[:, :3], np.iinfo(np.int16).max)
    root = np.where(has_root, first3.min(axis=1), 0)
    octave = root // 12 - (_ROOT_LOW // 12)
    out[:, 0] = np.where(has_root, root % 12, -1)
    out[:, 1] = np.where(has_root & (octave >= 0) & (octave < len(OCTAVES)), octave, -1)

    # Scale: 12-bit set of the notes' pitch classes relative to the root; the first scale whose
    # pitch-class set contains it wins.
    rel = (pitch - root[:, None]) % 12  # (n, 16)
    pcs = np.bitwise_or.reduce(np.where(is_note, np.left_shift(1, rel, dtype=np.int32), 0), axis=1)
    scale = np.full(n, -1, dtype=np.int64)
    for s in range(len(SCALE_NAMES) - 1, -1, -1):  # reverse, so the first match wins
        allowed = int(np.bitwise_or.reduce(1 << (SCALE_SEMITONES[s] % 12)))
        scale = np.where(pcs & ~allowed == 0, s, scale)
    out[:, 2] = np.where(has_root, scale, -1)

    # Arpeggio directions: only defined with exactly the 12 notes of 4 chords.
    groups = seq[:, :12].reshape(n, 4, 3)
    steps = np.sign(np.diff(groups, axis=2)).sum(axis=2)  # (n, 4)
    direction = np.where(steps > 0, 0, np.where(steps < 0, 1, -1))
    out[:, 5:9] = np.where((count == 12)[:, None], direction, -1)
    return out


def _write_npz(path: Path, tokens: np.ndarray, factors: np.ndarray) -> int:
    """Write the dataset npz atomically (temp file + rename); returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # vocab as a str array (not object) so loaders need no allow_pickle.
    arrays = {"tokens": tokens, "factors": factors, "vocab": np.array(VOCAB.tokens, dtype=str)}
    try:
        # The npz layout of np.savez_compressed, at deflate level 1: ~1 s instead of ~4 s for a
        # file only slightly larger (the token rows are very repetitive).
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, arr in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def save_dmelodies(path: str | Path, *, progress: ProgressFn | None = None) -> dict[str, object]:
    """Build all dMelodies melodies and write them to ``path`` (npz).

    The file holds ``tokens`` (N, 16) int8, ``factors`` (N, 9) int8 in FACTOR_NAMES order and
    ``vocab`` (52,) str ("__", "rest", "60".."109"). ``progress`` gets reports while generating.

    Returns:
        summary: melodies, seconds (total), generate_seconds, write_seconds, path, bytes,
        vocab_size, factor_names, factor_sizes.
    """
    out = Path(path)
    t0 = time.perf_counter()
    tokens, factors = generate_dmelodies(progress=reporter(progress))
    t1 = time.perf_counter()
    try:
        size = _write_npz(out, tokens, factors)
    except OSError as e:
        raise DatasetError(f"cannot write dMelodies dataset to {out}: {e}") from e
    t2 = time.perf_counter()
    return {
        "melodies": int(tokens.shape[0]),
        "seconds": round(t2 - t0, 3),
        "generate_seconds": round(t1 - t0, 3),
        "write_seconds": round(t2 - t1, 3),
        "path": str(out),
        "bytes": size,
        "vocab_size": len(VOCAB),
        "factor_names": list(FACTOR_NAMES),
        "factor_sizes": list(FACTOR_SIZES),
    }
