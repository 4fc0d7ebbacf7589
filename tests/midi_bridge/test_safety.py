"""Never a stuck note, never a crash: each fault case of the bridge, and a property test."""

from __future__ import annotations

from typing import Any

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arvae_midi.midi_bridge.config import BridgeConfig
from tests.midi_bridge.harness import FakeEngine, Sim, cc, note, sounding_after

P = 1 / 48  # seconds per pulse at 120 bpm
STOP = [0xFC]


def _one_bar(sim: Sim, t0: float = 0.0, keys: tuple[int, ...] = (60, 64, 67)) -> None:
    """Three quarter notes in the bar starting at ``t0``."""
    for i, key in enumerate(keys):
        sim.at(t0 + 24 * i * P, note("on", key))
        sim.at(t0 + (24 * i + 12) * P, note("off", key))


class _FailOnKey65(FakeEngine):
    """Fails every run whose bar holds key 65 (bar 1 of the test below)."""

    def vary(self, bar: Any, *args: Any, **kwargs: Any) -> Any:
        if 65 in self.meta.vocab.pitch_table[np.asarray(bar)]:
            raise RuntimeError("engine failure on key 65")
        return super().vary(bar, *args, **kwargs)


def _ons(sim: Sim) -> list[tuple[int, str]]:
    return [(round(t / P), text) for t, text in sim.sent() if text.startswith("on")]


def test_stop_ends_sounding_notes_and_sends_all_notes_off() -> None:
    sim = Sim()
    sim.clock_run(0.0, 120, 96 + 30)
    sim.at(0.0, note("on", 60))  # held over the barline: cut, its variation lasts all of bar 1
    sim.at(110 * P, STOP)
    sim.run_until(5.0)
    assert sim.sent() == [(pytest.approx(2.0), "on 62 100"), (pytest.approx(110 * P), "off 62"),
                          (pytest.approx(110 * P), "cc 123 0")]
    assert sim.core.scheduler.next_pos() is None


def test_shutdown_mid_bar_ends_everything() -> None:
    sim = Sim(BridgeConfig(thru=True))
    sim.clock_run(0.0, 120, 96 + 30)
    sim.at(0.0, note("on", 60))
    sim.at(100 * P, note("on", 72))  # thru, still held
    sim.run_until(105 * P)
    sim.shutdown("SIGTERM")
    assert sounding_after(m for _, m in sim.out) == set()
    assert sim.sent()[-1][1] == "cc 123 0"
    assert sim.core.tracker.sounding == {}


def test_inference_exception_silences_and_the_bridge_keeps_going() -> None:
    sim = Sim(engine=_FailOnKey65())
    sim.clock_run(0.0, 120, 96 * 4)
    _one_bar(sim, 0.0)  # call 0: fine, plays in bar 1
    sim.at(96 * P, note("on", 65))  # bar 1: call 1 fails
    sim.at(108 * P, note("off", 65))
    _one_bar(sim, 192 * P, (62,))  # bar 2: call 2 fine, plays in bar 3
    sim.run_until(96 * 4 * P - 1e-6)
    texts = sim.sent()
    fail_t = 189 * P  # bar 1 closes, the failing job runs and is collected at once
    assert (pytest.approx(fail_t), "cc 123 0") in texts
    assert _ons(sim) == [(96, "on 62 100"), (120, "on 66 100"), (144, "on 69 100"), (288, "on 64 100")]
    assert sim.core.status.errors == 1 and sim.core.status.misses == 1
    assert sounding_after(m for t, m in sim.out if t <= fail_t) == set()
    errors = [e for e in sim.events if e["event"] == "error"]
    assert "RuntimeError: engine failure on key 65" in errors[0]["error"]


def test_clock_that_stops_cuts_notes_and_resumes_without_start() -> None:
    sim = Sim()
    end = sim.clock_run(0.0, 120, 100)  # pulses stop 4 pulses into bar 1
    sim.at(0.0, note("on", 60))
    sim.at(48 * P, note("off", 60))
    for i in range(96):  # the clock comes back 2 s later, without Start: the DAW played on, 96 pulses
        sim.at(end + 2.0 + i * P, mido.Message("clock"))
    sim.run_until(end + 2.0 + 95 * P)
    texts = sim.sent()
    assert texts[0] == (pytest.approx(96 * P), "on 62 100")
    lost_at = 99 * P + 0.3  # last pulse + the 0.3 s timeout
    assert texts[1:3] == [(pytest.approx(lost_at), "off 62"), (pytest.approx(lost_at), "cc 123 0")]
    assert len(texts) == 3  # nothing was captured for bar 1 after the resume... and nothing is stuck
    what = [e["what"] for e in sim.events if e["event"] == "transport"]
    assert what[-3:] == ["clock lost", "clock resumed", "playing from pulse 196"]


def test_clock_jitter_keeps_the_grid() -> None:
    rng = np.random.default_rng(1)
    jitter = [0.0, *rng.uniform(-0.002, 0.002, 96 * 3 - 1)]  # the first pulse stays after Start
    sim = Sim()
    sim.clock_run(0.0, 120, 96 * 3, jitter=jitter)
    _one_bar(sim, 0.0)
    sim.run_until(96 * 3 * P - 0.01)
    ons = [(t, text) for t, text in sim.sent() if text.startswith("on")]
    assert [text for _, text in ons] == ["on 62 100", "on 66 100", "on 69 100"]
    for (t, _), pulse in zip(ons, (96, 120, 144), strict=True):
        assert abs(t - pulse * P) < 0.003  # within the jitter, not drifting
    assert abs(sim.core.transport.bpm - 120) < 1.0


def test_tempo_change_retimes_pending_notes_and_keeps_pairs() -> None:
    sim = Sim()
    sim.clock_run(0.0, 120, 100)
    slow = 60 / (80 * 24)  # the DAW drops to 80 bpm in bar 1
    t = 100 * P
    for _ in range(200):
        sim.at(t, mido.Message("clock"))
        t += slow
    _one_bar(sim, 0.0)
    sim.run_until(t)
    sim.at(t, STOP)
    sim.run_until(t + 0.1)
    msgs = [m for _, m in sim.out]
    assert sounding_after(msgs) == set()
    offs = {m.note: tt for tt, m in sim.out if m.type == "note_off"}
    ons = {m.note: tt for tt, m in sim.out if m.type == "note_on"}
    assert set(ons) == {62, 66, 69} and all(offs[k] > ons[k] for k in ons)
    # pulses 100.. arrive at the new tempo: the loop re-locks after two of them, so the notes of
    # pulses 120 and 144 land exactly where the DAW's clock puts those pulses
    assert ons[62] == pytest.approx(96 * P)
    assert ons[66] == pytest.approx(100 * P + 20 * slow) and ons[69] == pytest.approx(100 * P + 44 * slow)
    assert sim.core.transport.bpm == pytest.approx(80)


def test_malformed_input_is_ignored_and_running_status_is_understood() -> None:
    sim = Sim()
    sim.clock_run(0.0, 120, 96 * 2)
    sim.at(0.0, [0x90, 60, 100])
    sim.at(1 * P, [0xF0, 1, 2, 3, 4, 0xF7])  # SysEx
    sim.at(2 * P, [0x80, 61, 0])  # stray note_off
    sim.at(3 * P, [5, 6, 7])  # stray data bytes... which running status makes a note_on!
    sim.at(4 * P, [0xF4, 0xF5, 0xF9, 0xFD])  # undefined status bytes
    sim.at(5 * P, [0x90, 60])  # truncated
    sim.at(12 * P, [60, 0])  # running status note_off (velocity 0)... after the truncated one: 60 on
    sim.at(24 * P, [0x90, 64, 100, 64, 0])  # note_on and running-status note_off in one event
    sim.at(48 * P, [0x90, 67, 0xF8, 100])  # a clock byte inside a note_on
    sim.at(60 * P, [0x80, 67, 0])
    sim.at(70 * P, [0x80, 67, 0])  # released twice
    sim.run_until(96 * 2 * P - 1e-6)
    sim.shutdown()
    assert sounding_after(m for _, m in sim.out) == set()
    assert sim.core.status.ignored > 0
    # bar 0 was captured despite the noise; the running-status bytes struck key 60 a second time
    # (velocity 60), so the variation has two 62s at the mean velocity 90
    assert [text for _, text in sim.sent() if text.startswith("on")][:3] == ["on 62 90", "on 62 90", "on 66 90"]


def test_a_flood_of_control_changes_does_not_disturb_timing() -> None:
    sim = Sim()
    sim.clock_run(0.0, 120, 96 * 2)
    _one_bar(sim, 0.0)
    for i in range(5000):  # 5000 CCs in under a bar (2.5 kHz)
        sim.at(i * 0.0003, cc(20 + i % 8, i % 128))
    sim.run_until(96 * 2 * P - 1e-6)
    assert _ons(sim) == [(96, "on 62 100"), (120, "on 66 100"), (144, "on 69 100")]
    knobs = sim.engine.calls[-1]["knobs"]
    assert knobs["rhythmic_complexity"] is not None and sim.core.status.misses == 0


def test_song_position_jump_while_playing_cuts_notes() -> None:
    sim = Sim()
    sim.clock_run(0.0, 120, 110)
    _one_bar(sim, 0.0)
    sim.at(100 * P, [0xF2, 0, 0])  # Song Position Pointer to 0 while playing
    sim.run_until(110 * P)
    texts = sim.sent()
    assert texts == [(pytest.approx(96 * P), "on 62 100"), (pytest.approx(100 * P), "off 62"),
                     (pytest.approx(100 * P), "cc 123 0")]


def test_lost_output_port_marks_the_bridge_failed_without_raising() -> None:
    calls = {"n": 0}

    def flaky(msg: mido.Message) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("port gone")

    sim = Sim(send=flaky)
    sim.clock_run(0.0, 120, 96 * 2)
    _one_bar(sim, 0.0)
    sim.run_until(96 * 2 * P - 1e-6)
    assert sim.core.failed is not None and "port gone" in sim.core.failed
    sim.core.port_lost("output port 'y' lost")
    assert sim.core.closed


def test_lost_input_port_panics() -> None:
    sim = Sim()
    sim.clock_run(0.0, 120, 110)
    sim.at(0.0, note("on", 60))
    sim.run_until(100 * P)
    sim.core.port_lost("input port 'x' lost")
    assert sim.sent()[-2:] == [(pytest.approx(100 * P), "off 62"), (pytest.approx(100 * P), "cc 123 0")]
    assert sim.core.failed == "input port 'x' lost"


# ----- property: whatever comes in, nothing sounds after Stop ---------------------------------

_KEYS = st.integers(40, 90)
_MESSAGE = st.one_of(
    st.tuples(st.just("on"), _KEYS, st.integers(0, 127)),
    st.tuples(st.just("off"), _KEYS, st.just(0)),
    st.tuples(st.just("cc"), st.integers(0, 127), st.integers(0, 127)),
    st.tuples(st.sampled_from(["start", "stop", "continue", "clock", "sysex", "garbage", "songpos"]),
              st.integers(0, 127), st.integers(0, 127)),
)


def _bytes(kind: str, a: int, b: int) -> list[int]:
    if kind == "on":
        return [0x90, a, b]
    if kind == "off":
        return [0x80, a, 0]
    if kind == "cc":
        return [0xB0, a, b]
    return {"start": [0xFA], "stop": [0xFC], "continue": [0xFB], "clock": [0xF8],
            "sysex": [0xF0, a, b, 0xF7], "garbage": [a, b], "songpos": [0xF2, a, b]}[kind]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.tuples(st.floats(0, 4.0), _MESSAGE), max_size=60),
    thru=st.booleans(),
    mode=st.sampled_from(["respond", "loop"]),
    latency=st.sampled_from([0.0, 0.05, 0.2]),
    clock=st.booleans(),
)
def test_no_input_leaves_a_note_sounding_after_stop(
    events: list[tuple[float, tuple[str, int, int]]], thru: bool, mode: str, latency: float, clock: bool
) -> None:
    sim = Sim(BridgeConfig(thru=thru, mode=mode), latency=latency)
    if clock:
        sim.clock_run(0.0, 150, 96 * 2)
    for t, (kind, a, b) in events:
        sim.at(t, _bytes(kind, a, b))
    sim.run_until(4.5)
    sim.at(4.5, STOP)
    sim.run_until(4.6)
    msgs = [m for _, m in sim.out]
    assert sounding_after(msgs) == set()  # explicit note_offs, not counting CC 123
    assert sim.core.tracker.sounding == {}
    # no note_off was ever sent for a key that was not sounding
    sounding: set[tuple[int, int]] = set()
    for m in msgs:
        if m.type == "note_on":
            assert (m.channel, m.note) not in sounding
            sounding.add((m.channel, m.note))
        elif m.type == "note_off":
            assert (m.channel, m.note) in sounding
            sounding.discard((m.channel, m.note))
