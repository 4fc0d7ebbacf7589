"""Live input -> one 24-token bar at a time.

Notes are timed in MIDI clock pulses from song start (96 per 4/4 bar). A bar's tokens are final
3 pulses (1/8 beat) before its barline: the last tick starts 6 pulses before the barline, so an
onset or release in the final 3 pulses rounds onto the barline and cannot change this bar. The
bridge closes the capture of bar k at pulse 96k + 93 and starts inference right away, which is
the earliest moment the bar is known.

An onset belongs to the bar its rounded position falls in (a note played a hair before the
downbeat counts as that downbeat). Notes still held when the bar closes are cut at the barline
(as in training, where a bar is one measure on its own); their late note_offs are then stray and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from arvae_midi.core.tokens import BEATS_PER_BAR, Note, Vocabulary, quantize_bar
from arvae_midi.midi_bridge.clock import PULSES_PER_BAR, PULSES_PER_QUARTER

#: Pulses before the barline at which a bar's tokens are final (half of the last 6-pulse tick).
CLOSE_LEAD_PULSES = 3


def bar_of(pos: float) -> int:
    """Bar index that an onset at ``pos`` pulses belongs to after rounding to the grid."""
    return int((pos + CLOSE_LEAD_PULSES) // PULSES_PER_BAR)


def close_position(bar: int) -> float:
    """Position (pulses) at which bar ``bar``'s capture closes."""
    return float(PULSES_PER_BAR * (bar + 1) - CLOSE_LEAD_PULSES)


@dataclass(frozen=True)
class CapturedBar:
    """One captured bar: tokens (24,) int64, mean note_on velocity (None when silent), notes."""

    index: int
    tokens: np.ndarray
    velocity: int | None
    notes: tuple[Note, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """True when no note started in the bar."""
        return not self.notes


@dataclass
class _Held:
    onset: float  # pulses
    pitch: int
    velocity: int


class BarCapture:
    """Collects note_on/note_off events by position and closes them into :class:`CapturedBar`."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self._held: dict[tuple[int, int], _Held] = {}  # (channel, pitch) -> sounding note
        self._done: list[tuple[_Held, float]] = []  # (note, release position)

    def note_on(self, pos: float, channel: int, pitch: int, velocity: int) -> None:
        """A key went down at ``pos`` pulses; a repeated key first releases the sounding one."""
        key = (channel, pitch)
        if key in self._held:
            self._done.append((self._held.pop(key), pos))
        self._held[key] = _Held(pos, pitch, velocity)

    def note_off(self, pos: float, channel: int, pitch: int) -> None:
        """A key went up; a release for a key that is not down is ignored."""
        held = self._held.pop((channel, pitch), None)
        if held is not None:
            self._done.append((held, pos))

    def close(self, bar: int) -> CapturedBar:
        """Finish bar ``bar``: its notes as tokens. Older unclosed notes are dropped."""
        start = bar * PULSES_PER_BAR
        notes: list[Note] = []
        keep: list[tuple[_Held, float]] = []
        for held, off in self._done:
            b = bar_of(held.onset)
            if b == bar:
                notes.append(self._local(held, off, start))
            elif b > bar:
                keep.append((held, off))
        self._done = keep
        for key, held in list(self._held.items()):
            b = bar_of(held.onset)
            if b <= bar:
                del self._held[key]
                if b == bar:
                    notes.append(self._local(held, start + PULSES_PER_BAR, start))
        notes.sort(key=lambda n: (n.start, -n.pitch))
        return make_bar(bar, notes, self.vocab)

    def peek(self, bar: int) -> CapturedBar:
        """Bar ``bar`` as :meth:`close` would return it now, without closing it (speculation).

        Keys still down sound to the barline, as at the close; a later release changes the bar.
        """
        start = bar * PULSES_PER_BAR
        notes = [self._local(held, off, start) for held, off in self._done if bar_of(held.onset) == bar]
        notes += [self._local(held, start + PULSES_PER_BAR, start) for held in self._held.values()
                  if bar_of(held.onset) == bar]  # fmt: skip
        notes.sort(key=lambda n: (n.start, -n.pitch))
        return make_bar(bar, notes, self.vocab)

    def reset(self) -> None:
        """Forget everything (transport jump)."""
        self._held.clear()
        self._done.clear()

    @staticmethod
    def _local(held: _Held, off: float, start: float) -> Note:
        """Note timed in beats from the bar start, clipped to the bar."""
        on_beats = max(0.0, (held.onset - start) / PULSES_PER_QUARTER)
        off_beats = min(float(BEATS_PER_BAR), (off - start) / PULSES_PER_QUARTER)
        return Note(held.pitch, on_beats, max(off_beats, on_beats), held.velocity)


def make_bar(index: int, notes: Sequence[Note], vocab: Vocabulary) -> CapturedBar:
    """Build a :class:`CapturedBar` from notes timed in beats from the bar start."""
    tokens = quantize_bar(notes, vocab)
    velocity = round(float(np.mean([n.velocity for n in notes]))) if notes else None
    return CapturedBar(index, tokens, velocity, tuple(notes))
