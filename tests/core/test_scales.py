"""Scale estimation and the key-lock token mask."""

from __future__ import annotations

import numpy as np

from arvae_midi.core.scales import (
    Scale,
    allowed_pitch_classes,
    estimate_scale,
    in_scale_share,
    pitch_class_histogram,
    token_mask,
)
from arvae_midi.core.tokens import HOLD_ID, REST_ID, Note, Vocabulary, quantize_bar


def melody(vocab: Vocabulary, pitches: list[int], length: float = 0.5) -> np.ndarray:
    notes = [Note(p, i * length, (i + 1) * length) for i, p in enumerate(pitches)]
    return quantize_bar(notes, vocab)[None]


def test_histogram_weighs_by_duration(vocab: Vocabulary) -> None:
    toks = quantize_bar([Note(60, 0, 3), Note(62, 3, 4)], vocab)[None]
    hist = pitch_class_histogram(toks, vocab)
    assert hist[0] == 3.0 and hist[2] == 1.0 and hist.sum() == 4.0


def test_c_major_arpeggio(vocab: Vocabulary) -> None:
    assert estimate_scale(melody(vocab, [60, 64, 67, 72, 67, 64, 62, 60]), vocab) == Scale(0, "major")


def test_a_harmonic_minor_with_leading_tone(vocab: Vocabulary) -> None:
    scale = estimate_scale(melody(vocab, [69, 71, 72, 68, 69, 64, 69, 72]), vocab)
    assert scale == Scale(9, "harmonic minor") and scale.name == "A harmonic minor"


def test_d_major_scale(vocab: Vocabulary) -> None:
    scale = estimate_scale(melody(vocab, [62, 64, 66, 67, 69, 71, 73, 74]), vocab)
    assert scale is not None and scale.pitch_classes == Scale(2, "major").pitch_classes


def test_silence_has_no_scale_and_no_lock(vocab: Vocabulary) -> None:
    silent = np.full((1, 24), HOLD_ID)
    silent[0, 0] = REST_ID
    assert estimate_scale(silent, vocab) is None
    assert allowed_pitch_classes(silent, vocab) is None
    assert token_mask(None, vocab).all()


def test_mask_keeps_hold_rest_and_input_chromatic_notes(vocab: Vocabulary) -> None:
    toks = melody(vocab, [60, 62, 64, 65, 67, 69, 71, 61])  # C major + a C# passing note
    pcs = allowed_pitch_classes(toks, vocab)
    assert pcs is not None and 1 in pcs and 3 not in pcs
    mask = token_mask(pcs, vocab)
    assert mask[HOLD_ID] and mask[REST_ID]
    assert mask[vocab.pitch_id(61)] and not mask[vocab.pitch_id(63)]
    assert in_scale_share(toks, vocab, pcs) == 1.0
    assert in_scale_share(melody(vocab, [63, 60]), vocab, pcs) == 0.5
