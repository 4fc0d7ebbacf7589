"""A measure dataset from the user's own MIDI files (``arvae-midi dataset midi PATH...``).

Steps, per file (folders are searched recursively for ``.mid`` / ``.midi`` / ``.smf`` / ``.kar``):

1. read it with mido; a corrupt, empty, truncated or non-MIDI file is skipped with its reason
   (one line each in the summary), never an exception;
2. choose the melody: the notes of one track (``track``: a name, case-insensitive, or a 1-based
   index), of one channel (``channel`` 1..16), or by default of every channel but the drums
   (channel 10); within a bar the highest sounding note wins, as for live input
   (:func:`arvae_midi.core.tokens.quantize_bar`: onsets to the nearest of the 24 ticks);
3. cut the file into meter passages at its time-signature events (none: 4/4, the MIDI default).
   Passages in 4/4 (or 2/2, the same 4-beat bar) become bars from the passage start; passages
   in other meters are skipped and counted per meter. Silent bars at the start and end of a
   passage are trimmed;
4. a file's 4/4 bars form one line, augmented as the corpus datasets are
   (:func:`arvae_midi.train.corpus.augment_line`: every transposition that keeps the line inside
   the vocabulary range). A line wider than the range is cut into runs of consecutive bars
   that fit, each transposed on its own (:func:`augment_file`);
5. split **by file**: files are ordered by a hash of their path relative to the search root
   and the last ``test_fraction`` / ``val_fraction`` of them (at least one file each) are held
   out; fewer than three usable files cannot be split and raise DatasetError saying so.

The npz holds the arrays of the corpus contract (``tokens``, ``attributes``, ``tune``, ``split``,
``vocab``, ``transpose``, ``bar_index``, ``tune_names``, ``tune_split``, ``info``), one "tune" per
file, so everything that trains on ``folk`` trains on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np

from arvae_midi.core.midi import DRUM_CHANNEL, NotePairs
from arvae_midi.core.tokens import BEATS_PER_BAR, TICKS_PER_BAR, Note, Vocabulary, nearest_tick, quantize_bar
from arvae_midi.errors import ConfigError, DatasetError
from arvae_midi.progress import Progress, ProgressFn
from arvae_midi.train.corpus import augment_line, check_pitch_range, measure_arrays, write_npz

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
#: Meters whose bar is four quarter notes: they become 24-tick bars.
FOUR_FOUR = ((4, 4), (2, 2))
#: Full-range vocabulary (id = 2 + MIDI pitch): lines are transposed before being mapped to the model's.
_FULL = Vocabulary(0, 127)


@dataclass
class MidiDatasetConfig:
    """How MIDI files become a dataset (see the module docstring)."""

    track: str | None = None  # track name or 1-based index; None = all tracks
    channel: int | None = None  # 1..16; None = every channel but the drums
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    low: int = 55
    high: int = 84

    def validate(self) -> None:
        """ConfigError naming the valid values when a field is out of range."""
        if self.channel is not None and not 1 <= self.channel <= 16:
            raise ConfigError(f"channel must be 1..16 (10 = drums), got {self.channel}")
        if self.track is not None and not self.track.strip():
            raise ConfigError("track must be a track name or a 1-based index, got an empty string")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):  # fmt: skip
            raise ConfigError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        check_pitch_range(self.low, self.high)


@dataclass
class MidiDatasetSummary:
    """What a build read, kept and skipped; per-split lists are (train, val, test)."""

    files_found: int = 0
    files_read: int = 0  # readable MIDI files
    files_used: int = 0  # files that gave at least one bar
    bars: int = 0
    rows: int = 0  # bars x transpositions
    files_per_split: list[int] = field(default_factory=lambda: [0, 0, 0])
    bars_per_split: list[int] = field(default_factory=lambda: [0, 0, 0])
    rows_per_split: list[int] = field(default_factory=lambda: [0, 0, 0])
    #: (file, reason) of every file that gave no bar.
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    #: meter ("3/4") -> passages skipped / their bars (including passages of files otherwise used).
    skipped_passages: dict[str, int] = field(default_factory=dict)
    skipped_bars: dict[str, int] = field(default_factory=dict)
    cut_files: int = 0  # files wider than the vocabulary range, transposed in passages that fit
    seconds: float = 0.0
    path: str = ""

    def skip_groups(self) -> dict[str, int]:
        """Skipped files counted per reason group (the text before the first ':' or '(')."""
        return dict(Counter(_group(reason) for _, reason in self.skipped_files).most_common())

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict (with the per-reason counts)."""
        return {**asdict(self), "skip_groups": self.skip_groups()}


def _group(reason: str) -> str:
    return reason.split(" (")[0].split(": ")[0]


@dataclass
class _Passage:
    start: float  # beats
    end: float
    meter: tuple[int, int]


def find_midi_files(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(file, key) for every named file and every MIDI file under every named folder, sorted.

    ``key`` is the path relative to its search root (stable split keys across machines).
    DatasetError when a path does not exist.
    """
    found: dict[Path, str] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix.lower() in MIDI_SUFFIXES:
                    found.setdefault(f, f.relative_to(path).as_posix())
        elif path.is_file():
            found.setdefault(path, path.name)
        else:
            raise DatasetError(f"{path}: no such file or folder")
    return sorted(found.items(), key=lambda item: str(item[0]))


def _passages(mid: mido.MidiFile, end: float) -> list[_Passage]:
    """Meter passages of a file (beats), from its time-signature events over all tracks."""
    tpb = float(mid.ticks_per_beat)
    events: dict[float, tuple[int, int]] = {}
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature":
                events[tick / tpb] = (msg.numerator, msg.denominator)
    if 0.0 not in events:
        events[0.0] = (4, 4)
    starts = sorted(events)
    out: list[_Passage] = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else max(end, start)
        if out and out[-1].meter == events[start]:
            out[-1].end = stop  # a repeated time signature continues the passage
        elif stop > start:
            out.append(_Passage(start, stop, events[start]))
    return out


def _track_matches(track: mido.MidiTrack, index: int, wanted: str) -> bool:
    if wanted.strip().isdigit():
        return index + 1 == int(wanted)
    return track.name.strip().lower() == wanted.strip().lower()


def _notes(mid: mido.MidiFile, config: MidiDatasetConfig) -> tuple[list[Note], str | None]:
    """Notes (beats) of the chosen line, or ([], reason)."""
    tpb = float(mid.ticks_per_beat)
    tracks = list(enumerate(mid.tracks))
    if config.track is not None:
        tracks = [(i, t) for i, t in tracks if _track_matches(t, i, config.track)]
        if not tracks:
            names = ", ".join(f"{i + 1} {t.name.strip() or '(unnamed)'}" for i, t in enumerate(mid.tracks))
            return [], f"no track {config.track!r} (tracks: {names})"
    notes: list[Note] = []
    any_notes = False
    for _, track in tracks:
        tick = 0
        pairs = NotePairs(tpb)
        for msg in track:
            tick += msg.time
            if msg.type not in ("note_on", "note_off"):
                continue
            any_notes = True
            if config.channel is not None:
                if msg.channel != config.channel - 1:
                    continue
            elif msg.channel == DRUM_CHANNEL:
                continue
            pairs.add(tick, msg)
        notes.extend(pairs.close(tick))
    if notes:
        return sorted(notes, key=lambda n: (n.start, -n.pitch)), None
    if not any_notes:
        return [], "no notes"
    if config.channel is not None:
        return [], f"no notes on channel {config.channel}"
    return [], "drums only: no notes outside channel 10"


def _passage_bars(notes: list[Note], passage: _Passage) -> np.ndarray:
    """(n, 24) full-range token bars of a 4/4 passage, silent bars at both ends trimmed."""
    n_bars = int(np.ceil((passage.end - passage.start) / BEATS_PER_BAR - 1e-9))
    per_bar: list[list[Note]] = [[] for _ in range(n_bars)]
    for note in notes:
        local = note.start - passage.start
        if local < -1e-9 or note.start >= passage.end - 1e-9:
            continue
        bar = int(local // BEATS_PER_BAR)
        within = local - bar * BEATS_PER_BAR
        if nearest_tick(within) == TICKS_PER_BAR and bar + 1 < n_bars:  # onset rounds onto the next barline
            bar, within = bar + 1, 0.0
        if bar < n_bars:
            per_bar[bar].append(Note(note.pitch, within, within + note.end - note.start, note.velocity))
    sounding = [i for i, bar in enumerate(per_bar) if bar]
    if not sounding:
        return np.zeros((0, TICKS_PER_BAR), np.int64)
    return np.stack([quantize_bar(per_bar[i], _FULL) for i in range(sounding[0], sounding[-1] + 1)])


def read_midi_line(path: Path, config: MidiDatasetConfig, summary: MidiDatasetSummary) -> np.ndarray | str:
    """A file's 4/4 bars as one full-range token line (n * 24,), or the reason it gives none.

    Skipped other-meter passages are counted into ``summary``.
    """
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        mid = mido.MidiFile(str(path), clip=True)
    except Exception as e:  # noqa: BLE001 - mido raises many types on arbitrary bytes; the file is skipped
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "file is empty or truncated"
        return f"not a readable MIDI file ({type(e).__name__}: {detail})"
    if mid.type == 2:
        return "MIDI type 2 (independent sequences) is not supported"
    if not mid.ticks_per_beat or mid.ticks_per_beat <= 0:
        return "SMPTE time division is not supported"
    summary.files_read += 1
    notes, reason = _notes(mid, config)
    if reason is not None:
        return reason
    end = max(n.end for n in notes)
    bars: list[np.ndarray] = []
    other: Counter[str] = Counter()
    for passage in _passages(mid, end):
        meter = f"{passage.meter[0]}/{passage.meter[1]}"
        if passage.meter in FOUR_FOUR:
            bars.append(_passage_bars(notes, passage))
            continue
        if any(passage.start <= n.start < passage.end for n in notes):
            bar_beats = 4.0 * passage.meter[0] / passage.meter[1]
            other[meter] += 1
            summary.skipped_passages[meter] = summary.skipped_passages.get(meter, 0) + 1
            summary.skipped_bars[meter] = summary.skipped_bars.get(meter, 0) + int(
                np.ceil((passage.end - passage.start) / bar_beats - 1e-9)
            )
    line = np.concatenate(bars) if bars else np.zeros((0, TICKS_PER_BAR), np.int64)
    if len(line) == 0:
        if other:
            return f"no 4/4 passage (only {', '.join(sorted(other))})"
        return "no 4/4 bar with notes"
    return line.reshape(-1)


def _fold(line: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Full-range tokens with every pitch moved by octaves into ``vocab``'s range."""
    out = line.copy()
    for i in np.flatnonzero(out >= 2):
        out[i] = 2 + vocab.fold(int(out[i]) - 2)
    return out


def _fitting_passages(bars: np.ndarray, width: int) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive bars (n, 24) whose pitches span at most ``width`` semitones."""
    runs: list[tuple[int, int]] = []
    start, lo, hi = 0, 1 << 30, -1
    for i, bar in enumerate(bars):
        pitches = bar[bar >= 2]
        new_lo, new_hi = (min(lo, int(pitches.min())), max(hi, int(pitches.max()))) if pitches.size else (lo, hi)
        if new_hi - new_lo > width and i > start:
            runs.append((start, i))
            start = i
            new_lo, new_hi = (int(pitches.min()), int(pitches.max())) if pitches.size else (1 << 30, -1)
        lo, hi = new_lo, new_hi
    runs.append((start, len(bars)))
    return runs


def augment_file(line: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """A file's full-range line -> (rows (M, 24) of ``vocab``, transpose (M,), bar index (M,), was cut).

    As the corpus datasets: every transposition that keeps the line in range. A line wider than
    the range is cut into runs of consecutive bars that fit, each transposed on its own; a single
    bar wider than the range is folded by octaves into it.
    """
    bars = line.reshape(-1, TICKS_PER_BAR)
    rows, shift_col, bar_col = [], [], []
    runs = _fitting_passages(bars, vocab.high - vocab.low)
    for start, end in runs:
        part = bars[start:end].reshape(-1)
        out, shifts = augment_line(part, vocab)
        if len(shifts) == 0:  # one bar wider than the range
            out, shifts = augment_line(_fold(part, vocab), vocab)
        n = end - start
        rows.append(out)
        shift_col.append(np.repeat(shifts, n))
        bar_col.append(np.tile(np.arange(start, end), len(shifts)))
    return (np.concatenate(rows), np.concatenate(shift_col).astype(np.int8),
            np.concatenate(bar_col).astype(np.int32), len(runs) > 1)  # fmt: skip


def _assign_splits(keys: list[str], config: MidiDatasetConfig) -> list[int]:
    """Split of each file: ordered by a hash of its key, the last ones held out (>= 1 each)."""
    n = len(keys)
    if n < 3:
        raise DatasetError(
            f"{n} usable MIDI file{'s' if n != 1 else ''}: the split is by file and needs at least 3 "
            "(train, validation, test), better a few dozen; add files or folders"
        )
    n_test = max(1, round(n * config.test_fraction))
    n_val = max(1, round(n * config.val_fraction))
    order = sorted(range(n), key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
    split = [0] * n
    for rank, i in enumerate(order):
        split[i] = 2 if rank >= n - n_test else 1 if rank >= n - n_test - n_val else 0
    return split


def build_midi_dataset(
    paths: Sequence[str | Path], config: MidiDatasetConfig | None = None, progress: ProgressFn | None = None
) -> tuple[dict[str, np.ndarray], MidiDatasetSummary]:
    """The npz arrays of the MIDI files under ``paths`` and a summary (see the module docstring)."""
    config = config or MidiDatasetConfig()
    config.validate()
    t0 = time.perf_counter()
    vocab = Vocabulary(config.low, config.high)
    files = find_midi_files(paths)
    summary = MidiDatasetSummary(files_found=len(files))
    if not files:
        raise DatasetError(f"no MIDI files ({', '.join(MIDI_SUFFIXES)}) in {', '.join(map(str, paths))}")
    lines: list[tuple[str, int, tuple[np.ndarray, np.ndarray, np.ndarray, bool]]] = []
    for done, (path, key) in enumerate(files):
        if progress is not None:
            progress(Progress("reading MIDI files", done, len(files), detail=path.name))
        result = read_midi_line(path, config, summary)
        if isinstance(result, str):
            summary.skipped_files.append((str(path), result))
            continue
        lines.append((key, len(result) // TICKS_PER_BAR, augment_file(result, vocab)))
    if progress is not None:
        progress(Progress("reading MIDI files", len(files), len(files)))
    splits = _assign_splits([key for key, *_ in lines], config)
    tok_parts: list[np.ndarray] = []
    tune_parts: list[np.ndarray] = []
    shift_parts: list[np.ndarray] = []
    bar_parts: list[np.ndarray] = []
    for tune, ((_, n, (bars, shifts, bar_index, cut)), split) in enumerate(zip(lines, splits, strict=True)):
        tok_parts.append(bars)
        tune_parts.append(np.full(len(bars), tune, np.int32))
        shift_parts.append(shifts)
        bar_parts.append(bar_index)
        summary.files_used += 1
        summary.cut_files += int(cut)
        summary.bars += n
        summary.rows += len(bars)
        summary.files_per_split[split] += 1
        summary.bars_per_split[split] += n
        summary.rows_per_split[split] += len(bars)
    arrays = measure_arrays(vocab, tok_parts, tune_parts, shift_parts, bar_parts, splits, [key for key, *_ in lines])
    summary.seconds = round(time.perf_counter() - t0, 2)
    arrays["info"] = np.array(json.dumps({"summary": summary.to_dict(), "config": asdict(config), "kind": "midi"}))
    return arrays, summary


def save_midi_dataset(
    paths: Sequence[str | Path], out: str | Path, config: MidiDatasetConfig | None = None,
    progress: ProgressFn | None = None,
) -> MidiDatasetSummary:  # fmt: skip
    """Build the dataset of ``paths`` and write it to ``out`` (npz, compressed, atomically)."""
    arrays, summary = build_midi_dataset(paths, config, progress)
    summary.path = str(write_npz(out, arrays))
    return summary


__all__ = [
    "augment_file",
    "MidiDatasetConfig",
    "MidiDatasetSummary",
    "build_midi_dataset",
    "find_midi_files",
    "save_midi_dataset",
]
