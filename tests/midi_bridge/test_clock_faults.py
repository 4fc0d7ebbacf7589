"""The transport under a misbehaving MIDI clock: each rule of the clock module's docstring.

A simulated DAW plays pulse n at time ``n * period`` (plus jitter); the tests deliver some of
those pulses (dropped, late, bunched, after a gap) and check that the transport counts the
DAW's own pulse index, which is what keeps the bridge's barlines on the DAW's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from arvae_midi.midi_bridge.clock import PULSES_PER_BAR, REALIGN_MAX_PULSES, Transport, pulse_period

P120 = pulse_period(120)


def _started(t0: float = 0.0) -> Transport:
    transport = Transport(clock_timeout=0.3)
    transport.on_start(t0)
    return transport


def _play(transport: Transport, pulses: list[tuple[float, int]]) -> list[tuple[int, int]]:
    """Deliver (time, DAW index) pulses in order; (counted, DAW index) after each."""
    seen = []
    for t, index in pulses:
        transport.check_timeout(t)  # as the bridge does before every input it handles
        transport.on_pulse(t)
        seen.append((transport.pulse, index))
    return seen


def _daw(first: int, last: int, period: float = P120, t0: float = 0.0) -> list[tuple[float, int]]:
    return [(t0 + (n - first) * period, n) for n in range(first, last)]


def test_jitter_never_changes_the_count_and_the_tempo_settles() -> None:
    rng = np.random.default_rng(3)
    pulses = [(n * P120 + (rng.uniform(-0.004, 0.004) if n else 0.0), n) for n in range(960)]
    transport = _started()
    assert all(counted == index for counted, index in _play(transport, pulses))
    assert transport.bpm == pytest.approx(120, abs=0.5)


def test_tempo_jumps_keep_counting_and_relock() -> None:
    pulses, t = [], 0.0
    for n in range(6 * PULSES_PER_BAR):
        pulses.append((t, n))
        t += pulse_period((120, 180, 70, 140, 95, 120)[n // PULSES_PER_BAR])  # a new tempo every bar
    transport = _started()
    seen = _play(transport, pulses)
    assert all(counted == index for counted, index in seen)
    assert transport.bpm == pytest.approx(120, rel=0.01)


@pytest.mark.parametrize("missing", [1, 3, 10])
def test_pulses_lost_on_the_way_are_counted(missing: int) -> None:
    pulses = [p for p in _daw(0, 4 * PULSES_PER_BAR) if not 100 <= p[1] < 100 + missing]
    transport = _started()
    seen = _play(transport, pulses)
    # the pulse after the gap is counted provisionally; the next one confirms the tempo held
    after = [counted - index for counted, index in seen if index > 100 + missing]
    assert after and all(d == 0 for d in after)
    assert transport.bpm == pytest.approx(120, rel=0.01)


def test_a_tempo_halving_is_not_taken_for_lost_pulses() -> None:
    pulses = _daw(0, 100) + _daw(100, 300, pulse_period(60), t0=100 * P120)
    transport = _started()
    assert all(counted == index for counted, index in _play(transport, pulses))
    assert transport.bpm == pytest.approx(60, rel=0.01)


def test_late_pulses_in_a_burst_are_counted_once_and_leave_the_tempo_alone() -> None:
    pulses = _daw(0, 300)
    # pulses 150..159 are held up and delivered at once, with pulse 160 (a GIL or xrun stall)
    late = [(pulses[160][0], n) if 150 <= n <= 160 else (t, n) for t, n in pulses]
    transport = _started()
    seen = _play(transport, late)
    assert all(counted == index for counted, index in seen)
    assert transport.bpm == pytest.approx(120, rel=0.01)
    assert transport.time_at(300) == pytest.approx(300 * P120, abs=0.002)


@pytest.mark.parametrize(
    ("gap_s", "bpm", "jitter"),
    [(0.5, 120, 0.002), (1.5, 120, 0.004), (7.3, 97, 0.002), (20.0, 140, 0.002), (3.0, 300, 0.002), (60.0, 40, 0.004)],
)
def test_a_clock_back_without_start_rejoins_where_the_daw_played_on(gap_s: float, bpm: float, jitter: float) -> None:
    period = pulse_period(bpm)
    back = 200 + math.ceil(gap_s / period)  # first pulse the bridge hears again
    for seed in range(5):
        rng = np.random.default_rng(seed)
        pulses = [(n * period + (rng.uniform(-jitter, jitter) if n else 0.0), n) for n in range(back + 200)]
        heard = [p for p in pulses if p[1] < 200 or p[1] >= back]
        transport = _started()
        seen = _play(transport, heard)
        assert [c for c, i in seen if c != i] == [], f"seed {seed}"
        assert transport.running and not transport.lost
        assert transport.bpm == pytest.approx(bpm, rel=0.02)


def test_a_gap_too_long_to_guess_waits_for_song_position() -> None:
    period = P120
    back = 200 + REALIGN_MAX_PULSES + 50
    transport = _started()
    _play(transport, _daw(0, 200))
    transport.check_timeout(199 * period + 0.31)
    assert transport.lost
    assert transport.on_pulse(back * period) == "stranded"
    _play(transport, [(n * period, n) for n in range(back + 1, back + 20)])
    assert transport.stranded and not transport.running and math.isinf(transport.time_at(back + 21))
    assert transport.on_song_position((back + 19.5) * period, (back + 20) // 6 + 1)  # the DAW locates
    assert transport.on_pulse((back + 20) * period) == "started" and transport.pulse == 6 * ((back + 20) // 6 + 1)
    assert transport.running and not transport.stranded


def test_song_position_while_lost_wins_over_the_estimate() -> None:
    transport = _started()
    _play(transport, _daw(0, 100))
    transport.check_timeout(99 * P120 + 0.31)
    assert transport.on_song_position(1.0, 64)  # a locate to bar 4 during the gap: the DAW says where
    assert transport.on_pulse(1.5) == "started" and transport.pulse == 384


def test_continue_after_a_lost_clock_resumes_after_the_last_pulse() -> None:
    transport = _started()
    _play(transport, _daw(0, 100))
    transport.check_timeout(99 * P120 + 0.31)
    transport.on_continue(5.0)
    assert transport.armed_position == 100
    assert transport.on_pulse(5.02) == "started" and transport.pulse == 100


def test_stop_after_a_lost_clock_clears_it() -> None:
    transport = _started()
    _play(transport, _daw(0, 100))
    transport.check_timeout(99 * P120 + 0.31)
    assert transport.on_stop(3.0) and not transport.lost
    assert transport.on_pulse(3.1) is None and not transport.running  # a stopped DAW's clock


@pytest.mark.parametrize("target", [0, 16, 33, 200])
def test_song_position_jumps_while_playing(target: int) -> None:
    transport = _started()
    _play(transport, _daw(0, 150))
    assert transport.on_song_position(150 * P120 - 0.001, target)
    assert transport.on_pulse(150 * P120) == "started" and transport.pulse == 6 * target
    _play(transport, [(150 * P120 + i * P120, 0) for i in range(1, 50)])
    assert transport.pulse == 6 * target + 49 and transport.bpm == pytest.approx(120, rel=0.01)
