"""The four attributes on hand-worked bars."""

from __future__ import annotations

import numpy as np
import pytest

from arvae_midi.core.attributes import (
    ATTRIBUTE_NAMES,
    RHYTHM_WEIGHTS,
    compute_attributes,
    contour,
    note_density,
    pitch_range,
    rhythmic_complexity,
)
from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary


def bar(vocab: Vocabulary, events: dict[int, int | str]) -> np.ndarray:
    """A bar of HOLDs with pitches (int) or 'rest' at the given ticks; tick 0 defaults to rest."""
    toks = np.full(24, HOLD_ID)
    toks[0] = REST_ID
    for tick, ev in events.items():
        toks[tick] = REST_ID if ev == "rest" else vocab.pitch_id(int(ev))
    return toks


def test_weights_table_sums_as_reference() -> None:
    assert RHYTHM_WEIGHTS.sum() == pytest.approx(27.79)
    assert RHYTHM_WEIGHTS[0] == 0.2 and RHYTHM_WEIGHTS[6] == 0.67 and RHYTHM_WEIGHTS[12] == 0.25


def test_four_quarter_notes(vocab: Vocabulary) -> None:
    toks = bar(vocab, {0: 60, 6: 64, 12: 67, 18: 72})[None]
    assert rhythmic_complexity(toks, vocab)[0] == pytest.approx((0.2 + 0.67 + 0.25 + 0.67) / 27.79)
    assert note_density(toks, vocab)[0] == pytest.approx(4 / 24)
    assert pitch_range(toks, vocab)[0] == pytest.approx(12 / 26)
    assert contour(toks, vocab)[0] == pytest.approx(12 / 26)


def test_syncopated_triplets_are_complex(vocab: Vocabulary) -> None:
    # Onsets on every triplet off-beat (weight 2 each) of all four beats.
    events = {b * 6 + t: 70 - b for b in range(4) for t in (2, 4)}
    toks = bar(vocab, events)[None]
    assert rhythmic_complexity(toks, vocab)[0] == pytest.approx(16 / 27.79)
    # Falling line: last pitch 67, first 70.
    assert contour(toks, vocab)[0] == pytest.approx(-3 / 26)
    assert pitch_range(toks, vocab)[0] == pytest.approx(3 / 26)


def test_rests_are_not_onsets(vocab: Vocabulary) -> None:
    toks = bar(vocab, {0: "rest", 3: 60, 6: "rest", 9: "rest"})[None]
    assert note_density(toks, vocab)[0] == pytest.approx(1 / 24)
    assert rhythmic_complexity(toks, vocab)[0] == pytest.approx(0.5 / 27.79)


def test_single_note_and_silence_have_no_range_or_contour(vocab: Vocabulary) -> None:
    toks = np.stack([bar(vocab, {5: 80}), bar(vocab, {})])
    np.testing.assert_array_equal(pitch_range(toks, vocab), [0, 0])
    np.testing.assert_array_equal(contour(toks, vocab), [0, 0])
    np.testing.assert_array_equal(note_density(toks, vocab), [1 / 24, 0])


def test_every_tick_an_onset(vocab: Vocabulary) -> None:
    toks = np.array([[vocab.pitch_id(55 + (i % 30)) for i in range(24)]])
    attrs = compute_attributes(toks, vocab)
    assert attrs.shape == (1, len(ATTRIBUTE_NAMES)) and attrs.dtype == np.float32
    np.testing.assert_allclose(attrs[0], [1.0, 1.0, 23 / 26, 23 / 26], rtol=1e-6)


def test_vectorised_matches_rowwise(vocab: Vocabulary, rng: np.random.Generator) -> None:
    toks = rng.integers(0, len(vocab), size=(50, 24))
    full = compute_attributes(toks, vocab)
    rows = np.concatenate([compute_attributes(t[None], vocab) for t in toks])
    np.testing.assert_array_equal(full, rows)


def test_empty_batch_and_bad_input(vocab: Vocabulary) -> None:
    assert compute_attributes(np.zeros((0, 24), int), vocab).shape == (0, 4)
    with pytest.raises(ValueError):
        compute_attributes(np.full((1, 24), 99), vocab)
    with pytest.raises(ValueError):
        rhythmic_complexity(np.zeros((1, 16), int), vocab)
