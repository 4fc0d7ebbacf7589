"""The bridge's configuration, the engine interface it needs, and its status record.

:class:`VariationEngine` is the part of :class:`arvae_midi.engine.engine.Engine` the bridge
uses; tests inject deterministic fakes through it. :class:`BridgeConfig` holds the musical
options of ``serve``; :class:`BridgeStatus` the figures the status line and the log show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.policy import CONTEXT_BARS, KEY_LOCK


class Mode(str, Enum):
    """What the bridge plays (``--mode``)."""

    respond = "respond"  # bar k's variation plays in bar k+1
    loop = "loop"  # the last played bar is re-varied every bar


class Fallback(str, Enum):
    """What a bar whose variation is not ready in time plays (``--fallback``)."""

    silence = "silence"
    thru = "thru"


class Backend(str, Enum):
    """MIDI backends (python-rtmidi APIs); ``auto`` tries each this platform has."""

    auto = "auto"
    alsa = "alsa"
    jack = "jack"
    coremidi = "coremidi"


MODES = tuple(m.value for m in Mode)
#: The key lock estimates the scale from this many most recent non-empty input bars (the engine's
#: policy, :data:`arvae_midi.engine.policy.CONTEXT_BARS`: the varied bar and the ones before it).
KEY_LOCK_BARS = CONTEXT_BARS
FALLBACKS = tuple(f.value for f in Fallback)


class EngineMeta(Protocol):
    """What the bridge reads of a model's metadata."""

    @property
    def vocab(self) -> Vocabulary: ...

    @property
    def attributes(self) -> Sequence[str]: ...


class VariationEngine(Protocol):
    """The part of :class:`arvae_midi.engine.engine.Engine` the bridge uses (tests inject fakes)."""

    @property
    def meta(self) -> EngineMeta: ...

    def vary(
        self,
        bar: np.ndarray,
        knobs: Mapping[str, int | None],
        amount: float = 0.0,
        seed: int | None = 0,
        n: int = 1,
        pitch_mask: np.ndarray | None = None,
        key_lock: bool | None = None,
        context: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class BridgeConfig:
    """Musical options of ``serve``; channels are 1..16 as on the command line."""

    mode: str = "respond"  # "respond": bar k's variation plays in bar k+1; "loop": re-vary the last bar
    bpm: float = 120.0  # internal tempo when no MIDI clock arrives
    in_channel: int | None = None  # capture this channel only; None = all
    out_channel: int = 1
    thru: bool = False  # echo input notes to the output channel
    fallback: str = "silence"  # what a bar whose variation is not ready plays: "silence" | "thru"
    variations_per_bar: int = 1  # variations decoded per captured bar, played in the following bars
    key_lock: bool = KEY_LOCK  # keep variations in the scale of the recent input bars (the engine's default)
    amount: float = 0.0  # variation amount until the amount knob moves, 0..1
    seed: int = 0
    late_tolerance_s: float = 0.02  # a note_on later than this is dropped, never played out of time
    idle_bars: int = 2  # internal tempo, respond mode: stop after this many silent bars
    clock_timeout_s: float = 0.3  # MIDI clock silent this long while playing = clock lost

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {self.fallback!r}")
        for name in ("in_channel", "out_channel"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 16:
                raise ValueError(f"{name} must lie in 1..16, got {value}")
        if not 1 <= self.variations_per_bar <= 16:
            raise ValueError(f"variations_per_bar must lie in 1..16, got {self.variations_per_bar}")
        if not 0.0 <= self.amount <= 1.0:
            raise ValueError(f"amount must lie in 0..1, got {self.amount}")


@dataclass(frozen=True)
class BridgeStatus:
    """Figures for the status line and the log; replaced as a whole, so reading needs no lock."""

    tempo: float = 120.0
    source: str = "internal"
    state: str = "waiting"  # "waiting" | "playing" | "stopped" | "clock lost" | "failed"
    bar: int = -1
    mode: str = "respond"
    in_attributes: dict[str, float] | None = None
    out_attributes: dict[str, float] | None = None
    knob_targets: dict[str, float] | None = None  # attribute value each set knob asked for (last bar)
    inference_ms: float | None = None
    margin: float | None = None  # last deadline margin, fraction of a bar
    misses: int = 0
    errors: int = 0
    late: int = 0
    ignored: int = 0
    frozen: bool = False
    message: str = ""


def attributes_of(tokens: np.ndarray, vocab: Vocabulary, names: Sequence[str] = ATTRIBUTE_NAMES) -> dict[str, float]:
    """The four attributes of one (24,) bar as a name -> value dict."""
    values = compute_attributes(np.asarray(tokens, dtype=np.int64)[None], vocab)[0]
    return {name: round(float(v), 4) for name, v in zip(ATTRIBUTE_NAMES, values, strict=True) if name in names}
