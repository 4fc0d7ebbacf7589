"""Bar capture: positions in pulses -> 24 tokens, the early close, cut notes, mean velocity."""

from __future__ import annotations

from arvae_midi.core.tokens import Vocabulary
from arvae_midi.midi_bridge.capture import BarCapture, bar_of, close_position


def test_close_position_and_bar_of() -> None:
    assert close_position(0) == 93 and close_position(2) == 285
    assert bar_of(0) == 0 and bar_of(92.9) == 0 and bar_of(93) == 1 and bar_of(-3) == 0


def test_a_bar_becomes_tokens_with_mean_velocity(vocab: Vocabulary) -> None:
    capture = BarCapture(vocab)
    capture.note_on(0, 0, 60, 100)
    capture.note_off(12, 0, 60)
    capture.note_on(32, 3, 64, 50)  # beat 1 + 1/3 on another channel
    capture.note_off(40, 3, 64)
    capture.note_off(41, 0, 70)  # stray release: ignored
    capture.note_on(90, 0, 67, 90)  # last tick, still held when the bar closes: cut at the barline
    capture.note_on(94, 0, 72, 80)  # rounds onto bar 1's downbeat
    bar0 = capture.close(0)
    assert vocab.to_strings(bar0.tokens) == (
        ["60", "__", "__", "rest", "__", "__"] + ["__", "__", "64", "__", "rest", "__"]
        + ["__"] * 6 + ["__"] * 5 + ["67"]
    )
    assert bar0.velocity == 80 and not bar0.empty
    capture.note_off(100, 0, 67)  # the cut note's release: stray now
    capture.note_off(102, 0, 72)
    bar1 = capture.close(1)
    assert vocab.to_strings(bar1.tokens)[:2] == ["72", "rest"]
    assert bar1.velocity == 80
    assert capture.close(2).empty and capture.close(2).velocity is None


def test_repeated_key_and_reset(vocab: Vocabulary) -> None:
    capture = BarCapture(vocab)
    capture.note_on(0, 0, 60, 100)
    capture.note_on(24, 0, 60, 100)  # struck again without a release
    capture.note_off(36, 0, 60)
    assert vocab.to_strings(capture.close(0).tokens)[6:10] == ["60", "__", "__", "rest"]
    capture.note_on(100, 0, 60, 100)
    capture.reset()
    assert capture.close(1).empty
