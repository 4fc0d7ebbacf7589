"""evaluate_run and the ``evaluate`` command on tiny untrained runs written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary
from arvae_midi.errors import ConfigError, DatasetError, ModelFileError
from arvae_midi.train.build import build_model
from arvae_midi.train.checkpoint import run_info, save_run
from arvae_midi.train.data import DMELODIES_FACTOR_NAMES
from arvae_midi.train.dmelodies import generate_dmelodies
from arvae_midi.train.evaluate import SUMMARY_KEYS, EvalConfig, evaluate_run
from arvae_midi.train.models import ModelConfig
from arvae_midi.train.recipe import TrainConfig
from arvae_midi.train.run import read_eval


def random_measures(n: int, vocab: Vocabulary, rng: np.random.Generator) -> np.ndarray:
    """(n, 24) plausible bars: onsets on a random subset of ticks, held otherwise."""
    tokens = np.full((n, 24), HOLD_ID, dtype=np.int64)
    onset = rng.random((n, 24)) < rng.uniform(0.1, 0.6, size=(n, 1))
    onset[:, 0] = True
    pitch = rng.integers(REST_ID, len(vocab), size=(n, 24))
    tokens[onset] = pitch[onset]
    return tokens


def make_tiny_run(root: Path, kind: str = "measure", n: int = 240, seed: int = 0, arch: str = "rnn") -> Path:
    """An untrained tiny model saved as a run folder next to its dataset; returns RUN_DIR."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"{kind}.npz"
    if kind == "measure":
        vocab = Vocabulary()
        tokens = random_measures(n, vocab, rng)
        split = np.repeat(np.array([0, 1, 2], dtype=np.int64), [n // 2, n // 4, n - n // 2 - n // 4])
        np.savez(data, tokens=tokens, attributes=compute_attributes(tokens, vocab), split=split,
                 vocab=np.array(vocab.tokens))  # fmt: skip
        labels, model_cfg = list(ATTRIBUTE_NAMES), ModelConfig(vocab_size=len(vocab))
        regularized = labels
    else:
        vocab = Vocabulary(60, 109)
        tokens, factors = generate_dmelodies(rng.choice(1_354_752, size=n, replace=False))
        np.savez(data, tokens=tokens, factors=factors, vocab=np.array(vocab.tokens))
        labels = list(DMELODIES_FACTOR_NAMES)
        model_cfg = ModelConfig(arch=arch, vocab_size=len(vocab), num_beats=2, ticks_per_beat=8)
        regularized = labels[:2]
    small = dict(embed_dim=4, enc_hidden=16, head_hidden=16, latent_dim=8, dec_hidden=16)
    if arch == "cnn":
        small = dict(embed_dim=4, head_hidden=16, latent_dim=8)
    model_cfg = ModelConfig(**{**model_cfg.__dict__, **small})
    config = TrainConfig(name="tiny", data=str(data), objective="arvae", model=model_cfg, regularized=regularized,
                         seed=seed)  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(model_cfg).eval()
    run_dir = root / "run"
    save_run(run_dir, model, run_info(config, list(vocab.tokens), labels, {k: i for i, k in enumerate(regularized)},
                                      kind))  # fmt: skip
    return run_dir



@pytest.fixture
def measure_run(tmp_path: Path) -> Path:
    return make_tiny_run(tmp_path / "m")


def test_evaluate_measure_run(measure_run: Path) -> None:
    result = evaluate_run(measure_run)
    assert set(SUMMARY_KEYS) <= set(result["summary"])
    assert result["n_items"] == 60 and result["split"] == "test"
    for rep in ("sampled", "mean"):
        m = result["metrics"][rep]["ar_vae"]
        assert set(m) == {"interpretability", "mig", "modularity", "sap", "scc"}
        assert set(m["scc"]["per_attribute"]) == set(ATTRIBUTE_NAMES)
        assert all(0 <= d < 8 for d in m["interpretability"]["dims"].values())
        assert "dmelodies" not in result["metrics"][rep]
        assert 0.0 <= result["reconstruction_accuracy"][rep] <= 1.0
    on_disk = read_eval(measure_run)
    assert on_disk is not None and on_disk["summary"] == pytest.approx(result["summary"])
    # Seeded end to end: a second evaluation gives the same numbers.
    again = evaluate_run(measure_run, write=False)
    assert again["summary"] == result["summary"]


def test_evaluate_dmelodies_run_reports_both_definitions(tmp_path: Path) -> None:
    run_dir = make_tiny_run(tmp_path / "d", kind="dmelodies", n=300, arch="cnn")
    result = evaluate_run(run_dir, split="val", max_items=50)
    assert result["n_items"] == 50 and result["data_kind"] == "dmelodies"
    dm = result["metrics"]["sampled"]["dmelodies"]
    assert {"mig", "sap", "modularity", "explicitness"} <= set(dm)
    assert set(dm["mig"]["per_attribute"]) == set(DMELODIES_FACTOR_NAMES)
    assert set(result["metrics"]["mean"]["ar_vae"]["mig"]["per_attribute"]) == set(DMELODIES_FACTOR_NAMES)


def test_evaluate_errors(tmp_path: Path, measure_run: Path) -> None:
    with pytest.raises(ModelFileError):
        evaluate_run(tmp_path / "nothing")
    (measure_run.parent / "measure.npz").rename(tmp_path / "moved.npz")
    with pytest.raises(DatasetError, match="no such dataset"):
        evaluate_run(measure_run)
    # An explicit data path works.
    assert evaluate_run(measure_run, data=tmp_path / "moved.npz", write=False)["n_items"] == 60
    with pytest.raises(ConfigError, match="split"):
        EvalConfig(split="holdout")


def test_evaluate_command(measure_run: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(measure_run), "--json", "--max-items", "40"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["n_items"] == 40 and set(SUMMARY_KEYS) <= set(data["summary"])
    res = runner.invoke(app, ["evaluate", str(measure_run), "--split", "val"])
    assert res.exit_code == 0, res.output
    assert "Interpretability" in res.stdout and "Recon. accuracy" in res.stdout


@pytest.mark.slow
def test_cli_train_evaluate_plot(tmp_path: Path) -> None:
    """The whole chain on a tiny dataset: train 1 epoch -> evaluate -> plot."""
    from tests.synthetic import write_synthetic_npz

    data = write_synthetic_npz(tmp_path / "synth.npz", "measure", n=300, seed=0)
    run_dir = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--preset", "tiny", "--data", str(data), "--out", str(run_dir), "--epochs", "1",
                              "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["objective"] == "arvae" and result["reg_dims"] == {n: i for i, n in enumerate(ATTRIBUTE_NAMES)}
    assert all(isinstance(result["summary"][k], float) for k in SUMMARY_KEYS)
    res = runner.invoke(app, ["plot", str(run_dir), "--grid", "4", "--label", "pitch_range"])
    assert res.exit_code == 0, res.output
    printed = [Path(line) for line in res.stdout.splitlines() if line.strip()]
    assert {p.name for p in printed} >= {"surface_pitch_range.png", "loss_curves.png"}
    assert all(p.is_file() and p.stat().st_size > 1000 for p in printed)
