"""Plots: PNGs from arrays and a toy decoder, and ``plot`` / plot_run on a tiny untrained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import note_density
from arvae_midi.core.tokens import HOLD_ID, Vocabulary
from arvae_midi.errors import ConfigError
from arvae_midi.train import plots
from tests.train.test_evaluate import make_tiny_run, random_measures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def toy_decoder(vocab: Vocabulary) -> plots.DecodeFn:
    """z (B, Z) -> bars whose onset count grows with z[0] (clipped to 1..24) and pitch with z[1]."""

    def decode(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        onsets = np.clip(np.round(12 + 2.3 * z[:, 0]), 1, 24).astype(int)
        pitch = np.clip(np.round(70 + 2 * z[:, 1]), vocab.low, vocab.high).astype(int)
        out = np.full((len(z), 24), HOLD_ID, dtype=np.int64)
        for i, (k, p) in enumerate(zip(onsets, pitch, strict=True)):
            out[i, np.linspace(0, 23, k).astype(int)] = vocab.pitch_id(int(p))
        return out

    return decode


def test_piano_roll(tmp_path: Path, vocab: Vocabulary, rng: np.random.Generator) -> None:
    bars = random_measures(3, vocab, rng)
    path = plots.plot_piano_roll(bars, vocab, tmp_path / "roll.png", titles=["a", "b", "c"], values=[0.1, 0.5, 0.9],
                                 value_label="density")  # fmt: skip
    assert _is_png(path)
    # dMelodies bars (16 ticks), vocab as strings, a silent bar.
    d_vocab = Vocabulary(60, 109)
    silent = np.full((2, 16), 1, dtype=np.int64)
    assert _is_png(plots.plot_piano_roll(silent, list(d_vocab.tokens), tmp_path / "d.png"))
    with pytest.raises(ValueError, match="titles"):
        plots.plot_piano_roll(bars, vocab, tmp_path / "x.png", titles=["a"])


def test_attribute_surface_follows_the_decoder(tmp_path: Path, vocab: Vocabulary) -> None:
    decode = toy_decoder(vocab)

    def density(tokens: np.ndarray) -> np.ndarray:
        return note_density(tokens, vocab)

    xs, ys, vals = plots.attribute_surface(decode, density, latent_dim=6, dim_x=0, dim_y=3, grid=9, batch_size=7)
    assert vals.shape == (9, 9) and xs[0] == -5.0 and xs[-1] == 5.0
    # Density depends on z[0] (columns) only, monotonically.
    assert np.all(np.diff(vals, axis=1) >= 0) and np.ptp(vals[:, -1]) == 0 and vals[0, -1] > vals[0, 0]
    assert _is_png(plots.plot_attribute_surface(xs, ys, vals, tmp_path / "s.png", "note_density", 0, 3))
    with pytest.raises(ValueError):
        plots.attribute_surface(decode, density, 6, 2, 2)


def test_traversal(tmp_path: Path, vocab: Vocabulary) -> None:
    decode = toy_decoder(vocab)
    z0 = np.array([0.5, 0.0, 0.0])
    bars = plots.traversal_bars(decode, z0, 0, [-4, -2, 0, 2, 4])
    density = note_density(bars, vocab)
    assert np.all(np.diff(density[[0, 1, 3, 4]]) > 0)
    assert np.array_equal(bars[2], decode(z0[None])[0])  # the middle bar is the plain reconstruction
    path = plots.plot_traversal(decode, lambda t: note_density(t, vocab), z0, 0, vocab, tmp_path / "t.png", "density")
    assert _is_png(path)


def test_loss_curves_and_scatter(tmp_path: Path, rng: np.random.Generator) -> None:
    rows = [
        {"epoch": e, "step": 10 * e, "train_loss": 3.0 / e, "val_loss": 3.2 / e, "train_kl": 0.1 * e,
         "val_accuracy": 0.5 + 0.1 * e, "beta": 0.001, "capacity": 0.0, "seconds": 1.0}
        for e in (1, 2, 3)
    ]  # fmt: skip
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 4, "tr', encoding="utf-8")
    assert len(plots.read_metrics_log(log)) == 3  # the torn last line is skipped
    assert _is_png(plots.plot_loss_curves(plots.read_metrics_log(log), tmp_path / "loss.png"))
    with pytest.raises(ValueError):
        plots.plot_loss_curves([], tmp_path / "none.png")
    z = rng.normal(size=(200, 4))
    assert _is_png(plots.plot_latent_scatter(z, z[:, 0], 0, 1, tmp_path / "sc.png", "a0"))


def test_label_dims_and_free_dim() -> None:
    rng = np.random.default_rng(1)
    labels = rng.uniform(size=(300, 2))
    z = np.c_[rng.normal(size=(300, 2)), labels[:, 1], labels[:, 0]]
    assert plots.label_dims(["a", "b"], {}, z, labels) == {"a": 3, "b": 2}
    assert plots.label_dims(["a", "b"], {"a": 0}, z, labels) == {"a": 0, "b": 2}
    assert plots.free_dim([0, 1, 3], 5) == 2
    assert plots.free_dim([0, 1], 2) == 0


@pytest.mark.slow
def test_plot_run_and_command(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path / "m", n=120)
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e}) + "\n" for e in (1, 2)),
        encoding="utf-8",
    )
    cfg = plots.PlotConfig(grid=6, n_traversals=0, scatter_points=50)
    paths = plots.plot_run(run_dir, config=cfg)
    names = {p.name for p in paths}
    assert {"surface_note_density.png", "latent_pitch_range.png", "loss_curves.png"} <= names
    assert len(paths) == 4 * 2 + 1 and all(_is_png(p) and p.parent == run_dir / "plots" for p in paths)

    res = CliRunner().invoke(app, ["plot", str(run_dir), "--out", str(tmp_path / "png"), "--grid", "4",
                                   "--label", "contour"])  # fmt: skip
    assert res.exit_code == 0, res.output
    printed = [Path(line) for line in res.stdout.splitlines() if line.strip()]
    assert [p.name for p in printed] == ["surface_contour.png", "traversal_contour_0.png", "traversal_contour_1.png",
                                         "latent_contour.png", "loss_curves.png"]  # fmt: skip
    assert all(_is_png(p) and p.parent == tmp_path / "png" for p in printed)
    res = CliRunner().invoke(app, ["plot", str(run_dir), "--label", "tonic"])
    assert isinstance(res.exception, ConfigError) and "unknown label" in str(res.exception)


def test_plot_run_dmelodies(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path / "d", kind="dmelodies", n=200)
    cfg = plots.PlotConfig(grid=4, n_traversals=1, scatter_points=40, labels=("octave", "arp_chord1"))
    paths = plots.plot_run(run_dir, config=cfg)
    assert len(paths) == 2 * 3 and all(_is_png(p) for p in paths)  # no metrics.jsonl: no loss curves
