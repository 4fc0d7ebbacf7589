"""The two bridge hooks the control surface uses, on the manual-clock harness (exact, no threads):
the ``scheduled`` log event (what the next bar plays, before it starts) and ``set_mode``."""

from __future__ import annotations

from arvae_midi.midi_bridge.config import BridgeConfig
from tests.midi_bridge.harness import Sim, note


def test_scheduled_tells_the_next_bar_before_it_starts() -> None:
    sim = Sim(BridgeConfig(bpm=120), latency=0.01)
    sim.at(1.0, note("on", 60, 100))
    sim.at(1.5, note("off", 60), note("on", 64, 80))
    sim.at(2.0, note("off", 64))
    sim.run_until(3.5)
    scheduled = [e for e in sim.events if e["event"] == "scheduled"]
    bar = next(e for e in sim.events if e["event"] == "bar" and e["bar"] == 1)
    assert [e["bar"] for e in scheduled] == [1]
    event = scheduled[0]
    assert event["t"] < bar["t"] == 3.0  # known before bar 1 starts (bar 0 spans 1.0..3.0 s)
    assert event["tokens"] == bar["tokens"] and event["plan"] == "variation"
    assert {text.split()[2] for _, text in sim.sent() if text.startswith("on")} == {str(event["velocity"])}
    assert event["source_bar"] == 0
    vocab = sim.engine.meta.vocab
    assert [vocab.pitch_table[t] for t in event["source_tokens"] if vocab.pitch_table[t] >= 0] == [60, 64]


def test_set_mode_switches_respond_to_loop_from_the_next_bar() -> None:
    sim = Sim(BridgeConfig(bpm=120))
    sim.at(1.0, note("on", 60), note("off", 60))
    sim.run_until(2.5)
    sim.core.set_mode("loop")
    assert sim.core.status.mode == "loop"
    sim.run_until(9.5)
    plans = {e["bar"]: e["plan"] for e in sim.events if e["event"] == "bar"}
    # respond would stop after two silent bars; loop keeps re-varying the last captured bar
    assert [plans[b] for b in (1, 2, 3, 4)] == ["variation"] * 4
    sim.core.set_mode("respond")
    assert sim.core.config.mode == "respond"
