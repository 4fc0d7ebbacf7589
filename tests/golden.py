"""Golden outputs of the shipped default model, and the README's example blocks made from them.

One command regenerates everything after the shipped model (or what a command prints) changes:

    python -m tests.golden --write

It rewrites ``tests/resources/melody.mid`` (the example melody), runs each command of
:data:`COMMANDS` with the shipped model, stores what it printed and the tokens of the MIDI file
it wrote in ``tests/resources/golden.json``, and rewrites the README blocks between
``<!-- golden: NAME -->`` and ``<!-- /golden -->`` from the stored output. ``tests/test_golden.py``
re-runs the commands and compares: tokens exactly, printed numbers within :data:`TOLERANCE`,
everything else exactly; and the README blocks exactly against the stored output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arvae_midi.commands.demo import DEMO_MELODY
from arvae_midi.core.midi import read_midi, write_midi
from arvae_midi.core.tokens import Note, Vocabulary
from arvae_midi.presets import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "tests" / "resources"
MELODY = RESOURCES / "melody.mid"
GOLDEN = RESOURCES / "golden.json"
README = ROOT / "README.md"
#: Printed numbers may differ by this much (float noise in the last printed digit).
TOLERANCE = 2e-3
#: Terminal width the commands' tables are drawn at.
COLUMNS = "100"
#: The example melody: the demo's bar in D major, then a plainer bar (quarters and eighths).
MELODY_NOTES: tuple[Note, ...] = (
    *DEMO_MELODY,
    Note(74, 4.0, 5.0, 84),
    Note(71, 5.0, 5.5, 80),
    Note(69, 5.5, 6.0, 76),
    Note(66, 6.0, 7.0, 82),
    Note(62, 7.0, 8.0, 78),
)
MELODY_BPM = 100


@dataclass(frozen=True)
class Command:
    """One pinned command: ``shown`` as the README prints it; ``midi_out`` the file whose tokens are pinned."""

    name: str
    shown: str  # the command line, relative to the repository root
    midi_out: str | None  # relative to the working folder the command runs in
    readme: bool = True


COMMANDS: tuple[Command, ...] = (
    Command("demo", "arvae-midi demo", "demo.mid"),
    Command("analyze", "arvae-midi analyze tests/resources/melody.mid --json", None),
    Command("vary", "arvae-midi vary tests/resources/melody.mid --out v.mid --set note_density=127 "
            "--variations 2 --seed 1", "v.mid"),
    Command("vary-json", "arvae-midi vary tests/resources/melody.mid --out v.mid --set contour=0 "
            "--amount 0.3 --variations 3 --seed 7 --json", "v.mid", readme=False),
)


def write_melody(path: Path = MELODY) -> Path:
    """Write the example melody (two 4/4 bars at 100 bpm)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_midi(path, list(MELODY_NOTES), bpm=MELODY_BPM)
    return path


def model_sha256() -> str:
    """SHA-256 of the shipped default model file."""
    return hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()


@contextmanager
def _in_folder(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def run(command: Command) -> dict[str, Any]:
    """Run ``command`` in a fresh folder; returns its stdout and the tokens of its MIDI output."""
    from typer.testing import CliRunner

    from arvae_midi.cli import app

    argv = [str(ROOT / a) if a.startswith("tests/resources/") else a for a in shlex.split(command.shown)[1:]]
    with tempfile.TemporaryDirectory() as tmp, _in_folder(Path(tmp)):
        res = CliRunner().invoke(app, argv, env={"COLUMNS": COLUMNS})
        if res.exit_code != 0:
            raise RuntimeError(f"{command.shown} failed ({res.exit_code}): {res.output}") from res.exception
        tokens = None
        if command.midi_out is not None:
            tokens = read_midi(Path(tmp) / command.midi_out).bar_tokens(Vocabulary()).tolist()
    return {"output": "\n".join(line.rstrip() for line in res.stdout.splitlines()), "tokens": tokens}


def run_all() -> dict[str, Any]:
    """Every pinned command's result, with the model it ran."""
    return {"model_sha256": model_sha256(), "commands": {c.name: run(c) for c in COMMANDS}}


def load() -> dict[str, Any]:
    """The stored golden results."""
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def same_text(got: str, want: str, tolerance: float = TOLERANCE) -> str | None:
    """None when ``got`` equals ``want`` up to numbers within ``tolerance``, else what differs."""
    got_lines, want_lines = got.splitlines(), want.splitlines()
    if len(got_lines) != len(want_lines):
        return f"{len(got_lines)} lines, golden has {len(want_lines)}"
    for i, (g, w) in enumerate(zip(got_lines, want_lines, strict=True)):
        if _NUMBER.sub("#", g) != _NUMBER.sub("#", w):
            return f"line {i + 1}: {g!r} != golden {w!r}"
        for a, b in zip(_NUMBER.findall(g), _NUMBER.findall(w), strict=True):
            if abs(float(a) - float(b)) > tolerance:
                return f"line {i + 1}: {a} != golden {b} (tolerance {tolerance})"
    return None


def readme_block(name: str, golden: dict[str, Any]) -> str:
    """The README block of command ``name``: the command line and its stored output."""
    command = next(c for c in COMMANDS if c.name == name)
    return f"```\n$ {command.shown}\n{golden['commands'][name]['output']}\n```"


_BLOCK = re.compile(r"<!-- golden: (?P<name>[\w-]+) -->\n(?:(?P<body>(?:(?!<!-- golden:).)*?)\n)?<!-- /golden -->",
                    re.S)  # fmt: skip


def readme_blocks(text: str) -> dict[str, str]:
    """The golden blocks in README text, by name."""
    return {m.group("name"): m.group("body") or "" for m in _BLOCK.finditer(text)}


def render_readme(text: str, golden: dict[str, Any]) -> str:
    """README text with every golden block rewritten from ``golden``."""
    def block(m: re.Match[str]) -> str:
        name = m.group("name")
        return f"<!-- golden: {name} -->\n{readme_block(name, golden)}\n<!-- /golden -->"

    return _BLOCK.sub(block, text)


def main() -> None:
    """``--write``: regenerate the melody, the golden file and the README blocks; else check them."""
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite melody.mid, golden.json and README.md")
    args = parser.parse_args()
    if args.write:
        write_melody()
        golden = run_all()
        GOLDEN.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
        README.write_text(render_readme(README.read_text(encoding="utf-8"), golden), encoding="utf-8")
        print(f"wrote {MELODY.relative_to(ROOT)}, {GOLDEN.relative_to(ROOT)} and the README blocks")
        return
    golden, fresh = load(), run_all()
    problems = [f"{name}: {diff}" for name, result in fresh["commands"].items()
                if (diff := same_text(result["output"], golden["commands"][name]["output"]))]  # fmt: skip
    problems += [f"{name}: tokens differ" for name, result in fresh["commands"].items()
                 if result["tokens"] != golden["commands"][name]["tokens"]]  # fmt: skip
    print("\n".join(problems) or "golden outputs match")


if __name__ == "__main__":
    main()
