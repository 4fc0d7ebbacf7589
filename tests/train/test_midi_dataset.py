"""``arvae-midi dataset midi`` end to end on a folder of MIDI files the test writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import compute_attributes
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.errors import DatasetError
from arvae_midi.train.midi_dataset import MidiDatasetConfig, build_midi_dataset
from tests.train.midi_fixtures import four_four_song, melody, track, write

runner = CliRunner()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """4 usable files (3 in 4/4, 1 changing 4/4 -> 3/4 -> 4/4), a 3/4 file, a drum-only file,
    a corrupt file, an empty file, a text file and a non-MIDI suffix that is ignored."""
    root = tmp_path / "songs"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        four_four_song(root / f"song{i}.mid", bars=4, base=60 + i, seed=i)
    # 4/4 for 2 bars (8 beats), 3/4 for 2 bars (6 beats), 4/4 again for 1 bar.
    change = melody(8 * 2 + 6 * 2 + 8, 62, seed=3)
    write(root / "sub" / "change.mid", track(change, meters=[(0, 4, 4), (8, 3, 4), (14, 4, 4)]))
    write(root / "waltz.mid", track(melody(6 * 4, 64), meters=[(0, 3, 4)]))
    write(root / "drums.mid", track([(36, i * 1.0, i * 1.0 + 0.5) for i in range(16)], channel=9))
    (root / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x01\x00\x90")
    (root / "empty.midi").write_bytes(b"")
    (root / "notes.mid").write_text("this is not a MIDI file\n")
    (root / "readme.txt").write_text("ignored: not a MIDI suffix\n")
    return root


def test_dataset_midi_counts_and_contract(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.npz"
    result = runner.invoke(app, ["dataset", "midi", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # one line per skipped file, naming it
    for name in ("waltz.mid", "drums.mid", "corrupt.mid", "empty.midi", "notes.mid"):
        assert sum(name in line and line.startswith("skipped") for line in result.output.splitlines()) == 1
    assert "readme.txt" not in result.output
    assert "skipped 2 passages in 3/4" in result.output  # the waltz and the change file's middle

    summary = json.loads(runner.invoke(app, ["dataset", "midi", str(folder), "--out", str(out), "--json"]).output)
    assert summary["files_found"] == 9
    assert summary["files_read"] == 6  # corrupt, empty and text files are not MIDI
    assert summary["files_used"] == 4
    assert summary["bars"] == 3 * 4 + 2 + 1
    assert summary["skipped_passages"] == {"3/4": 2}
    assert summary["skipped_bars"] == {"3/4": 4 + 2}
    assert summary["skip_groups"] == {
        "not a readable MIDI file": 2,
        "no 4/4 passage": 1,
        "drums only": 1,
        "empty file": 1,
    }
    assert sorted(summary["files_per_split"]) == [1, 1, 2]

    data = np.load(out)
    assert {"tokens", "attributes", "tune", "split", "vocab"} <= set(data.files)
    vocab = Vocabulary.from_tokens(data["vocab"])
    assert data["tokens"].shape[1] == 24 and len(data["tokens"]) == summary["rows"]
    np.testing.assert_allclose(
        data["attributes"], compute_attributes(data["tokens"].astype(np.int64), vocab), atol=1e-6
    )
    # split by file: every row of a file shares its split, each split has a file
    for tune in np.unique(data["tune"]):
        assert len(np.unique(data["split"][data["tune"] == tune])) == 1
    assert set(np.unique(data["split"])) == {0, 1, 2}
    # transposition augmentation: each file's bars in several keys, the original among them
    assert (data["transpose"] == 0).sum() == summary["bars"]
    assert summary["rows"] > 5 * summary["bars"]


def test_track_and_channel_choose_the_line(tmp_path: Path) -> None:
    lead = melody(32, 60)
    piano = [(p + 12, s, e) for p, s, e in melody(32, 64)]
    for i in range(3):
        write(
            tmp_path / f"band{i}.mid",
            track([], meters=[(0, 4, 4)]),
            track(lead, channel=1, name="Lead"),
            track(piano, channel=0, name="Piano"),
        )

    def top_pitch(config: MidiDatasetConfig) -> int:
        arrays, _ = build_midi_dataset([tmp_path], config)
        vocab = Vocabulary.from_tokens(arrays["vocab"])
        bars = arrays["tokens"][arrays["transpose"] == 0].astype(np.int64)
        return int(vocab.pitch_table[bars].max())

    assert top_pitch(MidiDatasetConfig()) == 64 + 12 + 7  # highest voice of all channels: the piano
    assert top_pitch(MidiDatasetConfig(track="lead")) == 60 + 7
    assert top_pitch(MidiDatasetConfig(track="2")) == 60 + 7  # 1-based index
    assert top_pitch(MidiDatasetConfig(channel=2)) == 60 + 7
    with pytest.raises(DatasetError, match="0 usable MIDI files"):
        build_midi_dataset([tmp_path], MidiDatasetConfig(channel=5))


def test_too_few_files_to_split(tmp_path: Path) -> None:
    four_four_song(tmp_path / "a.mid", bars=4)
    four_four_song(tmp_path / "b.mid", bars=4)
    with pytest.raises(DatasetError, match=r"2 usable MIDI files: the split is by file and needs at least 3"):
        build_midi_dataset([tmp_path])
    with pytest.raises(DatasetError, match="no such file or folder"):
        build_midi_dataset([tmp_path / "missing"])
