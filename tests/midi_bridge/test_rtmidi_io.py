"""Arrival times rebuilt from RtMidi's deltas, and the status line's setup figures."""

from __future__ import annotations

import numpy as np

from arvae_midi.midi_bridge.config import BridgeStatus
from arvae_midi.midi_bridge.knobs import KnobSnapshot
from arvae_midi.midi_bridge.rtmidi_io import ArrivalTimes
from arvae_midi.midi_bridge.status import Health, format_status


def _events(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True arrival times (a 120 bpm clock with jitter) and when a poller popped each one."""
    rng = np.random.default_rng(seed)
    arrivals = 100.0 + np.cumsum(rng.uniform(0.015, 0.025, n))
    popped = arrivals + rng.choice([0.0, 0.0005, 0.003, 0.04], size=n, p=[0.2, 0.5, 0.25, 0.05])
    return arrivals, np.maximum.accumulate(popped)  # a queue: popped in order


def test_arrival_times_match_the_true_arrivals_despite_polling_delays() -> None:
    arrivals, popped = _events(500)
    deltas = np.diff(arrivals, prepend=arrivals[0])
    times = ArrivalTimes()
    stamped = np.array([times.stamp(float(d), float(p)) for d, p in zip(deltas, popped, strict=True)])
    assert np.all(stamped <= popped)
    first_prompt = int(np.argmax(popped == arrivals))  # from the first event popped the moment it came
    assert np.allclose(stamped[first_prompt:], arrivals[first_prompt:], atol=1e-9)


def test_a_lost_delta_skews_arrivals_for_one_window_at_most() -> None:
    arrivals, popped = _events(400, seed=1)
    deltas = np.diff(arrivals, prepend=arrivals[0])
    deltas[200] = 0.0  # RtMidi dropped the time of a swallowed event: everything after looks early
    times = ArrivalTimes(window=1.0)
    stamped = np.array([times.stamp(float(d), float(p)) for d, p in zip(deltas, popped, strict=True)])
    error = stamped - arrivals
    first_prompt = int(np.argmax(popped == arrivals))
    healed = popped > popped[200] + 1.0 + 0.1  # a window later, and one prompt pop inside it
    assert np.allclose(error[first_prompt:200], 0.0, atol=1e-9)
    assert np.all(np.abs(error[200:]) <= deltas.max() + 1e-9)
    assert np.allclose(error[healed], 0.0, atol=1e-9)


def test_status_line_shows_dropped_input_realtime_and_what_is_missing() -> None:
    knobs = KnobSnapshot(values={"contour": None}, amount=0.0, freeze=False)
    health = Health(dropped=3, thread_realtime=False, server_realtime=False,
                    notes=("nothing plays into 'arvae-midi:in'",))
    line = format_status(BridgeStatus(), knobs, health)
    assert "drop 3 no-rt jack no-rt" in line
    assert "nothing plays into 'arvae-midi:in'" in line and "waiting for MIDI clock (Start) or a note" in line
    assert "drop" not in format_status(BridgeStatus(), knobs)
