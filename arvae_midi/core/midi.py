"""MIDI files <-> timed notes <-> bars of tokens (mido only).

Reading merges every track, drops the drum channel (10), pairs note_on/note_off per
(channel, pitch) and checks the meter: every time signature must be 4/4 (a file without one
is 4/4 by the MIDI standard). Times are in beats (quarter notes), so tempo changes do not move
barlines; the first tempo is kept for writing variations back at the input's tempo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np

from arvae_midi.core.constants import DEFAULT_VELOCITY
from arvae_midi.core.tokens import (
    BEATS_PER_BAR,
    Note,
    Vocabulary,
    quantize_bar,
    split_into_bars,
    tokens_to_notes,
)
from arvae_midi.errors import MidiFileError, UnsupportedMeterError

DRUM_CHANNEL = 9
DEFAULT_BPM = 120.0


@dataclass
class MidiSong:
    """Notes of a MIDI file in beats, with its first tempo."""

    notes: list[Note]
    bpm: float = DEFAULT_BPM
    source: str = ""
    #: Each bar's notes relative to its start; filled by :func:`read_midi`.
    bars: list[list[Note]] = field(default_factory=list)

    def bar_tokens(self, vocab: Vocabulary) -> np.ndarray:
        """Token ids of every bar, shape (n_bars, 24)."""
        if not self.bars:
            return np.zeros((0, 24), dtype=np.int64)
        return np.stack([quantize_bar(bar, vocab) for bar in self.bars])

    def bar_velocities(self) -> list[int]:
        """Mean velocity of each bar's notes (``DEFAULT_VELOCITY`` for a silent bar)."""
        return [int(round(np.mean([n.velocity for n in bar]))) if bar else DEFAULT_VELOCITY for bar in self.bars]


class NotePairs:
    """Notes of one track from its note_on / note_off messages (times in ticks -> beats).

    A note_off (or note_on at velocity 0) ends the earliest sounding note of its channel and
    pitch; notes never released end at the track's end (:meth:`close`).
    """

    def __init__(self, ticks_per_beat: float) -> None:
        self.tpb = ticks_per_beat
        self.notes: list[Note] = []
        self._sounding: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (channel, pitch) -> [(tick, vel)]

    def add(self, tick: int, msg: mido.Message) -> None:
        """Take one note_on or note_off at absolute ``tick``."""
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            self._sounding.setdefault(key, []).append((tick, msg.velocity))
        elif self._sounding.get(key):
            start, vel = self._sounding[key].pop(0)
            self.notes.append(Note(msg.note, start / self.tpb, tick / self.tpb, vel))

    def close(self, tick: int) -> list[Note]:
        """All notes, the ones still sounding ended at ``tick`` (at least one tick long)."""
        for (_, pitch), starts in self._sounding.items():
            self.notes.extend(Note(pitch, s / self.tpb, max(tick, s + 1) / self.tpb, v) for s, v in starts)
        self._sounding.clear()
        return self.notes


def read_midi(path: str | Path) -> MidiSong:
    """Read a 4/4 MIDI file into notes and bars.

    Raises MidiFileError for a missing, non-MIDI, truncated or empty file and
    UnsupportedMeterError for any time signature other than 4/4.
    """
    path = Path(path)
    try:
        mid = mido.MidiFile(str(path), clip=True)
    except FileNotFoundError as e:
        raise MidiFileError(f"{path}: no such file") from e
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise MidiFileError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from e
    if mid.type == 2:
        raise MidiFileError(f"{path}: MIDI type 2 (independent sequences) is not supported; use type 0 or 1")
    if not mid.ticks_per_beat or mid.ticks_per_beat <= 0:
        raise MidiFileError(f"{path}: SMPTE time division is not supported; use ticks per beat")
    tpb = float(mid.ticks_per_beat)
    bpm: float | None = None
    notes: list[Note] = []
    for track in mid.tracks:
        tick = 0
        pairs = NotePairs(tpb)
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature" and (msg.numerator, msg.denominator) != (4, 4):
                raise UnsupportedMeterError(
                    f"{path}: time signature {msg.numerator}/{msg.denominator} at beat {tick / tpb:g}; "
                    "only 4/4 is supported"
                )
            if msg.type == "set_tempo" and bpm is None:
                bpm = float(mido.tempo2bpm(msg.tempo))
            if msg.type in ("note_on", "note_off") and msg.channel != DRUM_CHANNEL:
                pairs.add(tick, msg)
        notes.extend(pairs.close(tick))
    notes.sort(key=lambda n: (n.start, -n.pitch))
    song = MidiSong(notes, bpm or DEFAULT_BPM, str(path))
    song.bars = split_into_bars(notes)
    return song


def write_midi(path: str | Path, notes: list[Note], bpm: float = DEFAULT_BPM, channel: int = 0) -> None:
    """Write notes (beats) as a type-0 MIDI file at ``bpm`` in 4/4, 480 ticks per beat."""
    tpb = 480
    events: list[tuple[int, int, mido.Message]] = []
    for n in notes:
        on, off = round(n.start * tpb), max(round(n.end * tpb), round(n.start * tpb) + 1)
        # Offs sort before ons at the same tick so a repeated pitch re-attacks cleanly.
        events.append((on, 1, mido.Message("note_on", note=n.pitch, velocity=n.velocity, channel=channel)))
        events.append((off, 0, mido.Message("note_off", note=n.pitch, velocity=0, channel=channel)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=tpb)
    mid.tracks.append(track)
    try:
        mid.save(str(path))
    except OSError as e:
        raise MidiFileError(f"cannot write {path}: {e}") from e


def bars_to_notes(
    bars: np.ndarray, vocab: Vocabulary, velocities: list[int] | None = None, first_bar: int = 0
) -> list[Note]:
    """Token bars (n, 24) -> notes laid out bar after bar from ``first_bar``."""
    notes: list[Note] = []
    for i, bar in enumerate(np.asarray(bars)):
        vel = velocities[i] if velocities else DEFAULT_VELOCITY
        notes.extend(tokens_to_notes(bar, vocab, offset=(first_bar + i) * BEATS_PER_BAR, velocity=vel))
    return notes
