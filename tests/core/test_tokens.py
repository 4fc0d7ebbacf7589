"""Measure grid, vocabulary and note <-> token conversions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arvae_midi.core.tokens import (
    DMELODIES_BOUNDARIES,
    HOLD_ID,
    REST_ID,
    TICK_DURATIONS,
    TICK_POSITIONS,
    Note,
    Vocabulary,
    exact_tick,
    nearest_tick,
    quantize_bar,
    split_into_bars,
    tokens_to_notes,
)
from arvae_midi.errors import OffGridError


def strings(vocab: Vocabulary, tokens: np.ndarray) -> list[str]:
    return vocab.to_strings(tokens)


def test_grid_is_sixteenths_and_triplets() -> None:
    assert len(TICK_POSITIONS) == 24
    beat = TICK_POSITIONS[:6]
    np.testing.assert_allclose(beat, [0, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4])
    np.testing.assert_allclose(TICK_DURATIONS[:6], [1 / 4, 1 / 12, 1 / 6, 1 / 6, 1 / 12, 1 / 4])
    assert TICK_DURATIONS.sum() == pytest.approx(4.0)
    np.testing.assert_allclose(TICK_POSITIONS[6:12], beat + 1)


def test_vocabulary_is_deterministic() -> None:
    vocab = Vocabulary()
    assert vocab.tokens[:3] == ("__", "rest", "55")
    assert vocab.tokens[-1] == "84"
    assert len(vocab) == 32 == len(vocab.tokens)
    assert vocab.pitch_id(60) == 7
    assert vocab.pitch_table[7] == 60
    assert Vocabulary.from_tokens(list(vocab.tokens)) == vocab
    assert len(Vocabulary(60, 109)) == 52  # the dMelodies vocabulary


@pytest.mark.parametrize(
    "tokens",
    [["rest", "55", "57"], ["__", "rest", "60", "62"], ["__", "rest", "a"], ["__"]],
)
def test_vocabulary_rejects_foreign_token_lists(tokens: list[str]) -> None:
    with pytest.raises(ValueError):
        Vocabulary.from_tokens(tokens)


def test_vocabulary_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        Vocabulary(60, 65)
    with pytest.raises(ValueError):
        Vocabulary(80, 60)


def test_octave_folding() -> None:
    vocab = Vocabulary()
    assert vocab.fold(36) == 60
    assert vocab.fold(96) == 84
    assert vocab.fold(97) == 73
    assert vocab.fold(55) == 55


def test_exact_tick_accepts_grid_and_rejects_32nds() -> None:
    assert exact_tick(Fraction(1, 3)) == 2
    assert exact_tick(Fraction(7, 3)) == 14
    assert exact_tick(4.0) == 24
    with pytest.raises(OffGridError):
        exact_tick(Fraction(1, 8))


def test_nearest_tick_rounds_to_closest_boundary() -> None:
    assert nearest_tick(0.01) == 0
    assert nearest_tick(0.30) == 2  # 1/3 is closer than 1/4
    assert nearest_tick(3.99) == 24  # onto the next barline
    assert nearest_tick(-1.0) == 0


def test_quarter_notes(vocab: Vocabulary) -> None:
    notes = [Note(60 + 2 * i, i, i + 1) for i in range(4)]
    toks = strings(vocab, quantize_bar(notes, vocab))
    assert toks[0] == "60" and toks[6] == "62" and toks[12] == "64" and toks[18] == "66"
    assert all(t == "__" for i, t in enumerate(toks) if i % 6)


def test_triplets(vocab: Vocabulary) -> None:
    notes = [Note(60, 0, 1 / 3), Note(62, 1 / 3, 2 / 3), Note(64, 2 / 3, 1)]
    toks = strings(vocab, quantize_bar(notes, vocab))
    assert toks[:6] == ["60", "__", "62", "__", "64", "__"]
    assert toks[6] == "rest" and set(toks[7:]) == {"__"}


def test_note_across_barline_is_cut(vocab: Vocabulary) -> None:
    bars = split_into_bars([Note(60, 3, 6), Note(62, 4.5, 5)])
    assert len(bars) == 2
    first = strings(vocab, quantize_bar(bars[0], vocab))
    assert first[18] == "60" and first[19:] == ["__"] * 5
    second = strings(vocab, quantize_bar(bars[1], vocab))
    # The cut note does not sound on in bar 2: the bar starts with a rest until 62 at beat 1/2.
    assert second[0] == "rest" and second[3] == "62"


def test_onset_just_before_barline_moves_to_next_bar(vocab: Vocabulary) -> None:
    bars = split_into_bars([Note(60, 0, 1), Note(64, 3.99, 5)])
    assert len(bars) == 2 and bars[1][0].start == 0.0


def test_chord_reduces_to_highest_note(vocab: Vocabulary) -> None:
    notes = [Note(60, 0, 2), Note(64, 0, 1), Note(67, 0, 1)]
    toks = strings(vocab, quantize_bar(notes, vocab))
    assert toks[0] == "67"
    # When the top voice stops, the melody moves to the note still sounding.
    assert toks[6] == "60"
    assert toks[12] == "rest"


def test_out_of_range_pitches_fold(vocab: Vocabulary) -> None:
    toks = strings(vocab, quantize_bar([Note(40, 0, 1), Note(100, 1, 2)], vocab))
    assert toks[0] == "64" and toks[6] == "76"


def test_very_short_note_keeps_one_tick(vocab: Vocabulary) -> None:
    toks = strings(vocab, quantize_bar([Note(60, 0, 0.01)], vocab))
    assert toks[0] == "60" and toks[1] == "rest"


def test_repeated_pitch_is_reattacked(vocab: Vocabulary) -> None:
    toks = quantize_bar([Note(60, 0, 1), Note(60, 1, 2)], vocab)
    assert toks[0] == toks[6] == vocab.pitch_id(60)


def test_empty_bar_is_one_rest(vocab: Vocabulary) -> None:
    toks = quantize_bar([], vocab)
    assert toks[0] == REST_ID and (toks[1:] == HOLD_ID).all()


def test_tokens_to_notes_leading_hold_is_silence(vocab: Vocabulary) -> None:
    toks = np.full(24, HOLD_ID)
    toks[6] = vocab.pitch_id(70)
    notes = tokens_to_notes(toks, vocab, offset=8.0)
    assert notes == [Note(70, 9.0, 12.0, 90)]


def test_tokens_to_notes_on_dmelodies_grid() -> None:
    vocab = Vocabulary(60, 109)
    toks = np.array([vocab.pitch_id(60), REST_ID] * 8)
    notes = tokens_to_notes(toks, vocab, tick_positions=DMELODIES_BOUNDARIES)
    assert [(n.start, n.end) for n in notes[:2]] == [(0.0, 0.5), (1.0, 1.5)]


def test_tokens_to_notes_rejects_unknown_ids(vocab: Vocabulary) -> None:
    with pytest.raises(ValueError):
        tokens_to_notes(np.array([99] + [0] * 23), vocab)


bar_tokens = st.lists(
    st.one_of(st.just(HOLD_ID), st.just(REST_ID), st.integers(2, 31)), min_size=24, max_size=24
)


@settings(max_examples=200, deadline=None)
@given(bar_tokens)
def test_tokens_notes_tokens_round_trip(tokens: list[int]) -> None:
    """Any bar decodes to notes that quantize back to the same bar (up to silent spellings)."""
    vocab = Vocabulary()
    toks = np.array(tokens)
    back = quantize_bar(tokens_to_notes(toks, vocab), vocab)
    # Silence has several spellings (leading HOLD, REST then REST): compare sounding pitch per tick.
    def sounding(t: np.ndarray) -> list[int]:
        out, cur = [], -1
        for tok in t:
            cur = -1 if tok == REST_ID else (cur if tok == HOLD_ID else int(vocab.pitch_table[tok]))
            out.append(cur)
        return out

    onsets = lambda t: [i for i, tok in enumerate(t) if tok >= 2]  # noqa: E731
    assert sounding(back) == sounding(toks)
    assert onsets(back) == onsets(toks)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 23), st.integers(1, 24), st.integers(55, 84)), min_size=0, max_size=6
    )
)
def test_monophonic_notes_on_grid_round_trip(events: list[tuple[int, int, int]]) -> None:
    """Non-overlapping on-grid notes survive notes -> tokens -> notes exactly."""
    vocab = Vocabulary()
    notes, t = [], 0
    for gap, length, pitch in events:
        start = t + gap % 3
        end = min(start + length, 24)
        if start >= 24 or end <= start:
            break
        notes.append(Note(pitch, float(TICK_POSITIONS[start]), float(np.append(TICK_POSITIONS, 4.0)[end])))
        t = end
    back = tokens_to_notes(quantize_bar(notes, vocab), vocab)
    assert [(n.pitch, round(n.start, 6), round(n.end, 6)) for n in back] == [
        (n.pitch, round(n.start, 6), round(n.end, 6)) for n in notes
    ]
