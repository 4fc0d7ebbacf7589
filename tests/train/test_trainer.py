"""Trainer, checkpoints and the ``train`` command on tiny synthetic datasets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.errors import ConfigError, ModelFileError
from arvae_midi.train.build import build_model
from arvae_midi.train.checkpoint import load_run, run_info, save_run
from arvae_midi.train.recipe import TrainConfig, load_recipe
from arvae_midi.train.trainer import kl_schedule, schedule_values, train
from tests.synthetic import write_synthetic_npz

# Tiny dMelodies model: 16 tokens = 2 bars x 8 ticks, widths of a few units.
DM_RNN = {"num_beats": 2, "ticks_per_beat": 8, "embed_dim": 4, "enc_hidden": 12, "enc_layers": 1,
          "head_hidden": 12, "latent_dim": 10, "dec_hidden": 12, "dec_layers": 1}  # fmt: skip
DM_CNN = {**DM_RNN, "arch": "cnn", "cnn_channels": (4, 4, 6, 8)}


@pytest.fixture(scope="module")
def measure_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "measure.npz", "measure", n=240, seed=0)


@pytest.fixture(scope="module")
def dm_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "dm.npz", "dmelodies", n=240, seed=0)



def tiny(data: Path, **changes: object) -> TrainConfig:
    return load_recipe("tiny").replace(data=str(data), **changes)


def dm(data: Path, objective: str, arch: Mapping[str, object], **changes: object) -> TrainConfig:
    cfg = tiny(data, objective=objective, batch_size=32)
    return cfg.replace(model=replace(cfg.model, **arch), **changes)  # type: ignore[arg-type]


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("arvae", lambda m, d: tiny(m)),
        ("betavae-stepwise-tf", lambda m, d: tiny(m, objective="betavae", fast_path=False, teacher_forcing=1.0)),
        ("betavae-dm-rnn", lambda m, d: dm(d, "betavae", DM_RNN, kl_threshold=50.0, ramp_iterations=100)),
        ("annealed-dm-cnn", lambda m, d: dm(d, "annealed", DM_CNN, capacity=50.0, ramp_iterations=100)),
        ("factorvae-dm-rnn", lambda m, d: dm(d, "factorvae", DM_RNN, capacity=50.0)),
        ("factorvae-dm-cnn", lambda m, d: dm(d, "factorvae", DM_CNN, capacity=50.0)),
        ("arvae-dm-factors", lambda m, d: dm(d, "arvae", DM_RNN, regularized=["tonic", "octave", "rhythm_bar1"])),
    ],
)
def test_one_epoch_of_every_objective(name: str, make, measure_npz: Path, dm_npz: Path, tmp_path: Path) -> None:
    cfg = make(measure_npz, dm_npz)
    summary = train(cfg, tmp_path / name)
    assert (summary.epochs, summary.step) == (1, 168 // 32)
    (line,) = read_metrics(tmp_path / name)
    assert line["epoch"] == 1 and line["step"] == summary.step
    expected = {"train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "val_accuracy"}
    expected |= {"train_ar", "val_ar"} if cfg.objective == "arvae" else set()
    expected |= {"train_tc", "train_disc"} if cfg.objective == "factorvae" else set()
    assert expected <= set(line)
    assert all(torch.isfinite(torch.tensor(line[k])) for k in expected)
    assert 0.0 <= line["val_accuracy"] <= 1.0
    run = load_run(tmp_path / name)
    assert run.config.objective == cfg.objective
    assert run.model.config.vocab_size == len(run.vocab)
    assert run.reg_dims == {n: i for i, n in enumerate(cfg.reg_names)}
    info = json.loads((tmp_path / name / "config.json").read_text())
    assert info["training"]["epoch"] == 1 and info["data_path"] == cfg.data


def test_training_lowers_the_loss(measure_npz: Path, tmp_path: Path) -> None:
    lines = read_metrics(train(tiny(measure_npz, epochs=3, lr=3e-3), tmp_path / "run").run_dir)
    assert lines[-1]["train_recon"] < lines[0]["train_recon"]
    assert lines[-1]["val_accuracy"] > lines[0]["val_accuracy"]


def test_final_weights_reload_to_identical_outputs(measure_npz: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny(measure_npz)
    model = build_model(replace(cfg.model, vocab_size=32)).eval()
    info = run_info(cfg, [str(t) for t in range(32)], list(ATTRIBUTE_NAMES), {"contour": 0}, "measure")
    save_run(tmp_path / "run", model, info)
    run = load_run(tmp_path / "run")
    assert not run.model.training
    tokens = torch.randint(0, 32, (5, 24))
    with torch.no_grad():
        mu_a, logvar_a = model.encode(tokens)
        mu_b, logvar_b = run.model.encode(tokens)
        assert torch.equal(mu_a, mu_b) and torch.equal(logvar_a, logvar_b)
        assert torch.equal(model.generate(mu_a), run.model.generate(mu_b))
    assert run.reg_dims == {"contour": 0} and run.label_names == list(ATTRIBUTE_NAMES)
    meta = json.loads(__import__("safetensors").safe_open(str(run.weights), "pt").metadata()["config"])
    assert meta["recipe"]["name"] == "tiny"


def test_lr_schedule_steps_by_epoch_and_survives_a_resume(measure_npz: Path, tmp_path: Path) -> None:
    cfg = tiny(measure_npz, epochs=3, lr=3e-3, lr_decay_epochs=[1, 2], lr_decay=0.5)
    assert [cfg.lr_at(e) for e in range(3)] == [3e-3, 1.5e-3, 0.75e-3]
    train(cfg, tmp_path / "straight")
    train(cfg.replace(epochs=1), tmp_path / "resumed")
    train(cfg, tmp_path / "resumed", resume=True)  # the checkpoint's optimizer still holds lr 3e-3
    train(cfg.replace(lr_decay_epochs=[]), tmp_path / "constant")
    a, b, c = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("straight", "resumed", "constant"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(ConfigError, match="lr_decay_epochs"):
        cfg.replace(lr_decay_epochs=[2, 1])
    with pytest.raises(ConfigError, match="lr_decay must"):
        cfg.replace(lr_decay=0.0)


@pytest.mark.parametrize("objective", ["arvae", "factorvae"])
def test_resume_continues_bit_exactly(objective: str, measure_npz: Path, dm_npz: Path, tmp_path: Path) -> None:
    cfg = tiny(measure_npz, epochs=2) if objective == "arvae" else dm(dm_npz, "factorvae", DM_RNN, epochs=2)
    train(cfg, tmp_path / "straight")
    train(cfg.replace(epochs=1), tmp_path / "resumed")
    summary = train(cfg, tmp_path / "resumed", resume=True)
    assert (summary.epochs, summary.step) == (2, 2 * (168 // 32))
    for name in ("model.safetensors", "checkpoints/disc.safetensors" if objective == "factorvae" else None):
        if name is not None:
            a = load_file(str(tmp_path / "straight" / name))
            b = load_file(str(tmp_path / "resumed" / name))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["epoch"] for m in read_metrics(tmp_path / "resumed")] == [1, 2]
    assert read_metrics(tmp_path / "resumed")[1]["train_loss"] == read_metrics(tmp_path / "straight")[1]["train_loss"]


def test_existing_run_is_not_overwritten(measure_npz: Path, tmp_path: Path) -> None:
    train(tiny(measure_npz, max_train_batches=1), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train(tiny(measure_npz), tmp_path / "run")


def test_model_and_data_must_agree(dm_npz: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sequences of 16 tokens"):
        train(tiny(dm_npz), tmp_path / "run")


def test_kl_schedule_of_each_objective() -> None:
    kl = torch.tensor([60.0, 80.0])  # per-sample KL, mean 70
    beta = kl_schedule(TrainConfig(objective="betavae", beta=4.0, kl_threshold=50.0, warmup_epochs=2,
                                   ramp_iterations=100))
    assert schedule_values(beta, 1, 0) == (0.0, 0.0)
    assert schedule_values(beta, 2, 50)[0] == pytest.approx(5**0.5 - 1)
    assert float(beta.loss(kl, 9, 10_000)) == pytest.approx(4.0 * 70 - 50)
    plain = kl_schedule(TrainConfig(objective="arvae", beta=0.001))
    assert float(plain.loss(kl, 0, 0)) == pytest.approx(0.07)
    annealed = kl_schedule(TrainConfig(objective="annealed", beta=1.0, capacity=50.0, warmup_epochs=1,
                                       ramp_iterations=10))
    assert schedule_values(annealed, 0, 0) == (0.0, 0.0)
    assert schedule_values(annealed, 1, 5) == pytest.approx((1.0, 51**0.5 - 1))
    factor = kl_schedule(TrainConfig(objective="factorvae", beta=1.0, capacity=50.0))
    assert float(factor.loss(torch.tensor([40.0]), 0, 0)) == pytest.approx(10.0)


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such run folder"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="not a run folder"):
        load_run(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"garbage")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_run(broken)


def test_cli_train_then_resume(measure_npz: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-run"
    args = ["train", "--preset", "tiny", "--data", str(measure_npz), "--out", str(out), "--max-batches", "2",
            "--no-progress", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"in {out}" in result.output and "done: 1 epochs, 2 steps" in result.output
    assert (out / "model.safetensors").is_file() and (out / "checkpoints" / "last.json").is_file()
    result = runner.invoke(app, ["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "done: 2 epochs, 4 steps" in result.output
    assert load_run(out).config.seed == 3
    result = runner.invoke(app, ["train", "--list"])
    assert "folk-arvae" in result.output.split()
