"""Commands from the page and OSC, and the knob state's one entry point shared with the CC path."""

from __future__ import annotations

import pytest

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.errors import ConfigError
from arvae_midi.midi_bridge.knobs import CCMap, KnobState
from arvae_midi.ui import UI_MODULES, require_ui
from arvae_midi.ui.protocol import Command, CommandError, key_lock_scale, note_groups, parse_json_command, parse_osc

NAMES = list(ATTRIBUTE_NAMES)


def test_page_commands_parse_to_the_same_commands_as_osc() -> None:
    assert parse_json_command('{"cmd": "knob", "attribute": "contour", "value": 99}', NAMES) == Command("contour", 99)
    assert parse_osc("/arvae/knob/contour", [99], NAMES) == Command("contour", 99)
    assert parse_osc("/arvae/knob/contour", [1.0], NAMES) == Command("contour", 127)  # float 0..1 scales
    assert parse_osc("/arvae/knob/contour", [0.5], NAMES) == Command("contour", 64)
    assert parse_json_command('{"cmd": "amount", "value": 0.25}', NAMES) == parse_osc("/arvae/amount", [0.25], NAMES)
    assert parse_osc("/arvae/freeze", [1], NAMES) == Command("freeze", True)
    assert parse_json_command('{"cmd": "mode", "value": "loop"}', NAMES) == parse_osc("/arvae/mode", ["loop"], NAMES)


@pytest.mark.parametrize(("address", "args", "says"), [
    ("/arvae/knob/brightness", [3], "attribute must be one of"),
    ("/arvae/knob/contour", [128], "integer 0..127 or a float 0..1"),
    ("/arvae/knob/contour", [1.5], "integer 0..127 or a float 0..1"),
    ("/arvae/knob/contour", [float("nan")], "integer 0..127 or a float 0..1"),
    ("/arvae/knob/contour", [], "expected one argument"),
    ("/arvae/amount", [2.0], "amount: value must be a number in 0..1"),
    ("/arvae/freeze", [5], "freeze: value must be 0 or 1"),
    ("/arvae/mode", ["shuffle"], "mode: value must be one of respond, loop"),
    ("/arvae/tempo", [120], "unknown address"),
    ("/other/knob", [1], "outside /arvae/"),
])
def test_bad_osc_messages_say_what_is_valid(address: str, args: list[object], says: str) -> None:
    with pytest.raises(CommandError, match=says.replace("(", r"\(").replace(".", r"\.")):
        parse_osc(address, args, NAMES)


@pytest.mark.parametrize(("text", "says"), [
    ("not json", "not JSON"),
    ('["knob"]', "JSON object"),
    ('{"cmd": "knob", "attribute": "x", "value": 1}', "attribute must be one of"),
    ('{"cmd": "jump", "value": 1}', "unknown cmd 'jump'"),
    ('{"cmd": "knob", "attribute": "contour", "value": true}', "integer 0..127"),
])
def test_bad_page_commands_say_what_is_valid(text: str, says: str) -> None:
    with pytest.raises(CommandError, match=says):
        parse_json_command(text, NAMES)


def test_knob_state_set_is_the_cc_path() -> None:
    cc_map = CCMap()
    by_cc, by_set = KnobState(cc_map), KnobState(cc_map)
    for control, value in ((21, 90), (24, 127), (25, 64)):
        assert by_cc.handle(0, control, value)
    by_set.set("note_density", 90)
    by_set.set("amount", 1.0)
    by_set.set("freeze", True)
    assert by_cc.snapshot() == by_set.snapshot()
    for bad in (128, 64.5, float("nan"), True):
        with pytest.raises(ValueError, match="integer in 0..127"):
            by_set.set("note_density", bad)
    with pytest.raises(ValueError, match="amount must lie in 0..1"):
        by_set.set("amount", 1.5)
    with pytest.raises(ValueError, match="unknown knob 'tempo'; valid: rhythmic_complexity"):
        by_set.set("tempo", 1)
    assert by_set.snapshot() == by_cc.snapshot()  # a refused value changes nothing


def test_note_groups_and_scale() -> None:
    vocab = Vocabulary()
    bar = [vocab.pitch_id(60), 0, 0, 0, 0, 0, vocab.pitch_id(64), 0, 0, 0, 0, 0, vocab.pitch_id(67)] + [0] * 11
    assert note_groups(bar, vocab, velocity=80) == [[60, 0.0, 1.0, 80], [64, 1.0, 1.0, 80], [67, 2.0, 2.0, 80]]
    scale = key_lock_scale([bar], vocab)
    assert scale is not None and scale["name"] == "C major" and {0, 4, 7} <= set(scale["pitch_classes"])
    assert key_lock_scale([], vocab) is None


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in UI_MODULES else real(name, *a))
    with pytest.raises(ConfigError) as info:
        require_ui("--ui")
    assert str(info.value) == ("--ui needs the [ui] extra: pip install 'arvae-midi[ui]' "
                               "(missing: websockets, python-osc)")
