"""Faults and bad input, in memory (issue 10, Build 4): none may crash or hang the bridge, leave a
note sounding, or move its barlines off the DAW's.

A simulated DAW sends MIDI clock whose pulse ``n`` falls at a known time; the bridge logs a
``bar`` event when each of its bars starts, so "no barline shift" is checked by comparing those
times with the DAW's time of pulse ``96 k``. The bridge runs on a manual clock (``Sim``): every
test is exact and takes well under a second of CPU, whatever the machine's load.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from arvae_midi.midi_bridge.clock import pulse_period
from arvae_midi.midi_bridge.config import BridgeConfig
from arvae_midi.midi_bridge.messages import MidiDecoder
from tests.midi_bridge.harness import Sim, cc, note, sounding_after

P = pulse_period(120)  # 1/48 s
CLOCK, START, STOP, CONTINUE = [0xF8], [0xFA], [0xFC], [0xFB]


class Daw:
    """A DAW's MIDI clock: pulse ``index`` at ``time`` for each entry of :attr:`pulses`."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.pulses: list[tuple[float, int]] = []

    def play(self, t0: float, first: int, count: int, bpm: float = 120, jitter: float = 0.0, seed: int = 0) -> float:
        """Pulses ``first .. first + count - 1`` from ``t0``; returns the time the next one is due."""
        period, rng = pulse_period(bpm), np.random.default_rng(seed)
        for k in range(count):
            t = t0 + k * period + (float(rng.uniform(-jitter, jitter)) if jitter and k else 0.0)
            self.pulses.append((t, first + k))
        return t0 + count * period

    def send(self, skip: Iterable[int] = ()) -> None:
        """Queue every pulse except the indices in ``skip`` (lost on the way)."""
        lost = set(skip)
        for t, index in self.pulses:
            if index not in lost:
                self.sim.at(t, CLOCK)

    def time_of(self, index: int) -> float:
        """When the DAW played pulse ``index`` (its last occurrence)."""
        return [t for t, i in self.pulses if i == index][-1]


def _bars(sim: Sim) -> list[tuple[int, float]]:
    return [(e["bar"], e["t"]) for e in sim.events if e["event"] == "bar"]


def _assert_on_the_daw_grid(sim: Sim, daw: Daw, tolerance: float = 1e-9) -> None:
    """Every bar the bridge started, it started when the DAW played that bar's first pulse."""
    bars = _bars(sim)
    assert bars
    for bar, t in bars:
        assert t == pytest.approx(daw.time_of(96 * bar), abs=tolerance), f"bar {bar}"


def _assert_balanced(sim: Sim) -> None:
    """Each note_on is ended by one note_off; nothing sounds at the end; no off without an on."""
    sounding: set[tuple[int, int]] = set()
    for _, m in sim.out:
        if m.type == "note_on" and m.velocity > 0:
            assert (m.channel, m.note) not in sounding
            sounding.add((m.channel, m.note))
        elif m.type in ("note_on", "note_off"):
            assert (m.channel, m.note) in sounding
            sounding.discard((m.channel, m.note))
    assert sounding == set() and sim.core.tracker.sounding == {}


def _one_bar(sim: Sim, t0: float = 0.0, keys: tuple[int, ...] = (60, 64, 67)) -> None:
    for i, key in enumerate(keys):
        sim.at(t0 + 24 * i * P, note("on", key))
        sim.at(t0 + (24 * i + 12) * P, note("off", key))


def _ons(sim: Sim, since: float = 0.0) -> list[tuple[float, str]]:
    return [(t, text) for t, text in sim.sent(since) if text.startswith("on")]


def _stop_and_check(sim: Sim, t: float) -> None:
    """Stop: every note ended by its own note_off, then All Notes Off, and nothing after."""
    sim.at(t, STOP)
    sim.run_until(t + 0.1)
    _assert_balanced(sim)
    assert sim.sent(since=t)[-1] == (pytest.approx(t), "cc 123 0")


# ----- bad bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes_never_crash_hang_or_leave_a_note(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim = Sim(BridgeConfig(thru=True), latency=0.01)
    sim.clock_run(0.0, 120, 96 * 4)
    _one_bar(sim)
    for t in np.sort(rng.uniform(0.0, 8.0, 3000)):
        sim.at(float(t), rng.integers(0, 256, int(rng.integers(1, 9))).tolist())
    sim.run_until(8.0)  # the harness asserts the bridge never spins in place (no hang)
    _stop_and_check(sim, 8.0)
    assert sim.core.status.ignored > 0


def test_a_sysex_flood_keeps_every_pulse_and_note() -> None:
    sim = Sim()
    daw = Daw(sim)
    daw.play(0.0, 0, 96 * 3)
    sim.at(0.0, START)
    daw.send()
    _one_bar(sim)
    rng = np.random.default_rng(0)
    for k in range(1000):  # 1000 SysEx of 256 bytes in two bars; every 7th carries a clock byte
        body = rng.integers(0, 128, 256).tolist()
        if k % 7 == 0:
            body[100] = 0xFE  # active sensing inside SysEx: realtime, dropped
        sim.at(k * 0.004 + 0.0001, [0xF0, *body, 0xF7])
    sim.run_until(96 * 3 * P - 1e-6)
    assert sim.core.decoder.sysex == 1000 and sim.core.decoder.sysex_unterminated == 0
    assert sim.core.transport.pulse == 96 * 3 - 1
    _assert_on_the_daw_grid(sim, daw)
    assert [(round(t / P), x) for t, x in _ons(sim)] == [(96, "on 62 100"), (120, "on 66 100"), (144, "on 69 100")]
    _stop_and_check(sim, 96 * 3 * P)


def test_an_unterminated_sysex_swallows_nothing() -> None:
    sim = Sim()
    daw = Daw(sim)
    daw.play(0.0, 0, 96 * 2)
    sim.at(0.0, START)
    sim.at(0.0, [0xF0, 0x7D, 0x01, 0x02])  # no F7, ever
    daw.send()
    _one_bar(sim)
    sim.run_until(96 * 2 * P - 1e-6)
    assert sim.core.decoder.sysex_unterminated == 1
    _assert_on_the_daw_grid(sim, daw)
    assert [(round(t / P), x) for t, x in _ons(sim)] == [(96, "on 62 100"), (120, "on 66 100"), (144, "on 69 100")]
    _stop_and_check(sim, 96 * 2 * P)


def test_a_sysex_split_across_events_is_skipped_whole() -> None:
    decoder = MidiDecoder()
    out = [*decoder.feed([0xF0, 1, 2]), *decoder.feed([3, 0xF8, 4]), *decoder.feed([5, 0xF7]),
           *decoder.feed([0x90, 60, 100])]  # fmt: skip
    assert [m.type for m in out] == ["clock", "note_on"]
    assert decoder.sysex == 1 and decoder.sysex_unterminated == 0


def test_events_glued_into_one_sysex_keep_the_pulse_count_and_the_tempo() -> None:
    # RtMidi's JACK input appends events to an unterminated SysEx until one ends in F7: here
    # pulses 100..140 and a note reach the bridge as one event, at the time of the last of them.
    sim = Sim(BridgeConfig(thru=True))
    daw = Daw(sim)
    daw.play(0.0, 0, 96 * 4)
    sim.at(0.0, START)
    glued = [0xF0, 0x7D, 0x01, 0x02]
    for t, index in daw.pulses:
        if 100 <= index <= 140:
            glued += [0xF8] + ([0x90, 72, 90] if index == 110 else []) + ([0x80, 72, 0] if index == 120 else [])
        else:
            sim.at(t, CLOCK)
    sim.at(daw.time_of(140), [*glued, 0xF7])
    sim.run_until(96 * 4 * P - 1e-6)
    assert sim.core.transport.pulse == 96 * 4 - 1
    assert sim.core.transport.bpm == pytest.approx(120, rel=0.01)
    _assert_on_the_daw_grid(sim, daw)
    _stop_and_check(sim, 96 * 4 * P)


def test_20000_ccs_in_two_seconds_lose_no_pulse_and_shift_no_barline() -> None:
    sim = Sim()
    daw = Daw(sim)
    daw.play(0.0, 0, 96 * 4)
    sim.at(0.0, START)
    daw.send()
    _one_bar(sim)
    for i in range(20000):  # 10 kHz of knob moves over bar 0 (2 s at 120 bpm)
        sim.at(i * 0.0001, cc(20 + i % 6, (i * 7) % 128))
    sim.run_until(96 * 4 * P - 1e-6)
    assert sim.core.transport.pulse == 96 * 4 - 1
    _assert_on_the_daw_grid(sim, daw)
    assert [round(t / P) for t, _ in _ons(sim)][:3] == [96, 120, 144]
    # The newest (speculative) run, the one that plays, saw the knobs.
    assert sim.core.status.misses == 0 and sim.engine.calls[-1]["knobs"]["rhythmic_complexity"] is not None
    _stop_and_check(sim, 96 * 4 * P)


# ----- clock faults ---------------------------------------------------------------------------


def test_clock_jitter_and_tempo_jumps_keep_the_barlines() -> None:
    sim = Sim()
    daw = Daw(sim)
    t = 0.0
    for bar, bpm in enumerate((120, 150, 90, 132, 120)):  # a tempo jump at every barline
        t = daw.play(t, 96 * bar, 96, bpm=bpm, jitter=0.002, seed=bar)
    sim.at(0.0, START)
    daw.send()
    for bar in range(4):
        _one_bar(sim, daw.time_of(96 * bar), (60 + bar, 64, 67))
    sim.run_until(t - 1e-3)
    assert [b for b, _ in _bars(sim)] == [1, 2, 3, 4]
    # within a third of a pulse: the +-2 ms jitter plus the loop's lag after a 25 % tempo step
    _assert_on_the_daw_grid(sim, daw, tolerance=0.005)
    _stop_and_check(sim, t)


def test_pulses_lost_on_the_way_shift_no_barline() -> None:
    sim = Sim()
    daw = Daw(sim)
    daw.play(0.0, 0, 96 * 4)
    sim.at(0.0, START)
    daw.send(skip=[130, 131, 132, 200])
    _one_bar(sim)
    sim.run_until(96 * 4 * P - 1e-6)
    assert sim.core.transport.pulse == 96 * 4 - 1
    _assert_on_the_daw_grid(sim, daw, tolerance=0.001)  # the loop re-settles after each gap
    _stop_and_check(sim, 96 * 4 * P)


@pytest.mark.parametrize("gap_s", [0.5, 1.5, 9.0])
def test_a_clock_that_stops_without_stop_ends_notes_and_rejoins_the_daw_bar(gap_s: float) -> None:
    sim = Sim(BridgeConfig(thru=True))
    daw = Daw(sim)
    daw.play(0.0, 0, 140)  # the cable is pulled 44 pulses into bar 1...
    back = 140 + round(gap_s / P)
    end = daw.play(back * P, back, 96 * 4)  # ...and plugged in again while the DAW plays on
    sim.at(0.0, START)
    daw.send()
    _one_bar(sim)
    sim.at(130 * P, note("on", 70))  # held through the loss
    sim.at(back * P + 5 * P, note("off", 70))
    bar = back // 96 + 1  # the first whole bar after the clock returns
    _one_bar(sim, daw.time_of(96 * bar), (62,))
    sim.run_until(end - 1e-3)
    lost_at = 139 * P + 0.3
    assert (pytest.approx(lost_at), "cc 123 0") in sim.sent()
    assert sounding_after(m for t, m in sim.out if t <= lost_at + 1e-9) == set()
    _assert_on_the_daw_grid(sim, daw)
    # bar `bar` was heard after the return: its answer plays in the next bar, on the DAW's beat
    answers = [(t, x) for t, x in _ons(sim, since=back * P) if x == "on 64 100"]
    assert answers[0] == (pytest.approx(daw.time_of(96 * (bar + 1))), "on 64 100")
    _stop_and_check(sim, end)


def test_notes_played_while_the_clock_is_lost_do_not_replace_it() -> None:
    sim = Sim(BridgeConfig(thru=True, bpm=90))
    daw = Daw(sim)
    daw.play(0.0, 0, 100)
    back = 100 + round(3.0 / P)
    end = daw.play(back * P, back, 96 * 3)
    sim.at(0.0, START)
    daw.send()
    _one_bar(sim, 3.0, (62, 65, 69))  # played during the gap: heard thru, not a new song at 90 bpm
    sim.run_until(end - 1e-3)
    assert [e["source"] for e in sim.events if e["event"] == "bar"] == ["clock"] * len(_bars(sim))
    assert sim.core.transport.source == "clock" and sim.core.transport.pulse == back + 96 * 3 - 1
    _assert_on_the_daw_grid(sim, daw)
    assert [x for _, x in _ons(sim)] == ["on 62 100", "on 65 100", "on 69 100"]  # thru only
    _stop_and_check(sim, end)


def test_a_gap_too_long_to_guess_waits_then_song_position_realigns() -> None:
    sim = Sim()
    daw = Daw(sim)
    daw.play(0.0, 0, 100)
    back = 100 + round(40.0 / P)  # 40 s: 20 bars
    daw.play(back * P, back, 50)
    relocate = 6 * (back // 6 + 20)  # the user locates the DAW a little later (SPP, then Continue)
    t_spp = (back + 50) * P
    end = daw.play(t_spp + 0.1, relocate, 96 * 3)
    sim.at(0.0, START)
    daw.send()
    sim.at(t_spp, [0xF2, (relocate // 6) & 0x7F, (relocate // 6) >> 7], CONTINUE)
    sim.run_until(t_spp - 1e-3)
    assert sim.core.status.state == "waiting" and "Song Position" in (sim.core.status.message or "")
    assert _ons(sim, since=back * P) == []
    first = (relocate // 96 + 1) * 96
    _one_bar(sim, daw.time_of(first))
    sim.run_until(end - 1e-3)
    assert [b for b, _ in _bars(sim)][-3:] == [first // 96, first // 96 + 1, first // 96 + 2]
    _assert_on_the_daw_grid(sim, daw)
    assert _ons(sim, since=t_spp)[0] == (pytest.approx(daw.time_of(first + 96)), "on 62 100")
    _stop_and_check(sim, end)


@pytest.mark.parametrize("target", [0, 8, 64, 100])  # sixteenths: start, mid-bar 0, bar 4, mid-bar 6
def test_song_position_jumps_while_playing_keep_the_grid(target: int) -> None:
    sim = Sim(BridgeConfig(thru=True))
    daw = Daw(sim)
    t_jump = daw.play(0.0, 0, 150)
    end = daw.play(t_jump, 6 * target, 96 * 3)  # the DAW's loop jumps back (or ahead) at pulse 150
    sim.at(0.0, START)
    daw.send()
    _one_bar(sim)
    sim.at(140 * P, note("on", 71))  # thru, held across the jump
    sim.at(t_jump - 0.001, [0xF2, target & 0x7F, target >> 7])
    sim.at(t_jump + 10 * P, note("off", 71))
    sim.run_until(end - 1e-3)
    assert (pytest.approx(t_jump - 0.001), "cc 123 0") in sim.sent()
    jumped = [(b, t) for b, t in _bars(sim) if t >= t_jump]
    assert jumped and all(t == pytest.approx(daw.time_of(96 * b)) for b, t in jumped)
    assert jumped[0][0] == 6 * target // 96 + 1
    _stop_and_check(sim, end)


def test_notes_held_across_stop_are_ended_once() -> None:
    sim = Sim(BridgeConfig(thru=True))
    daw = Daw(sim)
    daw.play(0.0, 0, 96 + 50)
    sim.at(0.0, START)
    daw.send()
    sim.at(0.0, note("on", 60))  # held through bar 0 and across the Stop
    sim.at(100 * P, note("on", 65), note("on", 72))  # thru, held across the Stop
    sim.at(120 * P, STOP)
    sim.at(130 * P, note("off", 60), note("off", 65), note("off", 72))  # released after Stop
    sim.run_until(150 * P)
    at_stop = [x for t, x in sim.sent() if t == pytest.approx(120 * P)]
    assert sorted(at_stop[:-1]) == ["off 60", "off 62", "off 65", "off 72"] and at_stop[-1] == "cc 123 0"
    assert sim.sent(since=120 * P + 1e-6) == []  # the late releases send nothing twice
    _assert_balanced(sim)


def test_start_stop_and_clock_faults_in_any_order_leave_nothing_sounding() -> None:
    rng = np.random.default_rng(5)
    sim = Sim(BridgeConfig(thru=True, mode="loop"), latency=0.02)
    daw = Daw(sim)
    t = 0.0
    for _ in range(12):  # play, stall, jump, stop... in random order and tempi
        t = daw.play(
            t + float(rng.uniform(0, 0.6)),
            int(rng.integers(0, 400)),
            int(rng.integers(10, 200)),
            bpm=float(rng.uniform(60, 200)),
            jitter=0.002,
            seed=int(rng.integers(1000)),
        )
    daw.send(skip=rng.integers(0, 600, 40).tolist())
    for _ in range(60):
        kind = rng.choice(["start", "stop", "continue", "spp", "on", "off"])
        at = float(rng.uniform(0, t))
        key = int(rng.integers(55, 80))
        data = {
            "start": START,
            "stop": STOP,
            "continue": CONTINUE,
            "spp": [0xF2, int(rng.integers(128)), 0],
            "on": note("on", key).bytes(),
            "off": note("off", key).bytes(),
        }[str(kind)]
        sim.at(at, data)
    sim.run_until(t)
    _stop_and_check(sim, t)
