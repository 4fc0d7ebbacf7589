"""Write Bach chorale alto lines from music21's corpus as MIDI files: a style the default model never saw.

Usage: ``python bench/bach_alto_midi.py --out data/bach-alto [--count 60]``

The shipped default model was trained on folk tunes and chorale *soprano* lines; the alto lines
of the same chorales move differently (narrower range, more repeated notes and steps, lower
register). Every 4/4 chorale of music21's Bach corpus (``corpus.chorales.Iterator``, the
Riemenschneider numbering) gives one file ``NNN-Title.mid`` holding its alto part alone,
in order, up to ``--count`` files. Written with the project's MIDI writer (tied notes merged;
a pickup is padded with a rest to a full bar, so the file's barlines are the score's, as a DAW
would write them). The demonstration of ``arvae-midi fit`` in docs/results.md
uses ``--count 60``. Prints one JSON line last.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the MIDI files")
    parser.add_argument("--count", type=int, default=60, help="number of chorales (files)")
    args = parser.parse_args()
    from music21 import corpus

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    skipped = 0
    for number, score in enumerate(corpus.chorales.Iterator(numberingSystem="riemenschneider"), start=1):
        if len(written) >= args.count:
            break
        ts = score.recurse().getElementsByClass("TimeSignature")
        alto = [p for p in score.parts if (p.partName or p.id or "").lower().startswith("alt")]
        if not alto or any(t.ratioString != "4/4" for t in ts):
            skipped += 1
            continue
        path = args.out / f"{number:03d}-{_slug(score.metadata.title or '')}.mid"
        write_midi(path, _notes(alto[0]))
        written.append(path.name)
    print(json.dumps({"bench": "bach_alto_midi", "out": str(args.out), "files": len(written),
                      "skipped_not_4_4_or_no_alto": skipped, "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
