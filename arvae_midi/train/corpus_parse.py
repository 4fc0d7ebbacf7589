"""Parse music21 corpus files into melodic lines on the 24-tick measure grid.

One *line* is one monophonic melody (a folk tune, or one voice of a chorale) as a flat array of
token ids, 24 per 4/4 bar, in the full-range vocabulary :data:`FULL_VOCAB` (MIDI 0..127, so
transposition can later shift pitches into any range without re-parsing). How a score becomes a
line (the choices are the reference's, docs/reference.md §1.1-1.2, unless marked *ours*):

* repeats are expanded (music21 ``expandRepeats``; a failure drops the tune);
* a pickup is padded with a rest so that beat 0 of the line is a barline; bars are the real
  bars of the score: every complete measure starts on a barline (*ours*: where the incomplete
  measures of a transcription do not add up to whole bars, e.g. a repeat that plays the pickup
  again after a full bar, a rest is inserted before the last incomplete one, see :func:`_layout`);
  a tune whose measures are mostly not full bars, or with a measure longer than a bar, is dropped;
* grace notes (zero duration) and chord symbols are ignored; a chord, or notes of several voices
  starting together, reduce to the highest note (*ours*, as :func:`~arvae_midi.core.tokens.quantize_bar`
  does for MIDI); notes that overlap without starting together drop the tune;
* every onset and the end must lie exactly on the grid (16ths and 8th triplets), otherwise the
  tune is dropped (32nds, quintuplets, ...);
* a note tied to the same pitch is one event: it continues as HOLD, across barlines too;
  consecutive rests inside a bar are one rest (*ours*, the canonical form ``quantize_bar`` gives);
  a rest crossing a barline restarts with REST in the next bar; the last bar is filled with rest.

The only music21-dependent module of the package's dataset code; workers of
:mod:`arvae_midi.train.corpus` call :func:`parse_abc_file` and :func:`parse_chorale_file`.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from arvae_midi.core.tokens import BEATS_PER_BAR, HOLD_ID, REST_ID, TICKS_PER_BAR, Vocabulary, exact_tick
from arvae_midi.errors import OffGridError

#: Bump when the tokenisation rules change: it is part of every cache key.
GRID_VERSION = 3
#: Lines are stored in this vocabulary (ids 0 HOLD, 1 REST, 2 + MIDI pitch).
FULL_VOCAB = Vocabulary(0, 127)
#: Meters accepted as 4/4 bars: 2/2 (and cut time) has the same 4 quarter notes per bar.
ACCEPTED_METERS = frozenset({"4/4", "2/2"})
_ABC_METER_ALIASES = {"C": "4/4", "C|": "2/2"}
_BAR = Fraction(BEATS_PER_BAR)
_INLINE_FIELD = re.compile(r"^\[[A-Za-z]:")


class Drop(Exception):
    """A line is left out of the dataset; ``reason`` is the short text counted in summaries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Line:
    """One melody: ``tokens`` (n_bars * 24,) int16 ids in :data:`FULL_VOCAB`.

    ``name`` is the corpus id (``"essenFolksong/han1.abc#12"``, ``"bach/bwv269#soprano"``),
    ``group`` the split key (the tune, or the chorale for its voices), ``voice`` the part index
    (0 for folk tunes), ``reduced`` whether chords / simultaneous notes were reduced to the top,
    ``realigned`` whether a rest was inserted after the first measure to keep bars on barlines.
    """

    name: str
    title: str
    group: str
    voice: int
    tokens: np.ndarray
    reduced: bool = False
    realigned: bool = False

    @property
    def n_bars(self) -> int:
        """Number of 24-tick bars."""
        return len(self.tokens) // TICKS_PER_BAR


@dataclass
class FileResult:
    """Everything one corpus file gave: kept lines and ``dropped`` (name, voice, reason) triples.

    ``voice`` -1 in ``dropped`` means the whole piece (every voice) was left out.
    """

    source: str
    lines: list[Line] = field(default_factory=list)
    dropped: list[tuple[str, int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Event:
    """A note (pitch >= 0) or rest (pitch -1) in beats from the start of the padded line."""

    on: Fraction
    end: Fraction
    pitch: int
    tied: bool = False  # continues the previous note (tie stop / continue on the same pitch)


def _frac(x: Any) -> Fraction:
    # music21 offsets are floats (exact for dyadic values) or Fractions (tuplets): both exact here.
    return x if isinstance(x, Fraction) else Fraction(x)


def _tick(pos: Fraction) -> int:
    """Global tick index of ``pos`` beats (bar * 24 + tick); OffGridError when off the grid."""
    bar = math.floor(pos / _BAR)
    return bar * TICKS_PER_BAR + exact_tick(pos - bar * _BAR)


def _measure_starts(part: Any) -> list[tuple[Fraction, Fraction]]:
    """(offset, length) in beats of every measure of ``part``, in order."""
    measures = list(part.getElementsByClass("Measure"))
    spans = []
    for i, m in enumerate(measures):
        start = _frac(m.offset)
        end = _frac(measures[i + 1].offset) if i + 1 < len(measures) else start + _frac(m.duration.quarterLength)
        spans.append((start, end - start))
    return spans


def _collect_events(part: Any) -> tuple[list[_Event], bool]:
    """Notes and rests of a (repeat-expanded) part, unpadded, and whether anything was reduced."""
    from music21 import chord, harmony, note

    raw: list[_Event] = []
    reduced = False
    flat = part.flatten()
    for el in flat.notesAndRests:
        if isinstance(el, harmony.Harmony):
            continue  # chord symbols annotate, they do not sound in the melody
        length = _frac(el.quarterLength)
        if length <= 0:
            continue  # grace notes
        on = _frac(flat.elementOffset(el))
        tie = getattr(el, "tie", None)
        tied = tie is not None and tie.type in ("stop", "continue")
        if isinstance(el, note.Rest):
            raw.append(_Event(on, on + length, -1))
        elif isinstance(el, chord.Chord):
            if not el.pitches:
                continue
            reduced = reduced or len(el.pitches) > 1
            raw.append(_Event(on, on + length, max(p.midi for p in el.pitches), tied))
        elif isinstance(el, note.Note):
            raw.append(_Event(on, on + length, el.pitch.midi, tied))
    raw.sort(key=lambda e: (e.on, -e.pitch))
    events: list[_Event] = []
    for ev in raw:
        if events and ev.on == events[-1].on:
            # Same onset: keep the highest note (sorted first); a rest under a note vanishes.
            reduced = reduced or (ev.pitch >= 0 and events[-1].pitch >= 0)
            continue
        if events and ev.on < events[-1].end:
            raise Drop("overlapping notes (more than one voice)")
        events.append(ev)
    return events, reduced


def _layout(spans: list[tuple[Fraction, Fraction]]) -> tuple[list[Fraction], bool]:
    """Padded start of every measure, so that every complete measure starts on a barline.

    The incomplete measures between two complete ones (a pickup, the two halves of a bar split by
    a repeat, a pickup the repeat plays again) are laid out one after the other, with a rest
    before the last of them when needed so that it ends on a barline. That is the pickup padding
    at the start of the piece; later (*ours*) it repairs transcriptions whose halves do not add up
    to a bar. Returns the starts and whether a rest had to be inserted after the first measure.
    """
    starts: list[Fraction] = [Fraction(0)] * len(spans)
    pos = Fraction(0)
    pending: list[int] = []
    realigned = False

    def flush(align: bool) -> None:
        nonlocal pos, realigned
        for j in pending[:-1]:
            starts[j] = pos
            pos += spans[j][1]
        last = pending[-1]
        if align:
            pad = (-(pos + spans[last][1])) % _BAR
            realigned = realigned or (pad > 0 and pending[0] > 0)
            pos += pad
        starts[last] = pos
        pos += spans[last][1]
        pending.clear()

    for i, (_, length) in enumerate(spans):
        if length == _BAR:
            if pending:
                flush(True)
            starts[i] = pos
            pos += _BAR
        else:
            pending.append(i)
    if pending:
        flush(False)  # trailing incomplete measures: the line's end is filled with rest
    return starts, realigned


def part_to_tokens(part: Any) -> tuple[np.ndarray, bool, bool]:
    """Tokenise one music21 part in 4/4 (or 2/2) into (n_bars * 24,) int16 ids of :data:`FULL_VOCAB`.

    Returns the ids, whether chords were reduced to their top note and whether a rest was inserted
    to realign the barlines (:func:`_layout`). Raises :class:`Drop` with the reason when the part
    cannot be represented (see the module docstring).
    """
    if part.recurse().getElementsByClass(["Repeat", "RepeatBracket"]).first() is not None:
        try:
            part = part.expandRepeats()
        except Exception as e:  # music21 raises assorted types (ExpanderException, KeyError, ...)
            raise Drop("repeat expansion failed") from e
    spans = _measure_starts(part)
    if not spans:
        raise Drop("no measures")
    if any(length > _BAR for _, length in spans):
        raise Drop("measure longer than a 4/4 bar")
    if 2 * sum(length == _BAR for _, length in spans) < len(spans):
        raise Drop("most measures are not full 4/4 bars")
    starts, realigned = _layout(spans)
    old_starts = [start for start, _ in spans]
    events, reduced = _collect_events(part)
    if not any(e.pitch >= 0 for e in events):
        raise Drop("no notes")
    # Move events with their measures, fill gaps and the tail with rests.
    line: list[_Event] = []
    cursor = Fraction(0)
    for ev in events:
        m = max(bisect.bisect_right(old_starts, ev.on) - 1, 0)
        on = ev.on - old_starts[m] + starts[m]
        end = on + (ev.end - ev.on)
        if on < cursor:
            raise Drop("overlapping notes (more than one voice)")
        if on > cursor:
            line.append(_Event(cursor, on, -1))
        line.append(_Event(on, end, ev.pitch, ev.tied))
        cursor = end
    total = math.ceil(cursor / _BAR) * _BAR
    if total > cursor:
        line.append(_Event(cursor, total, -1))
    try:
        ticks = [_tick(ev.on) for ev in line] + [_tick(total)]
    except OffGridError as e:
        raise Drop("off the 24-tick grid") from e
    tokens = np.full(ticks[-1], HOLD_ID, dtype=np.int16)
    prev: _Event | None = None
    for i, ev in enumerate(line):
        t_on, t_end = ticks[i], ticks[i + 1]
        if t_end <= t_on:
            raise Drop("off the 24-tick grid")  # shorter than one tick after all
        if ev.pitch < 0:
            merge = prev is not None and prev.pitch < 0 and prev.end == ev.on and t_on % TICKS_PER_BAR != 0
            if not merge:
                tokens[t_on] = REST_ID
            # A rest crossing barlines restarts in every bar (rests are not tied).
            first_bar = t_on // TICKS_PER_BAR + 1
            tokens[first_bar * TICKS_PER_BAR : t_end : TICKS_PER_BAR] = REST_ID
        else:
            cont = ev.tied and prev is not None and prev.pitch == ev.pitch and prev.end == ev.on
            if not cont:
                tokens[t_on] = FULL_VOCAB.pitch_id(ev.pitch)
        prev = ev
    return tokens, reduced, realigned


def _meter_strings(score: Any) -> set[str]:
    return {ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")}


# ------------------------------------------------------------------------------------------- ABC


_X_LINE = re.compile(r"^X:[ \t]*(\S*)", re.M)
_M_LINE = re.compile(r"^M:(.*)$", re.M)
_FIELD_LINE = re.compile(r"^[A-Za-z]:.*$", re.M)


def _meter_problem(fields: list[str]) -> str | None:
    """Why the ``M:`` fields of an ABC tune are unusable (None when all are 4/4 or 2/2)."""
    meters = []
    for field_ in fields:
        raw = field_.split("%")[0].strip()
        meters.append(_ABC_METER_ALIASES.get(raw, raw.replace(" ", "")))
    if not meters or all(m.lower() in ("none", "") for m in meters):
        return "no meter"
    if len(set(meters)) > 1:
        return "meter changes"
    meter = meters[0]
    if meter in ACCEPTED_METERS:
        return None
    return f"meter {meter}" if re.fullmatch(r"\d+/\d+", meter) else "meter other (free or malformed)"


def split_abc_tunes(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ABC text at its ``X:`` lines: (field lines of the file header, [(X, tune text)]).

    Duplicate reference numbers get a ``.k`` suffix so every tune keeps its own name.
    """
    starts = list(_X_LINE.finditer(text))
    if not starts:
        return "", [("1", text)]
    header = "\n".join(m.group(0) for m in _FIELD_LINE.finditer(text[: starts[0].start()]))
    tunes: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        number = m.group(1) or str(i + 1)
        seen[number] += 1
        tunes.append((number if seen[number] == 1 else f"{number}.{seen[number] - 1}", text[m.start() : end]))
    return header, tunes


@contextlib.contextmanager
def _without_beaming() -> Iterator[None]:
    """music21's ABC import beams every part, ~70% of its time; beams are engraving only."""
    from music21 import stream

    original = stream.Stream.makeBeams
    stream.Stream.makeBeams = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        stream.Stream.makeBeams = original  # type: ignore[method-assign]


def parse_abc_text(text: str, source: str) -> FileResult:
    """Parse every tune of an ABC text; tune names are ``f"{source}#{X}"`` (X = reference number).

    Tunes whose ``M:`` fields (their own, else the file header's) are not all 4/4 or 2/2 are
    dropped from the text alone, before the (slow) music21 conversion. Header field lines are
    prepended to every tune, as music21 does when it splits a file itself.
    """
    from music21 import abcFormat
    from music21.abcFormat import translate

    result = FileResult(source)
    header, tunes = split_abc_tunes(text)
    header_meters = _M_LINE.findall(header)
    for number, tune_text in tunes:
        name = f"{source}#{number}"
        problem = _meter_problem(_M_LINE.findall(tune_text) or header_meters)
        if problem is not None:
            result.dropped.append((name, 0, problem))
            continue
        handler = abcFormat.ABCHandler()
        handler.parseHeaderForVersionInformation(text[:100])
        handler.process(f"{header}\n{tune_text}" if header else tune_text)
        if any(isinstance(t, abcFormat.ABCChord) and _INLINE_FIELD.match(t.src) for t in handler.tokens):
            # music21 reads inline fields ([M:3/4], [V:2], ...) as chords: the notes would be garbage.
            result.dropped.append((name, 0, "inline ABC field (misread by music21)"))
            continue
        try:
            with _without_beaming():
                score = translate.abcToStreamScore(handler)
        except Exception:  # music21 raises assorted types for bad ABC
            result.dropped.append((name, 0, "music21 could not parse it"))
            continue
        title = str(score.metadata.title or "") if score.metadata is not None else ""
        if len(score.parts) != 1:
            result.dropped.append((name, 0, "more than one voice"))
            continue
        try:
            tokens, reduced, realigned = part_to_tokens(score.parts[0])
        except Drop as d:
            result.dropped.append((name, 0, d.reason))
            continue
        result.lines.append(Line(name, title, name, 0, tokens, reduced, realigned))
    return result


def parse_abc_file(path: str | Path, source: str) -> FileResult:
    """Parse an ABC file of the corpus (``source`` is its corpus-relative name)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return parse_abc_text(text, source)


# ------------------------------------------------------------------------------------- chorales

VOICE_NAMES = ("soprano", "alto", "tenor", "bass")


def parse_chorale_score(score: Any, source: str) -> FileResult:
    """Lines of the four voices of a chorale score (4 parts, 4/4 or 2/2), named ``source#voice``.

    The split key of every voice is ``source``, so all voices of a chorale share a split.
    """
    result = FileResult(source)
    if len(score.parts) != 4:
        result.dropped.append((source, -1, f"{len(score.parts)} parts, not 4"))
        return result
    meters = _meter_strings(score)
    if not meters or not meters <= ACCEPTED_METERS:
        label = "no meter" if not meters else "meter " + "+".join(sorted(meters))
        result.dropped.append((source, -1, label))
        return result
    title = str(score.metadata.title or "") if score.metadata is not None else ""
    for voice, part in enumerate(score.parts):
        name = f"{source}#{VOICE_NAMES[voice]}"
        try:
            tokens, reduced, realigned = part_to_tokens(part)
        except Drop as d:
            result.dropped.append((name, voice, d.reason))
            continue
        result.lines.append(Line(name, title or source, source, voice, tokens, reduced, realigned))
    return result


def parse_chorale_file(path: str | Path, source: str) -> FileResult:
    """Parse one chorale file of the corpus (MusicXML / Humdrum) into its voice lines."""
    from music21 import converter

    try:
        score = converter.parse(str(path), forceSource=True)
    except Exception:  # music21 raises assorted types for bad files
        return FileResult(source, dropped=[(source, -1, "music21 could not parse it")])
    return parse_chorale_score(score, source)
