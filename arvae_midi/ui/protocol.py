"""One command language for the web page and OSC, and the figures of a bar both of them show.

A :class:`Command` sets one control: an attribute knob (0..127, the CC's own scale), the
variation amount (0..1), freeze (bool) or the mode (``respond`` / ``loop``). The page sends
JSON (``{"cmd": "knob", "attribute": "note_density", "value": 64}``, see ``docs/ui.md``), OSC
peers send ``/arvae/knob/note_density 64`` (see ``docs/osc.md``); both parse to the same
command and go through :meth:`arvae_midi.midi_bridge.knobs.KnobState.set`, the entry point the
CC path uses too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arvae_midi.core.scales import PITCH_NAMES, estimate_scale, pitch_class_histogram
from arvae_midi.core.tokens import Vocabulary, tokens_to_notes
from arvae_midi.midi_bridge.config import MODES

#: Targets a command may set besides the model's attributes.
CONTROLS = ("amount", "freeze", "mode")
OSC_PREFIX = "/arvae/"


class CommandError(ValueError):
    """A command that is malformed or out of range; the message says what is valid."""


@dataclass(frozen=True)
class Command:
    """Set ``target`` (an attribute, ``amount``, ``freeze`` or ``mode``) to ``value``."""

    target: str
    value: int | float | bool | str


def _knob_value(target: str, value: object) -> int:
    """An attribute knob value: an int 0..127 as is, a float 0..1 scaled to 0..127."""
    if isinstance(value, bool):
        raise CommandError(f"knob {target}: value must be an integer 0..127 or a float 0..1, got {value!r}")
    if isinstance(value, int) and 0 <= value <= 127:
        return value
    if isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return round(value * 127)
    raise CommandError(f"knob {target}: value must be an integer 0..127 or a float 0..1, got {value!r}")


def make_command(target: str, value: object, attributes: Sequence[str]) -> Command:
    """Validate one (target, value) pair against the model's ``attributes``; CommandError if bad."""
    if target in attributes:
        return Command(target, _knob_value(target, value))
    if target == "amount":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise CommandError(f"amount: value must be a number in 0..1, got {value!r}")
        return Command("amount", float(value))
    if target == "freeze":
        if value not in (0, 1, True, False):
            raise CommandError(f"freeze: value must be 0 or 1, got {value!r}")
        return Command("freeze", bool(value))
    if target == "mode":
        if value not in MODES:
            raise CommandError(f"mode: value must be one of {', '.join(MODES)}, got {value!r}")
        return Command("mode", str(value))
    valid = ", ".join([*attributes, *CONTROLS])
    raise CommandError(f"unknown control {target!r}; valid: {valid}")


def parse_json_command(text: str | bytes, attributes: Sequence[str]) -> Command:
    """A WebSocket message from the page -> Command (CommandError when malformed)."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"not JSON: {e}") from e
    if not isinstance(doc, dict) or "cmd" not in doc or "value" not in doc:
        raise CommandError('a command is a JSON object {"cmd": ..., "value": ...}')
    cmd = doc["cmd"]
    if cmd == "knob":
        target = doc.get("attribute")
        if target not in attributes:
            raise CommandError(f"knob: attribute must be one of {', '.join(attributes)}, got {target!r}")
        return make_command(str(target), doc["value"], attributes)
    if cmd in CONTROLS:
        return make_command(str(cmd), doc["value"], attributes)
    raise CommandError(f"unknown cmd {cmd!r}; valid: knob, {', '.join(CONTROLS)}")


def parse_osc(address: str, args: Sequence[Any], attributes: Sequence[str]) -> Command:
    """An OSC message (address, arguments) -> Command (CommandError when not ours or malformed)."""
    if not address.startswith(OSC_PREFIX):
        raise CommandError(f"address {address!r} outside {OSC_PREFIX}")
    if len(args) != 1:
        raise CommandError(f"{address}: expected one argument, got {len(args)}")
    path = address[len(OSC_PREFIX):]
    if path.startswith("knob/"):
        target = path[len("knob/"):]
        if target not in attributes:
            raise CommandError(f"{address}: attribute must be one of {', '.join(attributes)}")
        return make_command(target, args[0], attributes)
    if path in CONTROLS:
        return make_command(path, args[0], attributes)
    raise CommandError(f"unknown address {address!r}")


def note_groups(tokens: Sequence[int] | np.ndarray, vocab: Vocabulary, velocity: int = 90) -> list[list[float]]:
    """A bar's notes as [pitch, start beat, length beat, velocity] groups (the OSC and page form)."""
    return [[n.pitch, round(n.start, 6), round(n.end - n.start, 6), n.velocity]
            for n in tokens_to_notes(np.asarray(tokens, dtype=np.int64), vocab, velocity=velocity)]


def key_lock_scale(recent: Sequence[Sequence[int]], vocab: Vocabulary) -> dict[str, Any] | None:
    """The scale the key lock keeps for the ``recent`` input bars (as ``allowed_pitch_classes``).

    ``{"name": "C major", "pitch_classes": [0, 2, ...], "notes": ["C", "D", ...]}``; None when
    the bars hold no notes.
    """
    if not recent:
        return None
    bars = np.asarray(recent, dtype=np.int64)
    scale = estimate_scale(bars, vocab)  # what allowed_pitch_classes does, without estimating twice
    if scale is None:
        return None
    played = np.flatnonzero(pitch_class_histogram(bars, vocab) > 0)
    classes = sorted(scale.pitch_classes | frozenset(int(pc) for pc in played))
    return {"name": scale.name, "pitch_classes": classes, "notes": [PITCH_NAMES[pc] for pc in classes]}


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
