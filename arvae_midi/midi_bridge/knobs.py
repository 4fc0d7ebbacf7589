"""CC knobs: the TOML CC map and the live knob state.

A CC map assigns a controller number to each attribute knob, to the variation amount and to
the freeze switch (``presets/cc_map.toml`` is the default; ``--cc-map FILE`` replaces it).
Unknown keys, unknown attribute names, CC numbers outside 0..119 (120..127 are channel mode
messages) and a CC used twice are rejected with :class:`~arvae_midi.errors.ConfigError`.

A knob nobody has moved reads ``None``: the engine then keeps the bar's own latent value.
The bridge takes a :class:`KnobSnapshot` when it closes a bar, so a change applies from the
next bar on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.config import from_dict, load_toml
from arvae_midi.core.constants import KNOB_MAX
from arvae_midi.errors import ConfigError
from arvae_midi.presets import PRESET_DIR

DEFAULT_CC_MAP_PATH = PRESET_DIR / "cc_map.toml"
MAX_CC = 119  # 120..127 are channel mode messages (All Notes Off is 123)
FREEZE_THRESHOLD = 64  # switch convention: 0..63 off, 64..127 on


def _default_attribute_ccs() -> dict[str, int]:
    return {name: 20 + i for i, name in enumerate(ATTRIBUTE_NAMES)}


@dataclass
class CCMap:
    """Controller numbers of the knobs; ``channel`` 0 listens on every channel, else 1..16."""

    attributes: dict[str, int] = field(default_factory=_default_attribute_ccs)
    amount: int = 24
    freeze: int = 25
    channel: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attributes) - set(ATTRIBUTE_NAMES))
        if unknown:
            raise ValueError(f"unknown attribute(s) {', '.join(unknown)}; valid: {', '.join(ATTRIBUTE_NAMES)}")
        if not 0 <= self.channel <= 16:
            raise ValueError(f"channel must be 0 (any) or 1..16, got {self.channel}")
        numbers = {f"attributes.{k}": v for k, v in self.attributes.items()}
        numbers |= {"amount": self.amount, "freeze": self.freeze}
        seen: dict[int, str] = {}
        for key, cc in numbers.items():
            if not 0 <= cc <= MAX_CC:
                raise ValueError(f"{key}: CC {cc} outside 0..{MAX_CC}")
            if cc in seen:
                raise ValueError(f"CC {cc} assigned twice ({seen[cc]} and {key})")
            seen[cc] = key

    def restricted_to(self, attributes: Iterable[str]) -> CCMap:
        """The same map without knobs for attributes the model does not control."""
        keep = set(attributes)
        return CCMap({k: v for k, v in self.attributes.items() if k in keep}, self.amount, self.freeze, self.channel)


def load_cc_map(path: str | Path | None = None) -> CCMap:
    """Load a CC map TOML file (``None``: the shipped default); ConfigError on any problem."""
    path = Path(path) if path is not None else DEFAULT_CC_MAP_PATH
    return from_dict(CCMap, load_toml(path), where=path.name)


def cc_map_toml(cc_map: CCMap) -> str:
    """TOML text of ``cc_map`` that :func:`load_cc_map` reads back to an equal map."""
    lines = [
        "# arvae-midi CC map: controller numbers (0..119) of the knobs.",
        "# channel = 0 listens on every MIDI channel; 1..16 on that channel only.",
        f"channel = {cc_map.channel}",
        "# variation amount (noise on the latent dims no knob controls): 0 -> none, 127 -> full",
        f"amount = {cc_map.amount}",
        "# freeze switch: value >= 64 holds the current output bar, < 64 releases it",
        f"freeze = {cc_map.freeze}",
        "",
        "# one knob per attribute: 0 -> lowest, 127 -> highest; a knob never moved keeps the bar's own value",
        "[attributes]",
        *(f"{name} = {cc}" for name, cc in cc_map.attributes.items()),
    ]
    return "\n".join(lines) + "\n"


def save_cc_map(cc_map: CCMap, path: str | Path) -> None:
    """Write ``cc_map`` as TOML to ``path``."""
    try:
        Path(path).write_text(cc_map_toml(cc_map), encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot write CC map {path}: {e}") from e


@dataclass(frozen=True)
class KnobSnapshot:
    """Knob values at one instant: attribute -> 0..127 or None (never moved), amount 0..1, freeze."""

    values: Mapping[str, int | None]
    amount: float
    freeze: bool


class KnobState:
    """Live knob values updated from control changes; thread-safe snapshots for the status line."""

    def __init__(self, cc_map: CCMap, amount: float = 0.0) -> None:
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"amount must lie in 0..1, got {amount}")
        self.cc_map = cc_map
        self._by_cc = {cc: name for name, cc in cc_map.attributes.items()}
        self._values: dict[str, int | None] = dict.fromkeys(cc_map.attributes)
        self._amount = float(amount)
        self._freeze = False
        self._lock = threading.Lock()

    def handle(self, channel: int, control: int, value: int) -> bool:
        """Apply one control change (channel 0..15); True when it moved a knob of the map."""
        if self.cc_map.channel and channel != self.cc_map.channel - 1:
            return False
        if control in self._by_cc:
            self.set(self._by_cc[control], int(value))
        elif control == self.cc_map.amount:
            self.set("amount", int(value) / KNOB_MAX)
        elif control == self.cc_map.freeze:
            self.set("freeze", int(value) >= FREEZE_THRESHOLD)
        else:
            return False
        return True

    def set(self, name: str, value: float | bool) -> None:
        """Set one knob from any thread (the CC path, the web page, OSC all come through here).

        ``name``: an attribute of the map (``value`` an integer 0..127), ``"amount"`` (0..1) or
        ``"freeze"`` (bool). ValueError, saying what is valid, for anything else.
        """
        if name in self._values:
            if isinstance(value, bool) or not 0 <= value <= KNOB_MAX or int(value) != value:  # NaN fails the range
                raise ValueError(f"knob {name}: value must be an integer in 0..127, got {value!r}")
        elif name == "amount":
            if isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"amount must lie in 0..1, got {value!r}")
        elif name != "freeze":
            valid = ", ".join([*self._values, "amount", "freeze"])
            raise ValueError(f"unknown knob {name!r}; valid: {valid}")
        with self._lock:
            if name in self._values:
                self._values[name] = int(value)
            elif name == "amount":
                self._amount = float(value)
            else:
                self._freeze = bool(value)

    def snapshot(self) -> KnobSnapshot:
        """The current values (a copy)."""
        with self._lock:
            return KnobSnapshot(dict(self._values), self._amount, self._freeze)
