"""What sounds at the output, and what is due when.

:class:`OutputTracker` is the only path to the output port. It knows every note sounding there
and who started it (a variation or the thru of the input), so that

* every note_on it sends is matched by exactly one note_off (a note_off for a note that is not
  sounding, or that another owner re-struck, is swallowed),
* a note_on on a key that is already sounding first ends the old note (re-strike),
* :meth:`OutputTracker.panic` ends every sounding note and sends All Notes Off (CC 123).

:class:`Scheduler` holds future output events keyed by musical position (pulses). Positions,
not times, are stored: a tempo change then re-times every pending event and cannot reorder a
note_off after the next note_on of the same key (at equal positions note_offs go first).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import mido

from arvae_midi.midi_bridge.messages import all_notes_off, note_off, note_on

VARIATION, THRU = "variation", "thru"


class OutputTracker:
    """Sends messages through ``send`` and tracks sounding notes by (channel, key) and owner."""

    def __init__(self, send: Callable[[mido.Message], None]) -> None:
        self._send = send
        self._sounding: dict[tuple[int, int], str] = {}

    @property
    def sounding(self) -> dict[tuple[int, int], str]:
        """(channel, key) -> owner of every note sounding now (a copy)."""
        return dict(self._sounding)

    def note_on(self, channel: int, key: int, velocity: int, owner: str) -> None:
        """Start a note, ending a note already sounding on the same key first."""
        if (channel, key) in self._sounding:
            self._send(note_off(channel, key))
        self._sounding[(channel, key)] = owner
        self._send(note_on(channel, key, velocity))

    def note_off(self, channel: int, key: int, owner: str) -> bool:
        """End a note if ``owner`` started it and it still sounds; True when sent."""
        if self._sounding.get((channel, key)) != owner:
            return False
        del self._sounding[(channel, key)]
        self._send(note_off(channel, key))
        return True

    def release(self, owner: str | None = None) -> None:
        """Send note_offs for every sounding note (of ``owner`` only, when given)."""
        for (channel, key), who in list(self._sounding.items()):
            if owner is None or who == owner:
                del self._sounding[(channel, key)]
                self._send(note_off(channel, key))

    def panic(self, channels: set[int]) -> None:
        """Note_offs for everything sounding, then All Notes Off on ``channels`` (and theirs)."""
        touched = {channel for channel, _ in self._sounding} | set(channels)
        self.release()
        for channel in sorted(touched):
            self._send(all_notes_off(channel))

    def forget(self) -> None:
        """Drop the bookkeeping without sending (the output port is gone)."""
        self._sounding.clear()


@dataclass(order=True)
class Event:
    """A note event due at ``pos`` pulses; note_offs (order 0) sort before note_ons (order 1)."""

    pos: float
    order: int
    seq: int
    channel: int = field(compare=False)
    key: int = field(compare=False)
    velocity: int = field(compare=False)  # 0 for note_off
    bar: int = field(compare=False)

    @property
    def is_on(self) -> bool:
        """True for a note_on."""
        return self.order == 1


class Scheduler:
    """Pending variation notes ordered by position."""

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add_note(self, channel: int, key: int, velocity: int, on_pos: float, off_pos: float, bar: int) -> None:
        """Schedule a note_on at ``on_pos`` and its note_off at ``off_pos`` (pulses)."""
        if off_pos <= on_pos:
            raise ValueError(f"note_off at {off_pos} must follow note_on at {on_pos}")
        heapq.heappush(self._heap, Event(on_pos, 1, next(self._seq), channel, key, velocity, bar))
        heapq.heappush(self._heap, Event(off_pos, 0, next(self._seq), channel, key, 0, bar))

    def next_pos(self) -> float | None:
        """Position of the earliest pending event, or None."""
        return self._heap[0].pos if self._heap else None

    def pop_due(self, pos: float) -> list[Event]:
        """Remove and return every event at or before ``pos`` in order."""
        due: list[Event] = []
        while self._heap and self._heap[0].pos <= pos + 1e-9:
            due.append(heapq.heappop(self._heap))
        return due

    def clear(self) -> None:
        """Drop every pending event (sounding notes are the tracker's business)."""
        self._heap.clear()

    def drop_bar(self, bar: int) -> None:
        """Drop the pending events of output bar ``bar`` (a variation replaced before it starts)."""
        self._heap = [e for e in self._heap if e.bar != bar]
        heapq.heapify(self._heap)
