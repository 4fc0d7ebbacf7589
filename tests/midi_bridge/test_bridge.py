"""Whole bridge runs on a manual clock: exact output messages at exact times.

At 120 bpm a MIDI clock pulse is 1/48 s and a bar 2 s. The fake engine transposes each
variation up 2 semitones (variation i: 2 + i), so the expected output follows from the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arvae_midi.core.scales import allowed_pitch_classes, token_mask
from arvae_midi.core.tokens import Note
from arvae_midi.midi_bridge.capture import make_bar
from arvae_midi.midi_bridge.config import BridgeConfig
from tests.midi_bridge.harness import FakeEngine, Sim, cc, note, sounding_after

P = 1 / 48  # seconds per pulse at 120 bpm


def approx_sent(sent: list[tuple[float, str]]) -> list[tuple[object, str]]:
    return [(pytest.approx(t, abs=1e-9), text) for t, text in sent]


def test_internal_tempo_respond_run() -> None:
    """No clock: the first note is the downbeat; bar 0's variation plays in bar 1, then the
    bridge waits for the next phrase after two silent bars."""
    sim = Sim(BridgeConfig(bpm=120))
    sim.at(1.0, note("on", 60, 100))
    sim.at(1.5, note("off", 60), note("on", 64, 80))
    sim.at(2.0, note("off", 64), note("on", 67, 90))
    sim.at(2.95, note("off", 67))  # released after the last tick's midpoint: sounds to the barline
    sim.run_until(10.0)
    sim.shutdown()
    assert sim.sent() == approx_sent([
        (3.0, "on 62 90"), (3.5, "off 62"), (3.5, "on 66 90"), (4.0, "off 66"),
        (4.0, "on 69 90"), (5.0, "off 69"), (10.0, "cc 123 0"),
    ])
    transport = [e["what"] for e in sim.events if e["event"] == "transport"]
    assert transport == ["internal start", "idle"]
    assert sim.core.status.misses == 0
    # the next phrase starts a new grid at its first note
    sim2 = Sim(BridgeConfig(bpm=120))
    sim2.at(1.0, note("on", 60), note("off", 60))
    sim2.at(20.0, note("on", 72))
    sim2.at(20.5, note("off", 72))
    sim2.run_until(23.0)
    assert [s for s in sim2.sent() if s[0] > 19] == approx_sent([(22.0, "on 74 100"), (22.5, "off 74")])


def test_midi_clock_run_with_knobs_and_stop() -> None:
    """Start + clock; knob moves before a bar closes apply to the next bar, later ones a bar
    later; Stop cuts the sounding note and sends All Notes Off."""
    sim = Sim(BridgeConfig())
    t0 = 1.0
    sim.clock_run(t0, 120, 96 * 2 + 13)
    sim.at(t0, note("on", 60))
    sim.at(t0 + 24 * P, note("off", 60))
    sim.at(t0 + 30 * P, note("on", 62))  # beat 1 + 1/4
    sim.at(t0 + 48 * P, note("off", 62))
    sim.at(t0 + 56 * P, note("on", 64))  # beat 2 + 1/3, held past the barline: cut there
    sim.at(t0 + 48 * P, cc(21, 100))  # note_density during bar 0: used for bar 1
    sim.at(t0 + 94 * P, cc(20, 5))  # after bar 0 closed (pulse 93): re-runs bar 1's variation, and bar 2's
    sim.at(t0 + 100 * P, note("off", 64))
    sim.at(t0 + 96 * P, note("on", 72, 60))
    sim.at(t0 + 120 * P, note("off", 72))
    sim.at(t0 + 204 * P, "stop" and [0xFC])
    sim.run_until(8.0)
    bar1, bar2 = t0 + 96 * P, t0 + 192 * P
    assert sim.sent() == approx_sent([
        (bar1, "on 62 100"), (bar1 + 24 * P, "off 62"),
        (bar1 + 30 * P, "on 64 100"), (bar1 + 48 * P, "off 64"),
        (bar1 + 56 * P, "on 66 100"), (bar2, "off 66"),
        (bar2, "on 74 60"),
        (t0 + 204 * P, "off 74"), (t0 + 204 * P, "cc 123 0"),
    ])
    # Speculative runs: one per change of bar 0 (3 onsets, 2 releases in it) or of the knobs.
    calls = sim.engine.calls
    first = [c for c in calls if c["seed"] == 0]
    second = [c for c in calls if c["seed"] == 1]  # seed + index of the captured bar
    assert first[-2]["knobs"] == {"rhythmic_complexity": None, "note_density": 100, "pitch_range": None,
                                  "contour": None}
    # The knob moved between the close and the barline: bar 1's variation was re-run with it.
    assert first[-1]["knobs"] == second[-1]["knobs"] == {"rhythmic_complexity": 5, "note_density": 100,
                                                         "pitch_range": None, "contour": None}
    bars = [e for e in sim.events if e["event"] == "bar"]
    assert [b["bar"] for b in bars] == [1, 2]
    assert bars[0]["knobs"]["rhythmic_complexity"] == 5
    assert bars[0]["margin"] == pytest.approx(2 / 96, abs=1e-6)  # re-run at the knob move, 2 pulses early
    assert sim.core.status.state == "stopped"


def test_loop_mode_re_varies_every_bar_with_the_current_knobs() -> None:
    sim = Sim(BridgeConfig(mode="loop"))
    t0 = 0.0
    sim.clock_run(t0, 120, 96 * 4)
    sim.at(t0, note("on", 67, 70))
    sim.at(t0 + 48 * P, note("off", 67))
    for bar, value in ((1, 10), (2, 90)):
        sim.at(t0 + (96 * bar + 40) * P, cc(22, value))
    sim.run_until(t0 + 96 * 4 * P - 1e-6)
    ons = [(round((t - t0) / P), text) for t, text in sim.sent() if text.startswith("on")]
    assert ons == [(96, "on 69 70"), (192, "on 69 70"), (288, "on 69 70")]
    # One decode per input: bar 3 asks for bar 4 with the same bar and knobs, the batch is reused
    assert [c["knobs"]["pitch_range"] for c in sim.engine.calls] == [None, None, 10, 90]  # onset, release, knobs
    assert {c["seed"] for c in sim.engine.calls} == {0}  # same source bar: same seed, stable loop


def test_new_input_replaces_the_loop() -> None:
    sim = Sim(BridgeConfig(mode="loop"))
    sim.clock_run(0.0, 120, 96 * 4)
    sim.at(0.0, note("on", 60), note("off", 60))
    sim.at(192 * P, note("on", 72))
    sim.at(200 * P, note("off", 72))
    sim.run_until(96 * 4 * P - 1e-6)
    ons = [(round(t / P), text) for t, text in sim.sent() if text.startswith("on")]
    assert ons == [(96, "on 62 100"), (192, "on 62 100"), (288, "on 74 100")]


def test_variations_per_bar_play_in_the_following_bars() -> None:
    sim = Sim(BridgeConfig(variations_per_bar=2))
    sim.clock_run(0.0, 120, 96 * 4)
    sim.at(0.0, note("on", 60))
    sim.at(24 * P, note("off", 60))
    sim.run_until(96 * 4 * P - 1e-6)
    ons = [(round(t / P), text) for t, text in sim.sent() if text.startswith("on")]
    assert ons == [(96, "on 62 100"), (192, "on 63 100")]  # variation 0 (+2), then 1 (+3), then silence
    assert [c["n"] for c in sim.engine.calls] == [2, 2]  # onset, release; bar 2 plays row 1 of the same batch


def test_missed_deadline_falls_back_to_thru_and_is_counted() -> None:
    # Every inference takes 0.1 s; bar 0's last change (a release at pulse 92) leaves 4 pulses
    # (83 ms) before bar 1: bar 1 falls back; bar 1's own input ends early and plays in bar 2.
    sim = Sim(BridgeConfig(fallback="thru"), latency=0.1)
    sim.clock_run(0.0, 120, 96 * 3)
    sim.at(0.0, note("on", 60))
    sim.at(92 * P, note("off", 60))
    sim.at(102 * P, note("on", 65, 77))  # bar 1: echoed (fallback thru) and captured
    sim.at(108 * P, note("off", 65))
    sim.at(200 * P, note("on", 50, 77))  # bar 2: not echoed (bar 2 is not a fallback bar)
    sim.at(210 * P, note("off", 50))
    sim.run_until(96 * 3 * P - 1e-6)
    assert sim.sent() == approx_sent([
        (102 * P, "on 65 77"), (108 * P, "off 65"),
        (198 * P, "on 67 77"), (204 * P, "off 67"),
    ])
    assert sim.core.status.misses == 1
    missed = [e for e in sim.events if e["event"] == "bar" and e.get("miss")]
    assert [e["bar"] for e in missed] == [1]


def test_missed_deadline_with_silence_plays_nothing_late() -> None:
    sim = Sim(BridgeConfig(), latency=0.5)
    sim.clock_run(0.0, 120, 96 * 3)
    sim.at(0.0, note("on", 60))
    sim.at(90 * P, note("off", 60))  # the bar's last change, 6 pulses (125 ms) before bar 1
    sim.run_until(96 * 3 * P - 1e-6)
    assert sim.sent() == []
    assert sim.core.status.misses == 1


def test_freeze_repeats_the_output_and_skips_inference() -> None:
    sim = Sim(BridgeConfig())
    sim.clock_run(0.0, 120, 96 * 4)
    sim.at(0.0, note("on", 60))
    sim.at(24 * P, note("off", 60))
    sim.at(120 * P, cc(25, 127))  # freeze on during bar 1
    sim.at(130 * P, note("on", 72))  # ignored for the output while frozen
    sim.at(140 * P, note("off", 72))
    sim.at(250 * P, cc(25, 0))  # release during bar 2: bar 3 answers bar 2 (empty): silence
    sim.run_until(96 * 4 * P - 1e-6)
    ons = [(round(t / P), text) for t, text in sim.sent() if text.startswith("on")]
    assert ons == [(96, "on 62 100"), (192, "on 62 100")]
    assert len(sim.engine.calls) == 2  # bar 0's onset and release; none while frozen


def test_thru_echoes_on_the_output_channel_and_shares_keys_safely() -> None:
    sim = Sim(BridgeConfig(thru=True, out_channel=2, in_channel=1))
    sim.clock_run(0.0, 120, 96 * 2)
    sim.at(0.0, note("on", 60, 90))
    sim.at(24 * P, note("off", 60))
    sim.at(30 * P, note("on", 70, 90, channel=5))  # other channel: neither echoed nor captured
    sim.at(36 * P, note("off", 70, channel=5))
    sim.at(90 * P, note("on", 62, 50))  # the player holds the key the variation will strike
    sim.at(100 * P, note("off", 62))  # its release must not cut the variation's note
    sim.run_until(96 * 2 * P - 1e-6)
    sim.shutdown()
    end = sim.clock.now()
    assert sim.sent() == approx_sent([
        (0.0, "on 60 90 ch2"), (24 * P, "off 60 ch2"),
        (90 * P, "on 62 50 ch2"),
        (96 * P, "off 62 ch2"), (96 * P, "on 62 70 ch2"),  # re-strike: the variation takes the key
        (120 * P, "off 62 ch2"),
        (186 * P, "on 64 70 ch2"),  # the variation of the key struck at pulse 90 (last tick of bar 0)
        (end, "off 64 ch2"), (end, "cc 123 0 ch2"),  # shutdown: explicit note_off, then All Notes Off
    ])


def test_engine_receives_the_captured_tokens(vocab) -> None:  # type: ignore[no-untyped-def]
    engine = FakeEngine()
    sim = Sim(BridgeConfig(), engine=engine)
    sim.clock_run(0.0, 120, 96 * 3)
    sim.at(94 * P, note("on", 48))  # a hair before bar 1's downbeat: counts as it; folds up an octave
    sim.at(108 * P, note("off", 48))
    sim.at(168 * P, note("on", 79))
    sim.at(180 * P, note("off", 79))
    sim.run_until(96 * 3 * P - 1e-6)
    tokens = vocab.to_strings(engine.calls[-1]["bar"])  # the last speculative run had the final bar
    assert tokens[0] == "60" and tokens[3] == "rest" and tokens[18] == "79" and tokens[21] == "rest"


def test_key_lock_passes_the_scale_of_the_recent_bars(vocab) -> None:  # type: ignore[no-untyped-def]
    for lock in (True, False):
        sim = Sim(BridgeConfig(key_lock=lock))
        sim.clock_run(0.0, 120, 96 * 2)
        _c_major_bar = (60, 62, 64, 65, 67, 69, 71, 72)
        for i, key in enumerate(_c_major_bar):
            sim.at(12 * i * P, note("on", key))
            sim.at((12 * i + 6) * P, note("off", key))
        sim.run_until(96 * 2 * P - 1e-6)
        call = sim.engine.calls[-1]
        assert call["pitch_mask"] is None and call["key_lock"] is lock  # the engine builds the mask
        if not lock:
            assert call["context"] is None
            continue
        bars = np.stack([*call["context"], call["bar"]])  # the bars the engine's key lock reads
        assert allowed_pitch_classes(bars, vocab) == frozenset((0, 2, 4, 5, 7, 9, 11))


def test_the_real_tiny_model_drives_a_run() -> None:
    """The committed fixture model through the bridge, hardware-free: its variation plays in bar 1."""
    from arvae_midi.engine.engine import Engine

    path = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.onnx"
    engine = Engine.load(path, device="cpu", threads=1)
    sim = Sim(BridgeConfig(), engine=engine)
    sim.clock_run(0.0, 120, 96 * 2)
    for i, key in enumerate((60, 64, 67, 72)):
        sim.at(24 * i * P, note("on", key, 96))
        sim.at((24 * i + 12) * P, note("off", key))
    sim.at(10 * P, cc(21, 127))
    sim.run_until(96 * 2 * P - 1e-6)
    sim.shutdown()
    bars = [e for e in sim.events if e["event"] == "bar"]
    assert bars[0]["bar"] == 1 and not bars[0].get("miss")
    # recompute what the bridge should have asked for and compare the played tokens
    bar0 = make_bar(0, [Note(k, i, i + 0.5, 96) for i, k in enumerate((60, 64, 67, 72))], engine.meta.vocab)
    mask = token_mask(allowed_pitch_classes(bar0.tokens[None], engine.meta.vocab), engine.meta.vocab)
    knobs = {"rhythmic_complexity": None, "note_density": 127, "pitch_range": None, "contour": None}
    want = engine.vary(bar0.tokens, knobs, amount=0.0, seed=0, n=1, pitch_mask=mask)[0]
    assert bars[0]["tokens"] == [int(x) for x in want]
    ons = [(t, m) for t, m in sim.out if m.type == "note_on" and m.velocity > 0]
    assert ons and all(96 * P <= t < 192 * P for t, _ in ons)
    assert sounding_after(m for _, m in sim.out) == set()
