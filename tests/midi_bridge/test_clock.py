"""The transport: internal tempo, MIDI clock with Start/Stop/Continue/SPP, smoothing, timeouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arvae_midi.midi_bridge.clock import ManualClock, Transport, pulse_period

P120 = pulse_period(120)


def test_manual_clock_never_goes_back() -> None:
    clock = ManualClock(1.0)
    clock.advance(0.5)
    assert clock.now() == 1.5
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(1.0)


def test_internal_tempo_maps_both_ways() -> None:
    transport = Transport(bpm=90)
    assert transport.time_at(0) == math.inf  # not running
    transport.start_internal(10.0)
    assert transport.time_at(96) == pytest.approx(10.0 + 4 * 60 / 90)
    assert transport.position_at(10.0 + 60 / 90) == pytest.approx(24)


def test_bpm_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="bpm"):
        Transport(bpm=5)


def _pulses(transport: Transport, times: np.ndarray) -> None:
    for t in times:
        transport.on_pulse(float(t))


def test_start_then_pulses_count_from_zero_and_predict_ahead() -> None:
    transport = Transport(bpm=100)  # the guess differs from the clock's 120 bpm
    assert transport.on_start(0.0)
    assert transport.on_pulse(0.01) == "started" and transport.pulse == 0
    _pulses(transport, 0.01 + P120 * np.arange(1, 10))
    assert transport.pulse == 9 and transport.bpm == pytest.approx(120)
    assert transport.time_at(11) == pytest.approx(0.01 + 11 * P120)
    assert transport.time_at(12) == math.inf  # more than 2 pulses ahead: wait for the clock


def test_jittery_clock_is_smoothed() -> None:
    rng = np.random.default_rng(0)
    transport = Transport()
    transport.on_start(0.0)
    times = P120 * np.arange(480) + rng.uniform(-0.002, 0.002, 480)
    times[0] = 0.0
    errors = []
    for i, t in enumerate(times):
        transport.on_pulse(float(t))
        if i > 100:
            errors.append(transport.time_at(i + 1) - (i + 1) * P120)
    assert abs(transport.bpm - 120) < 0.5
    # predictions scatter less than the +-2 ms the pulses do (uniform: sd 1.15 ms)
    assert float(np.std(errors)) < 0.0009


def test_stop_continue_and_song_position() -> None:
    transport = Transport()
    transport.on_start(0.0)
    _pulses(transport, P120 * np.arange(50))
    assert transport.on_stop(1.5) and not transport.running
    transport.on_continue(3.0)
    assert transport.armed and transport.armed_position == 50
    assert transport.on_pulse(3.0 + P120) == "started" and transport.pulse == 50
    transport.on_stop(4.0)
    assert not transport.on_song_position(4.1, 32)  # stopped: just relocates
    transport.on_continue(4.2)
    transport.on_pulse(4.3)
    assert transport.pulse == 192
    assert transport.on_song_position(4.4, 4)  # while playing: a jump
    assert transport.armed_position == 24


def test_a_stalled_clock_times_out_and_resumes() -> None:
    transport = Transport(clock_timeout=0.3)
    transport.on_start(0.0)
    _pulses(transport, P120 * np.arange(10))
    assert transport.timeout_at() == pytest.approx(9 * P120 + 0.3)
    assert not transport.check_timeout(9 * P120 + 0.29)
    assert transport.check_timeout(9 * P120 + 0.31) and transport.lost and not transport.running
    # the DAW played on through the gap: the pulse at 2.0 s is pulse 96 (2 s at 48 pulses/s)
    assert transport.on_pulse(2.0) == "resumed" and transport.pulse == 96


def test_clock_takes_over_from_the_internal_tempo() -> None:
    transport = Transport()
    transport.start_internal(0.0)
    assert transport.on_pulse(1.0) == "switched"
    assert transport.source == "clock" and not transport.running
    assert transport.clock_present(1.2) and not transport.clock_present(1.4)
