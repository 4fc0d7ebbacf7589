"""``arvae-midi fit`` end to end with a tiny budget: the model it writes loads in ``vary``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from tests.train.midi_fixtures import four_four_song

pytest.importorskip("onnx")

runner = CliRunner()
#: A tiny budget; the start model's calibration and the export's on 32 bars keep it quick.
FIT = ["fit", "--minutes", "0.05", "--calibration-bars", "32", "--figure-bars", "4", "--no-progress"]


def test_fit_writes_a_model_vary_loads(tmp_path: Path) -> None:
    songs = tmp_path / "songs"
    songs.mkdir()
    for i in range(5):
        four_four_song(songs / f"s{i}.mid", bars=4, base=60 + i, seed=i)
    # A tiny start model (the tiny preset on the same files) keeps tracing and calibration quick.
    from arvae_midi.train.midi_dataset import save_midi_dataset
    from arvae_midi.train.recipe import load_recipe
    from arvae_midi.train.trainer import train

    save_midi_dataset([songs], tmp_path / "start.npz")
    train(
        load_recipe("tiny").replace(data=str(tmp_path / "start.npz"), max_train_batches=2, threads=1),
        tmp_path / "start",
    )

    out = tmp_path / "models" / "mine.onnx"
    result = runner.invoke(
        app,
        FIT + ["--out", str(out), "--init", str(tmp_path / "start")] + [str(songs)],
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    run_dir = tmp_path / "models" / "runs" / "mine"  # runs/ next to the output file
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "data.npz").is_file()
    assert f"arvae-midi serve --model {out}" in result.output
    for figure in ("reconstruction accuracy", "knob Spearman: contour"):
        assert figure in result.output
    report = json.loads((run_dir / "fit.json").read_text())
    assert report["steps"] >= 1 and 0.0 <= report["after"]["reconstruction"] <= 1.0
    assert set(report["after"]["spearman"]) == {"rhythmic_complexity", "note_density", "pitch_range", "contour"}

    varied = tmp_path / "varied.mid"
    result = runner.invoke(
        app, ["vary", str(songs / "s0.mid"), "--out", str(varied), "--model", str(out), "--set", "note_density=127",
              "--json"],
    )
    assert result.exit_code == 0, result.output
    # One row per input bar. The tiny model trains for a wall-clock budget, so how many steps it
    # got (and whether its variations hold notes at all) depends on the machine: count rows only.
    assert len(json.loads(result.output)["bars"]) == 4 and varied.is_file()

    # a second fit next to the same output gets its own run folder; a too small folder is refused
    (songs / "s3.mid").unlink()
    (songs / "s4.mid").unlink()
    (songs / "s2.mid").write_bytes(b"")
    result = runner.invoke(
        app,
        FIT + ["--out", str(out), "--init", str(tmp_path / "start")] + [str(songs)],
    )
    assert result.exit_code == 1
    assert "error: 2 usable MIDI files: the split is by file and needs at least 3" in result.output
    assert (tmp_path / "models" / "runs" / "mine-2").is_dir()


def test_report_warns_when_fine_tuning_made_the_model_worse(tmp_path: Path) -> None:
    from arvae_midi.engine.figures import ModelFigures
    from arvae_midi.train.fit import FitReport
    from arvae_midi.train.midi_dataset import MidiDatasetSummary

    def report(before: ModelFigures, after: ModelFigures) -> FitReport:
        return FitReport(tmp_path / "m.onnx", tmp_path, MidiDatasetSummary(), before, after, 10, 1.0, 2.0)

    start = ModelFigures(75, 0.999, {"pitch_range": 0.92, "contour": 0.925})
    assert report(start, ModelFigures(75, 0.999, {"pitch_range": 0.90, "contour": 0.93})).warnings() == []
    worse = report(start, ModelFigures(75, 0.997, {"pitch_range": 0.706, "contour": 0.915})).warnings()
    assert len(worse) == 2
    assert "99.7% vs 99.9%" in worse[0] and "the shipped default" in worse[0]
    assert "pitch_range knob" in worse[1] and "0.920 -> 0.706" in worse[1]
