"""MIDI files: reading, writing, meters and bad input, through the library and `analyze`."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.midi import bars_to_notes, read_midi, write_midi
from arvae_midi.core.tokens import Note, Vocabulary
from arvae_midi.errors import MidiFileError, UnsupportedMeterError

runner = CliRunner()


def melody_file(path: Path, meter: tuple[int, int] = (4, 4), notes: list[tuple[int, int, int]] | None = None) -> Path:
    """Write a type-1 file at 480 ppq: notes as (pitch, start tick, end tick)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]))
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)))
    mid.tracks.append(meta)
    track = mido.MidiTrack()
    events = []
    for pitch, on, off in notes if notes is not None else [(60, 0, 480), (64, 480, 960), (67, 1440, 1920)]:
        events += [(on, mido.Message("note_on", note=pitch, velocity=80)), (off, mido.Message("note_off", note=pitch))]
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    mid.tracks.append(track)
    mid.save(str(path))
    return path


def test_read_type1_file(tmp_path: Path, vocab: Vocabulary) -> None:
    song = read_midi(melody_file(tmp_path / "m.mid"))
    assert song.bpm == pytest.approx(100)
    assert [n.pitch for n in song.notes] == [60, 64, 67]
    assert song.bar_velocities() == [80]
    toks = vocab.to_strings(song.bar_tokens(vocab)[0])
    assert toks[0] == "60" and toks[6] == "64" and toks[12] == "rest"


def test_write_then_read_round_trip(tmp_path: Path, vocab: Vocabulary) -> None:
    bars = np.array([[vocab.pitch_id(60)] + [0] * 5 + [vocab.pitch_id(62)] + [0] * 11 + [1] + [0] * 5] * 3)
    write_midi(tmp_path / "o.mid", bars_to_notes(bars, vocab, [70, 80, 90]), bpm=90)
    song = read_midi(tmp_path / "o.mid")
    assert song.bpm == pytest.approx(90)
    np.testing.assert_array_equal(song.bar_tokens(vocab), bars)
    assert song.bar_velocities() == [70, 80, 90]


def test_drums_and_unreleased_notes(tmp_path: Path) -> None:
    mid = mido.MidiFile(ticks_per_beat=96)
    tr = mido.MidiTrack([
        mido.Message("note_on", note=36, velocity=100, channel=9),
        mido.Message("note_on", note=72, velocity=100, time=0),
        mido.Message("note_off", note=36, channel=9, time=96),
    ])
    mid.tracks.append(tr)
    mid.save(str(tmp_path / "d.mid"))
    song = read_midi(tmp_path / "d.mid")
    assert [n.pitch for n in song.notes] == [72]  # drum channel ignored, hanging note closed


def test_no_notes_gives_no_bars(tmp_path: Path) -> None:
    song = read_midi(melody_file(tmp_path / "e.mid", notes=[]))
    assert song.bars == []
    result = runner.invoke(app, ["analyze", str(tmp_path / "e.mid"), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"bars": []}


def test_three_four_is_rejected(tmp_path: Path) -> None:
    path = melody_file(tmp_path / "waltz.mid", meter=(3, 4))
    with pytest.raises(UnsupportedMeterError, match="3/4"):
        read_midi(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a midi file at all", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x01\x00\x90<"],
    ids=["empty", "text", "truncated"],
)
def test_bad_files_raise_midi_file_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MidiFileError):
        read_midi(path)


def test_write_to_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MidiFileError):
        write_midi(tmp_path / "nope" / "x.mid", [Note(60, 0, 1)])


def test_analyze_json_output(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(melody_file(tmp_path / "m.mid")), "--json"])
    assert result.exit_code == 0
    bars = json.loads(result.stdout)["bars"]
    assert len(bars) == 1 and bars[0]["index"] == 0
    assert bars[0]["note_density"] == pytest.approx(3 / 24, abs=1e-4)
    assert bars[0]["pitch_range"] == pytest.approx(7 / 26, abs=1e-4)


def test_analyze_table_output(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(melody_file(tmp_path / "m.mid"))])
    assert result.exit_code == 0 and "rhythmic_complexity" in result.stdout


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "waltz", "missing"])
def test_cli_bad_input_one_line_exit_1(tmp_path: Path, kind: str) -> None:
    """The installed entry point prints one line on stderr and exits 1, no traceback."""
    import subprocess
    import sys

    path = tmp_path / f"{kind}.mid"
    if kind == "text":
        path.write_text("hello")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        full = melody_file(tmp_path / "full.mid").read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif kind == "waltz":
        melody_file(path, meter=(3, 4))
    proc = subprocess.run(
        [sys.executable, "-m", "arvae_midi.cli", "analyze", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr
