"""Values several packages share, each defined once here (numpy-free, cheap to import).

Values that belong to one concept live with it instead: the attribute names and their short
forms in :mod:`arvae_midi.core.attributes`, the grid in :mod:`arvae_midi.core.tokens`, the shipped
model's path in :mod:`arvae_midi.presets`, the bridge's modes and backends in
:mod:`arvae_midi.midi_bridge.config` and :mod:`arvae_midi.midi_bridge.ports`.
"""

from __future__ import annotations

#: Ids of a dataset file's ``split`` column (the dataset builders write them, training,
#: evaluation and export read them).
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

#: Velocity of a note whose velocity is not known: a bar written from tokens, a silent bar's mean.
DEFAULT_VELOCITY = 90

#: Highest knob position: knobs are MIDI CC values 0..KNOB_MAX, in the CLI, the bridge and the engine.
KNOB_MAX = 127
#: Knob positions (0..127).
KNOB_STEPS = KNOB_MAX + 1

