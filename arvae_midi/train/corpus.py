"""Folk and chorale measure datasets from music21's corpus: parse (parallel, cached), augment, split.

``build_dataset("folk" | "chorales" | "folk-chorales", config)`` returns the npz arrays of the
issue-3 contract and a :class:`DatasetSummary`; :func:`save_dataset` writes them. Steps:

1. list the corpus files (every core ABC file for folk: essenFolksong, oneills1850, airdsAirs,
   ryansMammoth, miscFolk, nottingham-dataset, but not josquin; the 350 distinct files of the 371
   Riemenschneider chorales);
2. parse each file into lines (:mod:`arvae_midi.train.corpus_parse`), one process-pool task per
   file, each file's result cached on disk (:mod:`arvae_midi.train.corpus_cache`;
   ``$ARVAE_MIDI_CACHE`` or ``~/.cache/arvae-midi``), so a second build only reads the cache;
3. drop exact duplicates (same tokens up to transposition; the corpus holds a few tunes twice);
4. transpose every line by every semitone ``s`` with ``low - min_pitch <= s <= high - max_pitch``
   (docs/reference.md §1.2; lines wider than the range give nothing and count as dropped), done
   on token ids, and cut into 24-tick bars (real bars: no START/END padding bars);
5. split 80/10/10 by a hash of the tune's corpus id (all bars and transpositions of a tune, and
   all voices of a chorale, share a split; the split of a tune does not depend on which other
   files were parsed).

npz arrays: ``tokens`` (M, 24) int8, ``attributes`` (M, 4) float32, ``tune`` (M,) int32 (index
into ``tune_names``), ``split`` (M,) int8 (0 train, 1 val, 2 test), ``vocab`` (V,) str,
``transpose`` (M,) int8 semitones, ``bar_index`` (M,) int32 (bar of the tune), and per tune
``tune_names``, ``tune_titles``, ``tune_voice`` (int8, part index), ``tune_split`` (int8),
``tune_corpus`` ("folk" | "chorales"); ``info`` is a JSON string with the build summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from arvae_midi.core.attributes import compute_attributes
from arvae_midi.core.constants import SPLITS
from arvae_midi.core.tokens import TICKS_PER_BAR, Vocabulary
from arvae_midi.errors import ConfigError, DatasetError
from arvae_midi.progress import Progress, ProgressFn, reporter
from arvae_midi.train.corpus_cache import parse_files
from arvae_midi.train.corpus_parse import GRID_VERSION, FileResult, Line

#: Dataset names :func:`build_dataset` knows, and the corpora each one unites.
DATASETS: dict[str, tuple[str, ...]] = {
    "folk": ("folk",),
    "chorales": ("chorales",),
    "folk-chorales": ("folk", "chorales"),
}
VOICE_MODES = ("soprano", "all")
SPLIT_NAMES = tuple(SPLITS)  # in id order


@dataclass
class CorpusConfig:
    """How to build a corpus dataset.

    ``voices``: chorales give their soprano line (``"soprano"``, the reference) or all four voices
    as separate lines (``"all"``; folk-chorales always uses the soprano). ``jobs``: parsing
    processes. ``use_cache`` / ``cache_dir``: the per-file parse cache (None: ``$ARVAE_MIDI_CACHE``
    or ``~/.cache/arvae-midi``). ``only`` (comma-separated globs on corpus-relative names such
    as ``"ryansMammoth/A*,bach/bwv26.6"``) and ``limit`` (first N files of each corpus) restrict the file list for
    tests and quick looks. ``fractions``: train and val shares (test gets the rest);
    ``split_seed`` salts the tune hash. ``low``/``high``: vocabulary pitch range.
    ``dedupe``: drop lines equal to an earlier one up to transposition. ``strict_bars``: drop the
    lines whose barlines had to be realigned with an inserted rest (repeats that replay a pickup,
    transcriptions whose bars do not add up; about 8% of the folk tunes).
    """

    voices: str = "soprano"
    jobs: int = 2
    use_cache: bool = True
    cache_dir: str | None = None
    only: str | None = None
    limit: int | None = None
    fractions: tuple[float, float] = (0.8, 0.1)
    split_seed: int = 0
    low: int = 55
    high: int = 84
    dedupe: bool = True
    strict_bars: bool = False

    def validate(self) -> None:
        """Raise ConfigError naming the valid values when a field is out of range."""
        if self.voices not in VOICE_MODES:
            raise ConfigError(f"voices must be one of {', '.join(VOICE_MODES)}, got {self.voices!r}")
        if self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 file, got {self.limit}")
        train, val = self.fractions
        if not (train > 0 and val >= 0 and train + val <= 1):
            raise ConfigError(f"fractions (train, val) must be positive and sum to <= 1, got {self.fractions}")
        check_pitch_range(self.low, self.high)


def check_pitch_range(low: int, high: int) -> None:
    """ConfigError unless ``low..high`` (MIDI) makes a vocabulary (:class:`Vocabulary`)."""
    try:
        Vocabulary(low, high)
    except ValueError as e:
        raise ConfigError(f"pitch range: {e}") from e


def measure_arrays(
    vocab: Vocabulary, tok_parts: list[np.ndarray], tune_parts: list[np.ndarray], shift_parts: list[np.ndarray],
    bar_parts: list[np.ndarray], tune_split: list[int], tune_names: list[str],
) -> dict[str, np.ndarray]:  # fmt: skip
    """The npz arrays every measure dataset has, from per-tune parts (rows of tune i in part i).

    ``tokens`` (N, 24) int8, ``attributes`` (N, 4), ``tune`` / ``split`` / ``transpose`` /
    ``bar_index`` per row, ``vocab``, and per tune ``tune_names`` and ``tune_split``.
    """
    tokens = np.concatenate(tok_parts)
    tune_col = np.concatenate(tune_parts)
    split_arr = np.asarray(tune_split, dtype=np.int8)
    return {
        "tokens": tokens.astype(np.int8),
        "attributes": compute_attributes(tokens, vocab).astype(np.float32),
        "tune": tune_col,
        "split": split_arr[tune_col],
        "vocab": np.array(vocab.tokens, dtype=str),
        "transpose": np.concatenate(shift_parts),
        "bar_index": np.concatenate(bar_parts),
        "tune_names": np.array(tune_names, dtype=str),
        "tune_split": split_arr,
    }


def write_npz(out: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``out`` (compressed npz) atomically: a reader never sees half a file."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


@dataclass
class DatasetSummary:
    """What a build produced. Per-split lists are in (train, val, test) order.

    ``tunes``: lines kept (before augmentation); ``bars``: their bars; ``rows``: bars after
    transposition (the npz rows); ``dropped``: reason -> lines left out; ``reduced``: kept lines
    whose chords / simultaneous notes were reduced to the top note; ``realigned``: kept lines where
    a rest was inserted mid-piece to keep complete measures on barlines.
    """

    name: str
    tunes: int = 0
    bars: int = 0
    rows: int = 0
    tunes_per_split: list[int] = field(default_factory=lambda: [0, 0, 0])
    bars_per_split: list[int] = field(default_factory=lambda: [0, 0, 0])
    rows_per_split: list[int] = field(default_factory=lambda: [0, 0, 0])
    dropped: dict[str, int] = field(default_factory=dict)
    reduced: int = 0
    realigned: int = 0
    files: int = 0
    cached_files: int = 0
    seconds: float = 0.0
    path: str = ""

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict."""
        return asdict(self)


def parse_corpus(
    corpus: str, config: CorpusConfig, on_file: Callable[[int, int], None] | None = None
) -> tuple[list[FileResult], int, int]:
    """:func:`~arvae_midi.train.corpus_cache.parse_files` with the options of ``config``."""
    return parse_files(
        corpus,
        only=config.only,
        limit=config.limit,
        jobs=config.jobs,
        use_cache=config.use_cache,
        directory=config.cache_dir,
        on_file=on_file,
    )


# --------------------------------------------------------------------- augmentation and splits


def transpositions(tokens: np.ndarray, low: int, high: int) -> range:
    """Semitone shifts that keep every pitch of a :data:`FULL_VOCAB` line inside ``low..high``."""
    pitches = tokens[tokens >= 2].astype(np.int64) - 2
    if pitches.size == 0:
        return range(0)
    return range(low - int(pitches.min()), high - int(pitches.max()) + 1)


def augment_line(tokens: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """All transpositions of a line as bars: ((S * n_bars, 24) ids of ``vocab``, (S,) shifts).

    Pitch ids move by ``s - vocab.low`` (full-range id 2 + p becomes 2 + p + s - low); HOLD and
    REST stay. S = 0 when the line is wider than the vocabulary's range.
    """
    shifts = np.array(transpositions(tokens, vocab.low, vocab.high), dtype=np.int64)
    ids = tokens.astype(np.int64)
    is_pitch = ids >= 2
    out = np.where(is_pitch[None, :], ids[None, :] + shifts[:, None] - vocab.low, ids[None, :])
    return out.reshape(-1, TICKS_PER_BAR), shifts


def split_of(key: str, fractions: tuple[float, float] = (0.8, 0.1), seed: int = 0) -> int:
    """The split id (:data:`~arvae_midi.core.constants.SPLITS`) of a split key, from a salted
    SHA-256 (stable across builds)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    name = "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"
    return SPLITS[name]


def _canonical(tokens: np.ndarray) -> bytes:
    """Tokens with pitches moved so the lowest is 0: equal for transposed copies."""
    ids = tokens.astype(np.int64)
    pitch = ids >= 2
    if pitch.any():
        ids = np.where(pitch, ids - ids[pitch].min() + 2, ids)
    return ids.tobytes()


def _reason(corpus: str, reason: str, mixed: bool) -> str:
    """Drop reason, tagged with the corpus when the dataset unites several."""
    return f"{reason} ({corpus})" if mixed else reason


def assemble(
    corpus_lines: Iterable[tuple[str, list[Line]]],
    config: CorpusConfig,
    summary: DatasetSummary,
) -> dict[str, np.ndarray]:
    """Dedupe, augment and split ``(corpus, lines)`` groups into the npz arrays; fills ``summary``."""
    vocab = Vocabulary(config.low, config.high)
    corpus_lines = list(corpus_lines)
    mixed = len(corpus_lines) > 1
    dropped: Counter[str] = Counter(summary.dropped)
    seen: set[bytes] = set()
    tok_parts: list[np.ndarray] = []
    tune_parts: list[np.ndarray] = []
    shift_parts: list[np.ndarray] = []
    bar_parts: list[np.ndarray] = []
    names: list[str] = []
    titles: list[str] = []
    voices: list[int] = []
    splits: list[int] = []
    corpora: list[str] = []
    for corpus, lines in corpus_lines:
        for line in lines:
            if config.strict_bars and line.realigned:
                dropped[_reason(corpus, "barlines had to be realigned (strict bars)", mixed)] += 1
                continue
            if config.dedupe:
                key = bytes([line.voice]) + _canonical(line.tokens)
                if key in seen:
                    dropped[_reason(corpus, "duplicate of another line (up to transposition)", mixed)] += 1
                    continue
                seen.add(key)
            bars, shifts = augment_line(line.tokens, vocab)
            if len(shifts) == 0:
                dropped[_reason(corpus, f"range wider than {vocab.high - vocab.low} semitones", mixed)] += 1
                continue
            tune = len(names)
            split = split_of(f"{corpus}:{line.group}", config.fractions, config.split_seed)
            names.append(f"{corpus}:{line.name}")
            titles.append(line.title)
            voices.append(line.voice)
            splits.append(split)
            corpora.append(corpus)
            n = line.n_bars
            tok_parts.append(bars)
            tune_parts.append(np.full(len(bars), tune, dtype=np.int32))
            shift_parts.append(np.repeat(shifts, n).astype(np.int8))
            bar_parts.append(np.tile(np.arange(n, dtype=np.int32), len(shifts)))
            summary.tunes += 1
            summary.bars += n
            summary.rows += len(bars)
            summary.tunes_per_split[split] += 1
            summary.bars_per_split[split] += n
            summary.rows_per_split[split] += len(bars)
            summary.reduced += int(line.reduced)
            summary.realigned += int(line.realigned)
    if not names:
        raise DatasetError(f"{summary.name}: no tune survived parsing ({sum(dropped.values())} dropped)")
    summary.dropped = dict(dropped.most_common())
    return measure_arrays(vocab, tok_parts, tune_parts, shift_parts, bar_parts, splits, names) | {
        "tune_titles": np.array(titles, dtype=str),
        "tune_voice": np.array(voices, dtype=np.int8),
        "tune_corpus": np.array(corpora, dtype=str),
    }


def _select_lines(
    corpus: str, results: list[FileResult], voices: str, dropped: Counter[str], mixed: bool
) -> list[Line]:
    """Kept lines of the wanted voices; counts the drops that concern them."""
    want_all = corpus == "folk" or voices == "all"
    lines = [ln for r in results for ln in r.lines if want_all or ln.voice == 0]
    for r in results:
        for _, voice, reason in r.dropped:
            if want_all or voice in (-1, 0):
                # A whole-chorale drop counts once per line it would have given.
                weight = 4 if (voice == -1 and corpus == "chorales" and voices == "all") else 1
                dropped[_reason(corpus, reason, mixed)] += weight
    return lines


def build_dataset(
    name: str, config: CorpusConfig | None = None, progress: ProgressFn | None = None
) -> tuple[dict[str, np.ndarray], DatasetSummary]:
    """Build the arrays of dataset ``name`` (``folk``, ``chorales``, ``folk-chorales``).

    Parsed files are reported to ``progress`` (task "parsing CORPUS files").
    """
    config = config or CorpusConfig()
    config.validate()
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    t0 = time.perf_counter()
    summary = DatasetSummary(name)
    dropped: Counter[str] = Counter()
    groups: list[tuple[str, list[Line]]] = []
    # folk-chorales is the default model's set: chorale sopranos only.
    voices = "soprano" if name == "folk-chorales" else config.voices
    report = reporter(progress)
    for corpus in DATASETS[name]:

        def on_file(done: int, total: int, task: str = f"parsing {corpus} files") -> None:
            report(Progress(task, done, total))

        results, n_files, n_cached = parse_corpus(corpus, config, on_file)
        summary.files += n_files
        summary.cached_files += n_cached
        mixed = len(DATASETS[name]) > 1
        groups.append((corpus, _select_lines(corpus, results, voices, dropped, mixed)))
    summary.dropped = dict(dropped)
    arrays = assemble(groups, config, summary)
    summary.seconds = round(time.perf_counter() - t0, 2)
    arrays["info"] = np.array(json.dumps(_info(summary, config)))
    return arrays, summary


def _info(summary: DatasetSummary, config: CorpusConfig) -> dict[str, object]:
    import music21

    return {
        "summary": summary.to_dict(),
        "config": asdict(config),
        "music21": music21.__version__,
        "grid_version": GRID_VERSION,
        "splits": list(SPLIT_NAMES),
    }


def save_dataset(
    name: str, out: str | Path, config: CorpusConfig | None = None, progress: ProgressFn | None = None
) -> DatasetSummary:
    """Build dataset ``name`` and write it to ``out`` (npz, compressed); returns the summary."""
    t0 = time.perf_counter()
    arrays, summary = build_dataset(name, config, progress)
    summary.path = str(write_npz(out, arrays))
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


__all__ = [
    "DATASETS",
    "CorpusConfig",
    "DatasetSummary",
    "assemble",
    "augment_line",
    "build_dataset",
    "parse_corpus",
    "save_dataset",
    "split_of",
    "transpositions",
]
