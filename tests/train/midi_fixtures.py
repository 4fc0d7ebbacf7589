"""Small MIDI files written with mido for the ``dataset midi`` and ``fit`` tests."""

from __future__ import annotations

from pathlib import Path

import mido

TPB = 480


def melody(n_notes: int, base: int, step: float = 0.5, seed: int = 0) -> list[tuple[int, float, float]]:
    """(pitch, start beat, end beat) of a stepwise line of ``n_notes`` notes every ``step`` beats."""
    shape = [0, 2, 4, 5, 7, 5, 4, 2, 0, -1, 0, 4][seed % 5 :] + [0, 2, 4, 5, 7, 5, 4, 2, 0, -1, 0, 4]
    return [(base + shape[i % len(shape)], i * step, (i + 1) * step) for i in range(n_notes)]


def track(notes: list[tuple[int, float, float]], channel: int = 0, name: str = "",
          meters: list[tuple[float, int, int]] | None = None) -> mido.MidiTrack:  # fmt: skip
    """A track with its name, time signatures (beat, numerator, denominator) and notes."""
    events: list[tuple[int, int, mido.Message | mido.MetaMessage]] = []
    if name:
        events.append((0, 0, mido.MetaMessage("track_name", name=name)))
    for beat, num, den in meters or []:
        events.append((round(beat * TPB), 0, mido.MetaMessage("time_signature", numerator=num, denominator=den)))
    for pitch, start, end in notes:
        events.append((round(start * TPB), 2, mido.Message("note_on", note=pitch, velocity=90, channel=channel)))
        events.append((round(end * TPB), 1, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    events.sort(key=lambda e: (e[0], e[1]))
    out, now = mido.MidiTrack(), 0
    for tick, _, msg in events:
        out.append(msg.copy(time=tick - now))
        now = tick
    return out


def write(path: Path, *tracks: mido.MidiTrack) -> Path:
    """A type-1 file of ``tracks``."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TPB)
    mid.tracks.extend(tracks)
    mid.save(str(path))
    return path


def four_four_song(path: Path, bars: int, base: int = 60, seed: int = 0) -> Path:
    """A one-track 4/4 melody of ``bars`` bars (8th notes)."""
    return write(path, track(melody(8 * bars, base, seed=seed), meters=[(0, 4, 4)]))
