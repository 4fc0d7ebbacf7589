"""CC maps (TOML, validation, round trip), live knob state, and the --learn flow."""

from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path

import pytest

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.errors import ConfigError
from arvae_midi.midi_bridge.clock import MonotonicClock
from arvae_midi.midi_bridge.knobs import CCMap, KnobState, load_cc_map, save_cc_map
from arvae_midi.midi_bridge.learn import learn_cc_map


def test_default_map_is_cc_20_to_25() -> None:
    cc_map = load_cc_map()
    assert cc_map.attributes == dict(zip(ATTRIBUTE_NAMES, (20, 21, 22, 23), strict=True))
    assert (cc_map.amount, cc_map.freeze, cc_map.channel) == (24, 25, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("volume = 7\n", "unknown key.*volume.*valid keys"),
        ("[attributes]\ntempo = 20\n", "unknown attribute.*tempo"),
        ("amount = 123\n", "CC 123 outside 0..119"),
        ("amount = 20\n", "CC 20 assigned twice"),
        ("freeze = 'x'\n", "freeze: expected an integer"),
        ("channel = 17\n", "channel must be 0"),
        ("amount = \n", "invalid TOML"),
    ],
)
def test_bad_maps_are_rejected_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_cc_map(path)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    cc_map = CCMap({"contour": 74, "note_density": 71}, amount=1, freeze=64, channel=10)
    save_cc_map(cc_map, tmp_path / "m.toml")
    assert load_cc_map(tmp_path / "m.toml") == cc_map


def test_knob_state_starts_unset_and_follows_its_channel() -> None:
    state = KnobState(CCMap(channel=2))
    assert state.snapshot().values == dict.fromkeys(ATTRIBUTE_NAMES)
    assert not state.handle(0, 20, 64)  # channel 1: not ours
    assert state.handle(1, 20, 64) and state.handle(1, 24, 127) and state.handle(1, 25, 100)
    assert not state.handle(1, 7, 100)
    snap = state.snapshot()
    assert snap.values["rhythmic_complexity"] == 64 and snap.amount == 1.0 and snap.freeze
    state.handle(1, 25, 10)
    assert not state.snapshot().freeze


def test_map_restricted_to_the_model_attributes() -> None:
    assert list(CCMap().restricted_to(["contour"]).attributes) == ["contour"]


def test_learn_assigns_the_controls_moved_in_turn() -> None:
    events: queue.Queue[tuple[float, Sequence[int]]] = queue.Queue()
    clock = MonotonicClock()
    moves = iter([[30, 31], [30, 40], [41], [42], [43], [44, 44]])  # each prompt: the user's knob burst
    prompts: list[str] = []

    def ask(text: str) -> None:
        prompts.append(text)
        if text.endswith("..."):
            for control in next(moves):
                events.put((clock.now(), [0xB0, control, 5]))
            events.put((clock.now(), [0xB0, 123, 0]))  # channel mode messages are never taken

    events.put((clock.now(), [0xB0, 99, 1]))  # moved before the first prompt: discarded
    cc_map = learn_cc_map(events, list(ATTRIBUTE_NAMES), ask, clock=clock)
    assert cc_map.attributes == {"rhythmic_complexity": 30, "note_density": 40, "pitch_range": 41, "contour": 42}
    assert (cc_map.amount, cc_map.freeze) == (43, 44)
    assert sum(p.endswith("...") for p in prompts) == 6


def test_learn_keeps_the_old_assignment_when_nothing_moves() -> None:
    events: queue.Queue[tuple[float, Sequence[int]]] = queue.Queue()
    cc_map = learn_cc_map(events, ["contour"], lambda text: None, timeout_s=0.01)
    assert cc_map.attributes == {"contour": 23} and (cc_map.amount, cc_map.freeze) == (24, 25)
