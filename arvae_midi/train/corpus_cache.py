"""Corpus file lists, the per-file parse cache, and parsing in parallel.

Every corpus file is parsed once into a :class:`~arvae_midi.train.corpus_parse.FileResult` (its
lines and its drops) by a process-pool task; the result is stored as a small npz under
``<cache>/corpus/`` keyed by music21's version, :data:`~arvae_midi.train.corpus_parse.GRID_VERSION`
and the file's name, size and mtime, so a rebuild (or another dataset over the same files) only
reads it. Tokens are cached in the full-range vocabulary, so the pitch range and the
augmentation can change without parsing again.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from arvae_midi.errors import ConfigError, DatasetError
from arvae_midi.train.corpus_parse import GRID_VERSION, FileResult, Line, parse_abc_file, parse_chorale_file

#: Core-corpus ABC folders that are not folk tunes (Josquin's polyphony).
NOT_FOLK = frozenset({"josquin"})


# ----------------------------------------------------------------------------------- file lists


def corpus_files(corpus: str) -> list[tuple[str, str]]:
    """(corpus-relative name, absolute path) of every file of ``"folk"`` or ``"chorales"``, sorted."""
    return list(_corpus_files(corpus))


@functools.cache
def _corpus_files(corpus: str) -> tuple[tuple[str, str], ...]:
    # Listing the chorales takes seconds (music21 resolves 371 names): once per process.
    from music21 import corpus as m21corpus

    if corpus == "folk":
        files = []
        for p in m21corpus.getCorePaths(fileExtensions=["abc"]):
            path = Path(p)
            if path.parent.name in NOT_FOLK:
                continue
            files.append((f"{path.parent.name}/{path.name}", str(path)))
        return tuple(sorted(files))
    if corpus == "chorales":
        # The Riemenschneider list names 350 distinct files (a few chorales appear twice in it).
        names = sorted({str(n) for n in m21corpus.chorales.Iterator(returnType="filename")})
        return tuple((n, _chorale_path(n, m21corpus.getWork(n))) for n in names)
    raise ConfigError(f"unknown corpus {corpus!r}; valid: folk, chorales")


def _chorale_path(name: str, found: Path | list[Path]) -> str:
    """The file of a chorale name: ``getWork`` lists every file whose name starts with it
    (``bwv244.3`` also finds ``bwv244.32``; ``bwv281`` has ``.krn`` and ``.mxl``); take the exact
    stem, MusicXML first."""
    paths = [Path(p) for p in (found if isinstance(found, list) else [found])]
    stem = name.rsplit("/", 1)[-1]
    exact = [p for p in paths if p.name.rsplit(".", 1)[0] == stem] or paths
    exact.sort(key=lambda p: (p.suffix != ".mxl", str(p)))
    return str(exact[0])


def select_files(files: list[tuple[str, str]], only: str | None, limit: int | None) -> list[tuple[str, str]]:
    """Apply the ``only`` globs (comma-separated) and the ``limit`` of :class:`CorpusConfig`."""
    if only is not None:
        patterns = [p.strip() for p in only.split(",") if p.strip()]
        files = [f for f in files if any(fnmatch.fnmatch(f[0], p) for p in patterns)]
    if limit is not None:
        files = files[:limit]
    return files


# ---------------------------------------------------------------------------------------- cache


def cache_dir(directory: str | Path | None = None) -> Path:
    """Directory of the parse cache: ``directory``, else ``$ARVAE_MIDI_CACHE``, else ``~/.cache/arvae-midi``."""
    if directory:
        return Path(directory)
    env = os.environ.get("ARVAE_MIDI_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "arvae-midi"


def cache_path(directory: Path, corpus: str, name: str, path: str) -> Path:
    """Cache file of one corpus file: keyed by music21 version, grid version, name, size, mtime."""
    import music21

    st = os.stat(path)
    key = f"{music21.__version__}|{GRID_VERSION}|{corpus}|{name}|{st.st_size}|{st.st_mtime_ns}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]
    return directory / "corpus" / f"{corpus}-{digest}.npz"


def _save_result(result: FileResult, path: Path) -> None:
    lines = result.lines
    arrays = {
        "source": np.array(result.source),
        "tokens": np.concatenate([ln.tokens for ln in lines]) if lines else np.zeros(0, np.int16),
        "lengths": np.array([len(ln.tokens) for ln in lines], dtype=np.int64),
        "names": np.array([ln.name for ln in lines], dtype=str),
        "titles": np.array([ln.title for ln in lines], dtype=str),
        "groups": np.array([ln.group for ln in lines], dtype=str),
        "voices": np.array([ln.voice for ln in lines], dtype=np.int64),
        "reduced": np.array([ln.reduced for ln in lines], dtype=bool),
        "realigned": np.array([ln.realigned for ln in lines], dtype=bool),
        "dropped_names": np.array([d[0] for d in result.dropped], dtype=str),
        "dropped_voices": np.array([d[1] for d in result.dropped], dtype=np.int64),
        "dropped_reasons": np.array([d[2] for d in result.dropped], dtype=str),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def _load_result(path: Path) -> FileResult | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            bounds = np.concatenate([[0], np.cumsum(z["lengths"])])
            tokens = z["tokens"]
            fields = zip(z["names"], z["titles"], z["groups"], z["voices"], z["reduced"], z["realigned"], strict=True)
            lines = [
                Line(str(n), str(t), str(g), int(v), tokens[bounds[i] : bounds[i + 1]].copy(), bool(r), bool(a))
                for i, (n, t, g, v, r, a) in enumerate(fields)
            ]
            drops = zip(z["dropped_names"], z["dropped_voices"], z["dropped_reasons"], strict=True)
            dropped = [(str(n), int(v), str(r)) for n, v, r in drops]
            return FileResult(str(z["source"]), lines, dropped)
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from an older layout: parse again


# -------------------------------------------------------------------------------------- parsing


def _parse_one(corpus: str, name: str, path: str) -> FileResult:
    if corpus == "folk":
        return parse_abc_file(path, name)
    return parse_chorale_file(path, name)


def parse_files(
    corpus: str,
    *,
    only: str | None = None,
    limit: int | None = None,
    jobs: int = 2,
    use_cache: bool = True,
    directory: str | Path | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> tuple[list[FileResult], int, int]:
    """Parse (or read from the cache) every file of ``corpus`` selected by ``only`` / ``limit``.

    ``jobs`` processes parse, one task per file; ``directory`` is the cache (see
    :func:`cache_dir`); ``on_file(done, total)`` is called after each file. Returns the results in
    file order, the number of files and how many came from the cache.
    """
    files = select_files(corpus_files(corpus), only, limit)
    if not files:
        raise DatasetError(f"no {corpus} files match only={only!r} limit={limit}")
    cache = cache_dir(directory)
    results: dict[int, FileResult] = {}
    todo: list[int] = []
    for i, (name, path) in enumerate(files):
        cached = _load_result(cache_path(cache, corpus, name, path)) if use_cache else None
        if cached is not None:
            results[i] = cached
        else:
            todo.append(i)
    n_cached = len(results)
    done = n_cached
    if on_file is not None:
        on_file(done, len(files))

    def finish(i: int, result: FileResult) -> None:
        nonlocal done
        results[i] = result
        name, path = files[i]
        if use_cache:
            _save_result(result, cache_path(cache, corpus, name, path))
        done += 1
        if on_file is not None:
            on_file(done, len(files))

    # Big files first, so the last task to finish is a short one.
    todo.sort(key=lambda i: -os.path.getsize(files[i][1]))
    if jobs == 1 or len(todo) <= 1:
        for i in todo:
            finish(i, _parse_one(corpus, *files[i]))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_parse_one, corpus, *files[i]): i for i in todo}
            for fut in as_completed(futures):
                finish(futures[fut], fut.result())
    return [results[i] for i in range(len(files))], len(files), n_cached
