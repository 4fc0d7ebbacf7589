"""dMelodies generator: size, index order, rules, and melodies checked against music21."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary
from arvae_midi.errors import DatasetError
from arvae_midi.train import dmelodies as dm

SIZES = (12, 3, 3, 28, 28, 2, 2, 2, 2)
VOCAB = Vocabulary(60, 109)


@pytest.fixture(scope="module")
def full() -> tuple[np.ndarray, np.ndarray]:
    """The whole dataset, generated once for the module (~1 s, 34 MB)."""
    return dm.generate_dmelodies()


def _strings(tokens: np.ndarray) -> list[str]:
    return VOCAB.to_strings(tokens)


def _factors_by_hand(index: int) -> list[int]:
    """Mixed-radix digits of ``index``, last factor fastest (itertools.product order)."""
    digits = []
    for size in reversed(SIZES):
        index, d = divmod(index, size)
        digits.append(d)
    assert index == 0
    return digits[::-1]


def test_size_and_factor_tables() -> None:
    assert dm.NUM_MELODIES == 1_354_752 == 12 * 3 * 3 * 28 * 28 * 2**4
    assert dm.FACTOR_SIZES == SIZES
    assert dm.FACTOR_NAMES == (
        "tonic", "octave", "scale", "rhythm_bar1", "rhythm_bar2",
        "arp_chord1", "arp_chord2", "arp_chord3", "arp_chord4",
    )  # fmt: skip
    assert len(VOCAB) == 52


def test_index_order_is_itertools_product() -> None:
    head = np.array(list(itertools.islice(itertools.product(*map(range, SIZES)), 5000)))
    np.testing.assert_array_equal(dm.index_to_factors(np.arange(5000)), head)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, dm.NUM_MELODIES, 500)
    f = dm.index_to_factors(idx)
    np.testing.assert_array_equal(f, [_factors_by_hand(int(i)) for i in idx])
    t, o, s, r1, r2, a1, a2, a3, a4 = (f[:, k].astype(np.int64) for k in range(9))
    formula = (((((((t * 3 + o) * 3 + s) * 28 + r1) * 28 + r2) * 2 + a1) * 2 + a2) * 2 + a3) * 2 + a4
    np.testing.assert_array_equal(formula, idx)
    np.testing.assert_array_equal(dm.factors_to_index(f), idx)
    assert dm.index_to_factors(np.array([dm.NUM_MELODIES - 1])).tolist() == [[11, 2, 2, 27, 27, 1, 1, 1, 1]]


def test_rhythm_dictionary() -> None:
    pats = dm.RHYTHM_PATTERNS
    assert pats.shape == (28, 8)
    assert pats[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert pats[1].tolist() == [1, 1, 1, 1, 1, 0, 1, 0]
    assert pats[27].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert [tuple(np.flatnonzero(p)) for p in pats] == list(itertools.combinations(range(8), 6))


def test_chord_semitones() -> None:
    chords = dm.SCALE_SEMITONES[:, dm.CHORD_DEGREES]  # (scale, chord, 3)
    major, minor, blues = chords.tolist()
    assert major == [[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7]]
    assert minor == [[0, 3, 7], [5, 8, 12], [7, 11, 14], [0, 3, 7]]
    # The dataset's "blues" has a diminished tonic triad and a V built on the flat fifth.
    assert blues == [[0, 3, 6], [5, 9, 12], [6, 10, 14], [0, 3, 6]]


def test_hand_worked_melodies() -> None:
    tokens, factors = dm.generate_dmelodies(np.array([0, 1, dm.NUM_MELODIES - 1]))
    assert factors[0].tolist() == [0] * 9
    # C4 major, all-up arpeggios, rhythm 0 (six onsets then two 8th rests) in both bars.
    assert " ".join(_strings(tokens[0])) == "60 64 67 65 69 72 rest rest 67 71 74 60 64 67 rest rest"
    # Index 1 only flips the last chord down.
    assert " ".join(_strings(tokens[1])) == "60 64 67 65 69 72 rest rest 67 71 74 67 64 60 rest rest"
    # B6 "blues", every chord down, rhythm 27 (two rests then six onsets); reaches the top pitch 109.
    assert " ".join(_strings(tokens[2])) == "rest rest 101 98 95 107 104 100 rest rest 109 105 101 101 98 95"
    assert tokens.dtype == np.int8 and factors.dtype == np.int8


def _music21_render(factors: list[int]) -> list[tuple[float, int | None]]:
    """(onset in quarter notes, MIDI pitch or None for a rest) per event, rendered by music21."""
    from music21 import note, pitch, scale, stream

    tonic, octave, mode, r1, r2, *arps = factors
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    root = pitch.Pitch(f"{names[tonic]}{(4, 5, 6)[octave]}")
    if mode == 2:  # dMelodies' "blues" (not a music21 scale), spelled as intervals over the root
        degrees = [root.transpose(i) for i in ("P1", "M2", "m3", "P4", "d5", "M6", "m7", "P8", "M9")]
    else:
        sc = scale.MajorScale(root) if mode == 0 else scale.HarmonicMinorScale(root)
        degrees = sc.getPitches(root, root.transpose("M9"))
    assert len(degrees) == 9
    # Triads on scale degrees 1, 4, 5, 1 (1-based: 1-3-5, 4-6-8, 5-7-9, 1-3-5).
    chords = [[1, 3, 5], [4, 6, 8], [5, 7, 9], [1, 3, 5]]
    melody = []
    for chord, arp in zip(chords, arps, strict=True):
        triad = [degrees[d - 1] for d in chord]
        melody.extend(triad if arp == 0 else triad[::-1])
    rhythms = list(itertools.combinations(range(8), 6))
    part = stream.Part()
    notes = iter(melody)
    for r in (r1, r2):
        for slot in range(8):
            if slot in rhythms[r]:
                part.append(note.Note(next(notes), quarterLength=0.5))
            else:
                part.append(note.Rest(quarterLength=0.5))
    return [(float(n.offset), n.pitch.midi if isinstance(n, note.Note) else None) for n in part.flatten().notesAndRests]


def test_sampled_melodies_match_music21() -> None:
    rng = np.random.default_rng(2020)
    idx = np.concatenate([[0, dm.NUM_MELODIES - 1], rng.choice(dm.NUM_MELODIES, 20, replace=False)])
    # Make sure every scale is in the sample whatever the seed gives.
    idx = np.concatenate([idx, [dm.factors_to_index(np.array([5, 1, s, 3, 20, 1, 0, 1, 0])) for s in range(3)]])
    tokens, factors = dm.generate_dmelodies(idx)
    for row, f in zip(tokens, factors, strict=True):
        events = _music21_render(f.tolist())
        assert len(events) == 16
        for tick, (onset, midi) in enumerate(events):
            assert onset == tick / 2  # one event per 8th-note tick
            expected = REST_ID if midi is None else VOCAB.pitch_id(midi)
            assert row[tick] == expected, (f.tolist(), tick, _strings(row))


def test_full_set_invariants_and_inverse(full: tuple[np.ndarray, np.ndarray]) -> None:
    tokens, factors = full
    assert tokens.shape == (dm.NUM_MELODIES, 16) and factors.shape == (dm.NUM_MELODIES, 9)
    assert tokens.dtype == np.int8 and factors.dtype == np.int8
    assert not (tokens == HOLD_ID).any()  # every note and rest is its own one-tick event
    assert ((tokens >= 2).sum(axis=1) == 12).all()
    assert tokens.min() == REST_ID and tokens.max() == len(VOCAB) - 1  # pitches span 60..109
    np.testing.assert_array_equal(factors[::9973], dm.index_to_factors(np.arange(0, dm.NUM_MELODIES, 9973)))
    # The inverse recovers every factor exactly; it is a function of the tokens, so this also
    # proves all 1,354,752 melodies are distinct.
    np.testing.assert_array_equal(dm.factors_from_tokens(tokens), factors)


def test_subset_matches_full(full: tuple[np.ndarray, np.ndarray]) -> None:
    idx = np.random.default_rng(3).integers(0, dm.NUM_MELODIES, 1000)
    tokens, factors = dm.generate_dmelodies(idx, chunk_size=77)
    np.testing.assert_array_equal(tokens, full[0][idx])
    np.testing.assert_array_equal(factors, full[1][idx])


def test_factors_from_non_dataset_rows() -> None:
    tokens, _ = dm.generate_dmelodies(np.array([0]))
    row = tokens[0].astype(np.int64)
    silent = np.full(16, REST_ID)
    held = row.copy()
    held[3] = HOLD_ID  # bar 1 loses its 4th note: 5 onsets, 11 notes
    octave_up = np.where(row >= 2, row + 36, row)  # C7 root: outside octaves 4..6 (>109 -> out of vocab)
    stray = row.copy()
    stray[0] = 2 + 61 - 60  # C#4 as the lowest of the first notes of a C melody
    bogus = row.copy()
    bogus[15] = 200  # out-of-vocabulary id counts as HOLD
    got = dm.factors_from_tokens(np.stack([silent, held, octave_up, stray, bogus]))
    assert got[0].tolist() == [-1] * 9
    assert got[1].tolist() == [0, 0, 0, -1, 0, -1, -1, -1, -1]
    assert got[2][:4].tolist() == [0, -1, 0, 0]
    # Root C#4 (lowest of C#4 E4 G4): pitch classes of C major relative to C# fit no scale.
    assert got[3][:3].tolist() == [1, 0, -1]
    assert got[4].tolist() == [0] * 9  # slot 15 was a rest: silence either way


def test_bad_input_raises() -> None:
    with pytest.raises(DatasetError, match="0..1354751"):
        dm.generate_dmelodies(np.array([dm.NUM_MELODIES]))
    with pytest.raises(DatasetError, match="1-D integer"):
        dm.index_to_factors(np.array([0.5]))
    with pytest.raises(DatasetError, match="rhythm_bar2 must lie in 0..27"):
        dm.factors_to_index(np.array([0, 0, 0, 0, 28, 0, 0, 0, 0]))
    with pytest.raises(DatasetError, match=r"\(N, 16\)"):
        dm.factors_from_tokens(np.zeros((2, 24), dtype=np.int64))


def test_save_dmelodies(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "dmelodies.npz"
    summary = dm.save_dmelodies(out)
    assert summary["melodies"] == dm.NUM_MELODIES
    assert isinstance(summary["seconds"], float) and summary["seconds"] >= 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["dmelodies.npz"]  # no temp file left
    with np.load(out) as z:  # no allow_pickle needed
        assert sorted(z.files) == ["factors", "tokens", "vocab"]
        assert z["vocab"].tolist() == list(VOCAB.tokens)
        assert Vocabulary.from_tokens(z["vocab"].tolist()) == VOCAB
        tokens, factors = z["tokens"], z["factors"]
    assert tokens.shape == (dm.NUM_MELODIES, 16) and factors.shape == (dm.NUM_MELODIES, 9)
    idx = np.array([0, 12345, dm.NUM_MELODIES - 1])
    expected = dm.generate_dmelodies(idx)
    np.testing.assert_array_equal(tokens[idx], expected[0])
    np.testing.assert_array_equal(factors[idx], expected[1])
