"""Write melody lines from music21's corpus as MIDI files: styles the default model never saw.

Usage: ``python bench/corpus_midi.py --style classical|bach-alto --out FOLDER [--count N]``

The shipped default model was trained on folk tunes and Bach chorale *soprano* lines. Styles:

* ``classical``: the two upper parts (first and second violin; right and left hand for the one
  piano sonata) of every movement in 4/4 or 2/2 by Haydn, Mozart and Beethoven in music21's
  corpus, one file per part and movement (``haydn-opus74no1-movement1-p1.mid``): 16th-note runs,
  triplets, syncopation and wide leaps, far from folk tunes. The demonstration of
  ``arvae-midi fit`` in docs/results.md uses this style;
* ``bach-alto``: the alto line of each 4/4 Bach chorale (Riemenschneider order), one file each
  (``002-Title.mid``); close to the soprano lines the default model knows (it reconstructs
  98 % of their tokens before any fine-tuning).

Files are written with the project's MIDI writer: tied notes merged, a pickup padded with a rest
to a full bar (so the file's barlines are the score's, as a DAW would write them), chords
reduced to their top note. ``--count`` caps the number of files. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arvae_midi.core.midi import write_midi  # noqa: E402
from arvae_midi.core.tokens import Note  # noqa: E402


def _notes(part: object) -> list[Note]:
    """The part's notes in beats, shifted so a pickup fills its bar's end."""
    measures = list(part.getElementsByClass("Measure"))  # type: ignore[attr-defined]
    shift = float(measures[0].paddingLeft) if measures else 0.0
    notes = []
    for n in part.stripTies().flatten().notes:  # type: ignore[attr-defined]
        pitch = n.pitches[-1].midi  # a chord (rare in a single voice) keeps its top note
        start = float(n.getOffsetInHierarchy(part)) + shift
        notes.append(Note(int(pitch), start, start + float(n.duration.quarterLength), 90))
    return notes


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_")[:40] or "chorale"


def _bach_alto(out: Path, count: int) -> tuple[list[str], int]:
    from music21 import corpus

    written: list[str] = []
    skipped = 0
    for number, score in enumerate(corpus.chorales.Iterator(numberingSystem="riemenschneider"), start=1):
        if len(written) >= count:
            break
        ts = score.recurse().getElementsByClass("TimeSignature")
        alto = [p for p in score.parts if (p.partName or p.id or "").lower().startswith("alt")]
        if not alto or any(t.ratioString != "4/4" for t in ts):
            skipped += 1
            continue
        path = out / f"{number:03d}-{_slug(score.metadata.title or '')}.mid"
        write_midi(path, _notes(alto[0]))
        written.append(path.name)
    return written, skipped


def _classical(out: Path, count: int) -> tuple[list[str], int]:
    from music21 import corpus

    written: list[str] = []
    skipped = 0
    for composer in ("haydn", "mozart", "beethoven"):
        for source in sorted(corpus.getComposer(composer), key=str):
            if len(written) >= count:
                return written, skipped
            rel = Path(str(source).split("/corpus/")[-1])
            try:
                score = corpus.parse(source)
            except Exception:  # noqa: BLE001 - a corpus file music21 cannot parse is left out
                skipped += 1
                continue
            meters = {t.ratioString for t in score.recurse().getElementsByClass("TimeSignature")}
            if not meters or not meters <= {"4/4", "2/2"} or len(score.parts) < 2:
                skipped += 1
                continue
            stem = _slug("-".join(rel.with_suffix("").parts)).replace("_", "-")
            for k, part in enumerate(score.parts[:2], start=1):
                path = out / f"{stem}-p{k}.mid"
                write_midi(path, _notes(part))
                written.append(path.name)
    return written, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", choices=("classical", "bach-alto"), default="classical")
    parser.add_argument("--out", type=Path, required=True, help="folder for the MIDI files")
    parser.add_argument("--count", type=int, default=200, help="at most this many files")
    args = parser.parse_args()
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    make = _classical if args.style == "classical" else _bach_alto
    written, skipped = make(args.out, args.count)
    print(
        json.dumps(
            {
                "bench": "corpus_midi",
                "style": args.style,
                "out": str(args.out),
                "files": len(written),
                "sources_skipped": skipped,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
