"""The one variation policy: `vary` and `serve` agree, knob ranges from the data, recalibration."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.midi import bars_to_notes, read_midi, write_midi
from arvae_midi.engine.calibration import knob_table, knob_targets, target_ranges
from arvae_midi.engine.engine import Engine
from arvae_midi.engine.metadata import Calibration
from arvae_midi.midi_bridge.config import BridgeConfig
from tests.fixtures.make_tiny_model import synthetic_bars
from tests.midi_bridge.harness import Sim, cc, note

runner = CliRunner()
P = 60.0 / (120 * 24)  # one pulse at 120 bpm, seconds


def test_vary_and_serve_give_identical_variations(tmp_path: Path, tiny_path: Path, tiny_engine: Engine,
                                                  heldout_bars: np.ndarray) -> None:  # fmt: skip
    """The same bars, knobs and seed through `arvae-midi vary` and through the bridge (key lock with
    the recent bars, closed loop, all four knobs set): the same variations."""
    vocab = tiny_engine.meta.vocab
    bars = heldout_bars[[3, 11, 17, 29]]
    src = tmp_path / "in.mid"
    write_midi(src, bars_to_notes(bars, vocab, [90] * len(bars)), bpm=120.0)
    captured = read_midi(src).bar_tokens(vocab)
    knobs = {"rhythmic_complexity": 30, "note_density": 100, "pitch_range": 64, "contour": 5}
    out = tmp_path / "out.mid"
    sets = [x for name, value in knobs.items() for x in ("--set", f"{name}={value}")]
    res = runner.invoke(app, ["vary", str(src), "--out", str(out), "--model", str(tiny_path), "--device", "cpu",
                              "--seed", "7", *sets])  # fmt: skip
    assert res.exit_code == 0, res.output
    offline = read_midi(out).bar_tokens(vocab)
    assert len(offline) >= 3

    sim = Sim(BridgeConfig(seed=7), engine=tiny_engine)
    sim.clock_run(0.0, 120, 96 * (len(bars) + 1))
    for i, name in enumerate(ATTRIBUTE_NAMES):  # CC 20..23 as in the default CC map
        sim.at(0.0, cc(20 + i, knobs[name]))
    for n in bars_to_notes(captured, vocab):
        sim.at(n.start * 24 * P, note("on", n.pitch, n.velocity))
        sim.at(n.end * 24 * P - 1e-9, note("off", n.pitch))
    sim.run_until(96 * (len(bars) + 1) * P - 1e-6)
    sim.shutdown()
    played = {e["bar"]: e["tokens"] for e in sim.events if e["event"] == "bar" and "tokens" in e}
    assert sorted(played) == list(range(1, len(bars) + 1))
    live = np.asarray([played[b] for b in sorted(played)])
    np.testing.assert_array_equal(live[: len(offline)], offline)
    # The log and the status line show each knob's target next to the achieved value.
    bar = next(e for e in sim.events if e["event"] == "bar" and "tokens" in e)
    assert bar["targets"] == {a: round(tiny_engine.knob_to_attribute(a, v), 4) for a, v in knobs.items()}
    got = tiny_engine.attributes(np.asarray(bar["tokens"]))[0]
    assert bar["achieved"] == {a: round(float(got[ATTRIBUTE_NAMES.index(a)]), 4) for a in knobs}
    assert sim.core.status.knob_targets == {a: round(tiny_engine.knob_to_attribute(a, v), 4) for a, v in knobs.items()}


def test_knob_range_spans_the_data_percentiles_monotonically(tiny_engine: Engine) -> None:
    train = synthetic_bars(3000, seed=5)
    attrs = compute_attributes(train, tiny_engine.meta.vocab)
    ranges = target_ranges(attrs)
    for column, name in enumerate(ATTRIBUTE_NAMES):
        lo, hi = np.percentile(attrs[:, column].astype(np.float64), [2, 98])
        assert ranges[name] == pytest.approx((lo, hi))
        cal = tiny_engine.meta.calibration[name]
        with_range = Calibration(cal.dim, cal.latent, cal.median, cal.q25, cal.q75, cal.bars, list(ranges[name]))
        targets = knob_targets(with_range)
        assert targets[0] == pytest.approx(lo, abs=1e-6) and targets[-1] == pytest.approx(hi, abs=1e-6)
        assert np.all(np.diff(targets) >= 0)
        table = knob_table(with_range)
        slope = np.sign(np.polyfit(cal.latent, cal.median, 1)[0])
        assert np.all(np.diff(table) * slope >= 0)  # the latent moves one way as the knob turns


def _dataset(path: Path, vocab_tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    train, held = synthetic_bars(2000, seed=21), synthetic_bars(200, seed=22)
    tokens = np.concatenate([train, held])
    split = np.concatenate([np.zeros(len(train), np.int64), np.ones(len(held), np.int64)])
    np.savez(path, tokens=tokens, split=split, vocab=np.asarray(vocab_tokens))
    return train, held


def test_calibrate_command_rewrites_the_knob_range_in_place(tmp_path: Path, tiny_path: Path) -> None:
    pytest.importorskip("onnx")
    model = tmp_path / "m.onnx"
    shutil.copy(tiny_path, model)
    before = Engine.load(model, device="cpu")
    data = tmp_path / "d.npz"
    train, _ = _dataset(data, list(before.meta.vocab.tokens))
    res = runner.invoke(app, ["calibrate", str(model), "--data", str(data), "--calibration-bars", "64",
                              "--points", "9", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report: dict[str, Any] = json.loads(res.output)
    after = Engine.load(model, device="cpu")
    attrs = compute_attributes(train, after.meta.vocab).astype(np.float64)
    for column, name in enumerate(ATTRIBUTE_NAMES):
        lo, hi = np.percentile(attrs[:, column], [2, 98])
        assert after.knob_to_attribute(name, 0) == pytest.approx(lo, abs=1e-6)
        assert after.knob_to_attribute(name, 127) == pytest.approx(hi, abs=1e-6)
        assert report["knob_ranges"][name] == pytest.approx([lo, hi], abs=1e-4)
        targets = [after.knob_to_attribute(name, k) for k in range(128)]
        assert np.all(np.diff(targets) >= 0)
    assert after.meta.data["knob_range_source"]["bars"] == len(train)
    # Only the metadata's calibration changed: the graph gives the same encodings.
    bars = synthetic_bars(8, seed=3)
    np.testing.assert_array_equal(before.encode(bars)[0], after.encode(bars)[0])


def test_calibrate_never_loses_the_file_on_error(tmp_path: Path, tiny_path: Path) -> None:
    pytest.importorskip("onnx")
    model = tmp_path / "m.onnx"
    shutil.copy(tiny_path, model)
    original = model.read_bytes()
    bad = tmp_path / "bad.npz"
    np.savez(bad, tokens=np.zeros((3, 24), np.int64), split=np.ones(3, np.int64), vocab=np.asarray(["x", "y"]))
    for data in (bad, tmp_path / "missing.npz"):
        res = runner.invoke(app, ["calibrate", str(model), "--data", str(data)])
        assert res.exit_code == 1 and res.output.startswith("error: "), res.output
        assert model.read_bytes() == original
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("m.")) == ["m.onnx"]


def test_an_unchanged_bar_is_encoded_once(tiny_path: Path, heldout_bars: np.ndarray) -> None:
    engine = Engine.load(tiny_path, device="cpu")
    runs: list[int] = []
    session = engine._session

    class Counting:
        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
            if len(feeds["tokens"]):
                runs.append(len(feeds["tokens"]))
            return session.run(names, feeds)

    engine._session = Counting()  # type: ignore[assignment]
    for knob in (0, 40, 90, 127):
        engine.vary(heldout_bars[0], {"contour": knob})
    engine.vary(heldout_bars[1], {"contour": 3})
    assert runs == [1, 1]


def test_curve_inverse_continues_past_the_ends_within_bounds(tiny_engine: Engine) -> None:
    from arvae_midi.engine.calibration import CurveInverse, latent_for

    for name in ATTRIBUTE_NAMES:
        cal = tiny_engine.meta.calibration[name]
        clipped, extended = CurveInverse(cal), CurveInverse(cal, extrapolate=0.3)
        span = cal.latent[-1] - cal.latent[0]
        lo, hi = float(clipped.abscissa[0]), float(clipped.abscissa[-1])
        inside = np.linspace(lo, hi, 7)
        np.testing.assert_allclose(extended(inside), latent_for(cal, inside))
        far = np.asarray([lo - 10.0, hi + 10.0])
        np.testing.assert_allclose(np.abs(extended(far) - clipped(far)), [0.3 * span, 0.3 * span], rtol=1e-9)
        values = extended(np.linspace(lo - 0.1, hi + 0.1, 50))
        slope = np.sign(np.polyfit(cal.latent, cal.median, 1)[0])
        assert np.all(np.diff(values) * slope >= -1e-12)  # still monotone


def test_step_grows_where_the_decoder_follows_a_dim_weakly() -> None:
    from arvae_midi.engine.policy import MAX_STEP_SCALE, step_scale

    assert step_scale(0.33, 0.42) == 1.0  # the median bar covers the knob's range: step unchanged
    assert step_scale(0.54, 0.27) == pytest.approx(2.0)
    assert step_scale(0.54, 0.115) == MAX_STEP_SCALE  # capped
    assert step_scale(0.54, 0.0) == 1.0  # a flat curve: no information, no change
