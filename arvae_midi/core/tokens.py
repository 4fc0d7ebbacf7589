"""Measure grid, vocabulary and conversions between timed notes and tokens.

A 4/4 measure is 24 tokens: 4 beats x 6 ticks at beat fractions 0, 1/4, 1/3, 1/2, 2/3, 3/4,
the union of 16th-note and 8th-triplet positions (docs/reference.md §1.1). A token is

* ``HOLD`` (``"__"``): the event of the previous tick continues,
* ``REST`` (``"rest"``): a rest starts at this tick,
* a MIDI pitch (``"60"``): a note of that pitch starts at this tick.

Token ids are deterministic: HOLD = 0, REST = 1, then the pitches in ascending order. All times
in this module are in beats (quarter notes); MIDI-file helpers live in :mod:`arvae_midi.core.midi`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from arvae_midi.core.constants import DEFAULT_VELOCITY
from arvae_midi.errors import OffGridError

HOLD = "__"
REST = "rest"
HOLD_ID = 0
REST_ID = 1

BEATS_PER_BAR = 4
TICKS_PER_BEAT = 6
TICKS_PER_BAR = BEATS_PER_BAR * TICKS_PER_BEAT  # 24
#: Position of each tick inside its beat, as exact fractions of a quarter note.
TICK_FRACTIONS: tuple[Fraction, ...] = tuple(
    Fraction(n, d) for n, d in ((0, 1), (1, 4), (1, 3), (1, 2), (2, 3), (3, 4))
)
#: Onset of every tick from the start of the bar, in beats, shape (24,).
TICK_POSITIONS = np.array(
    [b + float(f) for b in range(BEATS_PER_BAR) for f in TICK_FRACTIONS], dtype=np.float64
)
#: Tick boundaries including the barline at 4.0 beats, shape (25,).
TICK_BOUNDARIES = np.append(TICK_POSITIONS, float(BEATS_PER_BAR))
#: Length of every tick in beats, shape (24,): 1/4, 1/12, 1/6, 1/6, 1/12, 1/4 per beat.
TICK_DURATIONS = np.diff(TICK_BOUNDARIES)

DEFAULT_PITCH_RANGE = (55, 84)  # G3..C6, the reference's range

#: dMelodies: 2 bars of 8th notes = 16 tokens, MIDI 60..109 (docs/reference.md §2.3).
DMELODIES_TICKS = 16
DMELODIES_TICKS_PER_BEAT = 2
DMELODIES_PITCH_RANGE = (60, 109)


#: (low, high) -> pitch table, shared by every Vocabulary of that range.
_PITCH_TABLES: dict[tuple[int, int], np.ndarray] = {}


@dataclass(frozen=True)
class Vocabulary:
    """Deterministic token vocabulary: HOLD, REST, then every MIDI pitch in ``low..high``."""

    low: int = DEFAULT_PITCH_RANGE[0]
    high: int = DEFAULT_PITCH_RANGE[1]

    def __post_init__(self) -> None:
        if not (0 <= self.low <= self.high <= 127):
            raise ValueError(f"pitch range must satisfy 0 <= low <= high <= 127, got {self.low}..{self.high}")
        if self.high - self.low < 11:
            # Octave folding needs at least one full octave to land every pitch class in range.
            raise ValueError(f"pitch range {self.low}..{self.high} is narrower than an octave")

    @property
    def tokens(self) -> tuple[str, ...]:
        """All token strings in id order."""
        return (HOLD, REST, *(str(p) for p in range(self.low, self.high + 1)))

    def __len__(self) -> int:
        return 2 + self.high - self.low + 1

    @property
    def pitch_table(self) -> np.ndarray:
        """MIDI pitch of every token id, -1 for HOLD and REST; shape (V,), int64, read-only."""
        table = _PITCH_TABLES.get((self.low, self.high))
        if table is None:  # built once per range: the engine's hot path looks it up many times a bar
            table = np.concatenate([[-1, -1], np.arange(self.low, self.high + 1)]).astype(np.int64)
            table.setflags(write=False)
            _PITCH_TABLES[(self.low, self.high)] = table
        return table

    def pitch_id(self, pitch: int) -> int:
        """Token id of an in-range MIDI pitch."""
        if not self.low <= pitch <= self.high:
            raise ValueError(f"pitch {pitch} outside the vocabulary range {self.low}..{self.high}")
        return 2 + pitch - self.low

    def fold(self, pitch: int) -> int:
        """Move ``pitch`` by whole octaves into ``low..high``."""
        while pitch < self.low:
            pitch += 12
        while pitch > self.high:
            pitch -= 12
        return pitch

    def to_strings(self, ids: np.ndarray) -> list[str]:
        """Token ids -> token strings (any shape, flattened)."""
        table = self.tokens
        return [table[int(i)] for i in np.asarray(ids).ravel()]

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> Vocabulary:
        """Rebuild a vocabulary from its saved token list, checking it is one we produce."""
        toks = [str(t) for t in tokens]
        if len(toks) < 3 or toks[0] != HOLD or toks[1] != REST:
            raise ValueError(f"vocabulary must start with {HOLD!r}, {REST!r}; got {toks[:3]}")
        try:
            pitches = [int(t) for t in toks[2:]]
        except ValueError as e:
            raise ValueError(f"vocabulary pitch tokens must be decimal MIDI numbers: {e}") from e
        vocab = cls(pitches[0], pitches[-1])
        if list(vocab.tokens) != toks:
            raise ValueError("vocabulary pitches must be contiguous and ascending")
        return vocab


@dataclass(frozen=True)
class Note:
    """A timed note; ``start`` and ``end`` in beats (quarter notes)."""

    pitch: int
    start: float
    end: float
    velocity: int = DEFAULT_VELOCITY


def nearest_tick(position: float) -> int:
    """Index 0..24 of the tick boundary nearest to ``position`` (beats from the bar start).

    24 means the next barline. Positions outside the bar clip to 0 or 24.
    """
    return int(np.argmin(np.abs(TICK_BOUNDARIES - position)))


def exact_tick(position: Fraction | float, eps: float = 1e-5) -> int:
    """Tick index 0..24 of ``position`` when it lies on the grid within ``eps``, else OffGridError."""
    idx = nearest_tick(float(position))
    if abs(TICK_BOUNDARIES[idx] - float(position)) > eps:
        raise OffGridError(f"position {float(position):.4f} beats is not on the 24-tick grid")
    return idx


def quantize_bar(notes: Sequence[Note], vocab: Vocabulary) -> np.ndarray:
    """Reduce the notes of one bar to 24 token ids.

    ``notes`` are timed relative to the bar start. Onsets and ends go to the nearest tick; a
    note shorter than one tick after rounding keeps one tick; notes starting outside [0, 4)
    beats are ignored and ends past the barline are cut. Chords reduce to the highest sounding
    note; when the top note ends while a lower one still sounds, the lower one is re-attacked
    (the melody moves to it). Pitches fold by octaves into the vocabulary's range.
    Returns an int64 array of shape (24,).
    """
    top = np.full(TICKS_PER_BAR, -1, dtype=np.int64)  # index into `notes` of the top voice per tick
    top_pitch = np.full(TICKS_PER_BAR, -1, dtype=np.int64)
    for i, note in enumerate(notes):
        on = nearest_tick(note.start)
        if note.start < -1e-9 or on >= TICKS_PER_BAR:
            continue
        off = max(nearest_tick(note.end), on + 1)
        pitch = vocab.fold(note.pitch)
        span = slice(on, off)
        higher = pitch > top_pitch[span]
        top[span] = np.where(higher, i, top[span])
        top_pitch[span] = np.where(higher, pitch, top_pitch[span])
    tokens = np.full(TICKS_PER_BAR, HOLD_ID, dtype=np.int64)
    prev = -2
    for t in range(TICKS_PER_BAR):
        if top[t] != prev:
            tokens[t] = REST_ID if top[t] < 0 else vocab.pitch_id(int(top_pitch[t]))
        prev = int(top[t])
    return tokens


def tokens_to_notes(
    tokens: np.ndarray,
    vocab: Vocabulary,
    offset: float = 0.0,
    velocity: int = DEFAULT_VELOCITY,
    tick_positions: np.ndarray = TICK_BOUNDARIES,
) -> list[Note]:
    """Token ids of one sequence -> notes, timed in beats from ``offset``.

    A note lasts until the next non-HOLD token. A leading HOLD (nothing to continue) is silence.
    ``tick_positions`` are the boundaries of the grid (25 for a measure, 17 for dMelodies).
    """
    ids = np.asarray(tokens).ravel()
    if len(tick_positions) != len(ids) + 1:
        raise ValueError(f"{len(ids)} tokens need {len(ids) + 1} tick boundaries, got {len(tick_positions)}")
    pitches = vocab.pitch_table
    notes: list[Note] = []
    start_tick: int | None = None
    pitch = -1
    for t, tok in enumerate(ids.tolist() + [REST_ID]):
        if tok == HOLD_ID and t < len(ids):
            continue
        if start_tick is not None and pitch >= 0:
            notes.append(
                Note(pitch, offset + float(tick_positions[start_tick]), offset + float(tick_positions[t]), velocity)
            )
        if not 0 <= tok < len(vocab):
            raise ValueError(f"token id {tok} outside the vocabulary (size {len(vocab)})")
        start_tick, pitch = t, int(pitches[tok])
    return notes


#: Tick boundaries of the dMelodies grid (8th notes over 2 bars), shape (17,).
DMELODIES_BOUNDARIES = np.arange(DMELODIES_TICKS + 1, dtype=np.float64) / DMELODIES_TICKS_PER_BEAT


def split_into_bars(notes: Sequence[Note]) -> list[list[Note]]:
    """Group notes into 4/4 bars by their quantized onset, timed relative to each bar start.

    An onset that rounds onto the next barline belongs to the next bar. Returns one list per bar
    from bar 0 up to the last bar holding an onset (empty lists for silent bars in between).
    """
    bars: dict[int, list[Note]] = {}
    for note in notes:
        bar = int(np.floor(note.start / BEATS_PER_BAR))
        local = note.start - bar * BEATS_PER_BAR
        if nearest_tick(local) == TICKS_PER_BAR:
            bar, local = bar + 1, 0.0
        if bar < 0:
            continue
        shift = bar * BEATS_PER_BAR
        bars.setdefault(bar, []).append(Note(note.pitch, local, note.end - shift, note.velocity))
    if not bars:
        return []
    return [bars.get(b, []) for b in range(max(bars) + 1)]
