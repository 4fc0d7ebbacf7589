"""Speculative inference: the variation of a bar's final content is ready before the barline.

The bridge re-runs the variation on every change of the captured bar or the knobs; the bar
plays the batch whose input equals its final tokens. Hardware-free, on the manual clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from arvae_midi.midi_bridge.config import BridgeConfig
from tests.midi_bridge.harness import FakeEngine, Sim, cc, note, sounding_after

P = 60.0 / (120 * 24)  # one pulse at 120 bpm, seconds


class KnobShiftEngine(FakeEngine):
    """Transposes by 2 plus the contour knob's value mod 5: a knob move changes the variation."""

    def vary(self, bar: np.ndarray, knobs: Mapping[str, int | None], amount: float = 0.0, seed: int | None = 0,
             n: int = 1, pitch_mask: np.ndarray | None = None, key_lock: bool | None = None,
             context: Sequence[np.ndarray] | np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        self.shift = 2 + (knobs.get("contour") or 0) % 5
        return super().vary(bar, knobs, amount, seed, n, pitch_mask, key_lock, context)


def _ons(sim: Sim) -> list[tuple[int, str]]:
    return [(round(t / P), text) for t, text in sim.sent() if text.startswith("on")]


def test_input_changed_mid_bar_replaces_the_speculative_variation() -> None:
    """A note added mid-bar re-runs the variation; the final input's result is ready long before
    the barline and is what plays; the stale speculative results are never heard."""
    sim = Sim(BridgeConfig(), latency=0.01)
    sim.clock_run(0.0, 120, 96 * 2)
    sim.at(0.0, note("on", 60))
    sim.at(12 * P, note("off", 60))
    sim.run_until(40 * P)
    first = [c["bar"].copy() for c in sim.engine.calls]
    assert len(first) == 2  # onset and release each ran the bar as it stood
    sim.at(48 * P, note("on", 67))  # the phrase goes on: beat 3
    sim.at(60 * P, note("off", 67))
    sim.run_until(96 * 2 * P - 1e-6)
    calls = sim.engine.calls
    assert len(calls) == 4 and not np.array_equal(calls[-1]["bar"], first[-1])
    assert _ons(sim) == [(96, "on 62 100"), (144, "on 69 100")]  # the final bar's variation (+2)
    bar = next(e for e in sim.events if e["event"] == "bar" and e["bar"] == 1)
    # Ready 10 ms (the job's latency) after the bar's last input event, 1.5 beats before the barline.
    assert bar["last_input"] == 60 * P
    assert abs(bar["ready_at"] - (60 * P + 0.01)) < 1e-9
    assert bar["margin"] > 0.3
    assert sounding_after(m for _, m in sim.out) == set()


def test_a_change_while_the_worker_runs_waits_and_only_the_newest_runs() -> None:
    """Jobs take 30 pulses: changes during a run queue up and only the newest input runs next."""
    sim = Sim(BridgeConfig(), latency=30 * P)
    sim.clock_run(0.0, 120, 96 * 2)
    for i, key in enumerate((60, 62, 64)):  # 6 changes within 28 pulses: 16th notes on beat 1's 8ths
        sim.at(12 * i * P, note("on", key))
        sim.at((12 * i + 4) * P, note("off", key))
    sim.run_until(96 * 2 * P - 1e-6)
    assert len(sim.engine.calls) == 2  # the first onset, then the final bar; the 4 in between skipped
    assert _ons(sim) == [(96, "on 62 100"), (108, "on 64 100"), (120, "on 66 100")]


def test_knob_moved_after_the_close_replaces_the_scheduled_variation() -> None:
    """Between the capture close (pulse 93) and the barline a knob move re-runs the pending
    variation; its result replaces the one already scheduled."""
    sim = Sim(BridgeConfig(), engine=KnobShiftEngine())
    sim.clock_run(0.0, 120, 96 * 2)
    sim.at(0.0, note("on", 60))
    sim.at(24 * P, note("off", 60))
    sim.at(94 * P, cc(23, 3))  # contour knob -> shift 2 + 3
    sim.run_until(96 * 2 * P - 1e-6)
    assert _ons(sim) == [(96, "on 65 100")]
    assert [e["bar"] for e in sim.events if e["event"] == "replace"] == [1]


def test_loop_mode_hears_a_knob_move_on_the_next_bar() -> None:
    sim = Sim(BridgeConfig(mode="loop"), engine=KnobShiftEngine())
    sim.clock_run(0.0, 120, 96 * 4)
    sim.at(0.0, note("on", 60))
    sim.at(24 * P, note("off", 60))
    sim.at(150 * P, cc(23, 1))  # during bar 1 (the loop plays): heard in bar 2
    sim.at(290 * P, cc(23, 4))  # in bar 3 after its close (pulse 285): still heard in bar 3's next, bar 4
    sim.run_until(96 * 4 * P - 1e-6)
    assert _ons(sim) == [(96, "on 62 100"), (192, "on 63 100"), (288, "on 63 100")]
    sim.clock_run(96 * 4 * P, 120, 96, start=False)
    sim.run_until(96 * 5 * P - 1e-6)
    assert _ons(sim)[-1] == (384, "on 66 100")

