"""``arvae-midi export``, ``info`` and ``vary`` end to end through the typer app."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.commands.vary import parse_knob_settings
from arvae_midi.core.midi import bars_to_notes, read_midi, write_midi
from arvae_midi.engine.engine import Engine
from arvae_midi.errors import ConfigError
from tests.export.conftest import make_run

runner = CliRunner()


def test_export_and_info(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, eval_summary={"mig": 0.5, "sap": 0.25})
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", str(run_dir), "--out", str(out), "--calibration-bars", "16",
                              "--calibration-points", "3", "--parity-bars", "30", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert out.is_file() and f"wrote {out}" in res.output and "parity on 30 held-out bars" in res.output

    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0, res.output
    for text in ("tiny-test", "latent: 8 dims", "mig", "0.500", "calibration", "note_density"):
        assert text in res.output
    res = runner.invoke(app, ["info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["path"] == str(out) and data["bytes"] == out.stat().st_size
    assert data["metadata"]["format_version"] == 1 and data["metadata"]["metrics"]["summary"]["sap"] == 0.25
    assert len(data["metadata"]["calibration"]["contour"]["latent"]) == 3


def test_export_and_info_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(tmp_path / "none"), "--out", str(tmp_path / "x.onnx"), "--no-progress"])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "no such run folder" in res.output
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    res = runner.invoke(app, ["info", str(tmp_path / "bad.onnx")])
    assert res.exit_code == 1 and "not a readable ONNX model" in res.output
    assert len(res.output.strip().splitlines()) == 1


def _melody(path: Path, bars: np.ndarray, engine: Engine, bpm: float) -> Path:
    write_midi(path, bars_to_notes(bars, engine.meta.vocab, [70, 100]), bpm=bpm)
    return path


def test_vary_writes_variations_in_order(tmp_path: Path, tiny_path: Path, tiny_engine: Engine,
                                         heldout_bars: np.ndarray) -> None:  # fmt: skip
    bars = heldout_bars[[0, 1]]
    src = _melody(tmp_path / "in.mid", bars, tiny_engine, bpm=100.0)
    out = tmp_path / "out.mid"
    res = runner.invoke(app, ["vary", str(src), "--out", str(out), "--model", str(tiny_path), "--set",
                              "note_density=127", "--set", "contour=0", "--amount", "0.4", "--variations", "3",
                              "--seed", "5", "--device", "cpu", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    song_in = read_midi(src)
    tokens_in = song_in.bar_tokens(tiny_engine.meta.vocab)
    expected = np.concatenate([  # the key lock reads the bar and the ones before it, as serve's does
        tiny_engine.vary(bar, {"note_density": 127, "contour": 0}, amount=0.4, seed=5 + i, n=3, key_lock=True,
                         context=tokens_in[max(0, i - 3) : i])
        for i, bar in enumerate(tokens_in)
    ])  # fmt: skip
    song_out = read_midi(out)
    assert song_out.bpm == pytest.approx(100.0)
    written = song_out.bar_tokens(tiny_engine.meta.vocab)
    # Trailing silent variations leave no notes, hence no bars, in the file.
    assert len(written) <= 6 and np.array_equal(written, expected[: len(written)])
    assert not expected[len(written) :].any() or (expected[len(written) :] <= 1).all()
    assert [(r["bar"], r["variation"]) for r in report["bars"]] == [(b, k) for b in range(2) for k in range(3)]
    attrs_in = tiny_engine.attributes(bars)
    assert report["bars"][3]["input"]["note_density"] == pytest.approx(float(attrs_in[1, 1]), abs=1e-4)
    attrs_out = tiny_engine.attributes(expected)
    assert report["bars"][4]["output"]["contour"] == pytest.approx(float(attrs_out[4, 3]), abs=1e-4)

    res = runner.invoke(app, ["vary", str(src), "--out", str(out), "--model", str(tiny_path)])
    assert res.exit_code == 0, res.output
    assert "in→out" in res.output and "2 bars x 1" in res.output


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("loudness=3", "unknown attribute 'loudness'; this model controls: rhythmic_complexity, note_density"),
        ("note_density=abc", "'abc' is not an integer"),
        ("note_density=128", "128 is outside 0..127"),
        ("note_density=-1", "-1 is outside 0..127"),
        ("note_density", "expected ATTRIBUTE=VALUE"),
        ("=5", "expected ATTRIBUTE=VALUE"),
    ],
)
def test_vary_bad_set(tmp_path: Path, tiny_path: Path, tiny_engine: Engine, heldout_bars: np.ndarray,
                      setting: str, message: str) -> None:  # fmt: skip
    src = _melody(tmp_path / "in.mid", heldout_bars[:2], tiny_engine, bpm=120.0)
    res = runner.invoke(app, ["vary", str(src), "--out", str(tmp_path / "o.mid"), "--model", str(tiny_path),
                              "--set", setting])  # fmt: skip
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.mid").exists()


def test_vary_rejects_other_meters(tmp_path: Path, tiny_path: Path) -> None:
    mid = mido.MidiFile()
    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=3, denominator=4),
                            mido.Message("note_on", note=60, velocity=80), mido.Message("note_off", note=60, time=480)])
    mid.tracks.append(track)
    mid.save(str(tmp_path / "waltz.mid"))
    res = runner.invoke(app, ["vary", str(tmp_path / "waltz.mid"), "--out", str(tmp_path / "o.mid"),
                              "--model", str(tiny_path)])  # fmt: skip
    assert res.exit_code == 1 and "only 4/4 is supported" in res.output


def test_parse_knob_settings() -> None:
    assert parse_knob_settings([" note_density = 7", "contour=127"]) == {"note_density": 7, "contour": 127}
    with pytest.raises(ConfigError, match="given twice"):
        parse_knob_settings(["contour=1", "contour=2"])
