"""Fine-tuning: the shipped default weights reproduce default.onnx, and ``train --init`` starts from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import DEFAULT_MODEL
from arvae_midi.errors import ConfigError, ModelFileError
from arvae_midi.train import finetune
from arvae_midi.train.build import build_model
from arvae_midi.train.checkpoint import load_run
from tests.fixtures.make_tiny_model import synthetic_bars
from tests.train.midi_fixtures import four_four_song

pytest.importorskip("onnx")

runner = CliRunner()


@pytest.fixture(scope="module")
def midi_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset of five small 4/4 files (measure vocabulary 55..84)."""
    from arvae_midi.train.midi_dataset import save_midi_dataset

    root = tmp_path_factory.mktemp("midi")
    for i in range(5):
        four_four_song(root / f"s{i}.mid", bars=4, base=60 + i, seed=i)
    save_midi_dataset([root], root / "mine.npz")
    return root / "mine.npz"


def test_shipped_weights_reproduce_default_onnx() -> None:
    """The recovered torch weights (bench/recover_default_weights.py) against the shipped file:
    identical greedy tokens with and without key masks, mu within 1e-4 (the exporter's parity)."""
    from arvae_midi.export.parity import check_parity

    recipe, info, weights = finetune.read_init("default")
    model = build_model(recipe.model)
    model.load_state_dict(weights, strict=True)
    model.eval()
    vocab = Vocabulary.from_tokens(info["vocab"])
    d_mu, d_logvar = check_parity(model, DEFAULT_MODEL, synthetic_bars(128, seed=3), vocab, mu_atol=1e-4)
    assert d_mu < 1e-4 and d_logvar < 1e-4
    assert info["reg_dims"] == {"rhythmic_complexity": 0, "note_density": 1, "pitch_range": 2, "contour": 3}


def test_train_init_default_starts_from_the_shipped_weights(midi_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        "--preset",
        "default",
        "--data",
        str(midi_npz),
        "--init",
        "default",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--max-batches",
        "1",
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "from default (lr 0.0003" in result.output  # the finetune recipe's learning rate
    run = load_run(out)
    recipe, _, start = finetune.read_init("default")
    assert run.config.init == "default" and run.config.model == recipe.model
    # one small step away from the start point: close to it, not equal
    diffs = [float((run.model.state_dict()[k] - v).abs().max()) for k, v in start.items()]
    assert 0 < max(diffs) < 0.01

    # a run folder is a start point too (same vocabulary)
    again = tmp_path / "again"
    result = runner.invoke(
        app,
        [
            "train",
            "--preset",
            "tiny",
            "--data",
            str(midi_npz),
            "--init",
            str(out),
            "--out",
            str(again),
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_run(again).config.model == recipe.model  # the init's architecture, not tiny's


def test_missing_init_weights_is_one_clear_error(midi_npz: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(finetune, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    with pytest.raises(ModelFileError, match="--init default needs the shipped model's weights"):
        finetune.read_init("default")
    with pytest.raises(ModelFileError, match="not 'default' and no such run folder"):
        finetune.read_init(str(tmp_path / "nowhere"))


def test_init_vocabulary_must_match_the_data(tmp_path: Path) -> None:
    from arvae_midi.train.recipe import load_recipe

    config = load_recipe("tiny").replace(init="default")
    with pytest.raises(ConfigError, match="vocabulary"):
        finetune.load_init(config, ["__", "rest", *[str(p) for p in range(48, 84)]])
    _, weights = finetune.load_init(config, list(Vocabulary().tokens))
    assert all(isinstance(w, torch.Tensor) for w in weights.values())
    assert np.isfinite([float(w.abs().sum()) for w in weights.values()]).all()


def test_recovery_reproduces_the_shipped_weights_and_reexports_identically(tmp_path: Path) -> None:
    """bench/recover_default_weights.py's two proofs: recovering default.onnx gives exactly the
    shipped default.safetensors, and re-exporting that model gives default.onnx's tokens and mu."""
    from arvae_midi.engine.engine import Engine
    from arvae_midi.export.exporter import ExportConfig, export_model
    from arvae_midi.export.parity import key_masks
    from arvae_midi.export.recover import recover_model

    model, recipe, doc = recover_model(DEFAULT_MODEL)
    _, _, shipped = finetune.read_init("default")
    for name, value in model.state_dict().items():
        assert torch.equal(value, shipped[name]), name
    bars = synthetic_bars(64, seed=5)
    report = export_model(model, tmp_path / "again.onnx", doc["vocab"], doc["attribute_dims"], bars,
                          recipe=doc["recipe"], config=ExportConfig(calibration_bars=16, parity_bars=16))  # fmt: skip
    original, again = Engine.load(DEFAULT_MODEL, device="cpu"), Engine.load(report.path, device="cpu")
    mu_a, _ = original.encode(bars)
    mu_b, _ = again.encode(bars)
    assert float(np.abs(mu_a - mu_b).max()) < 1e-5
    masks = key_masks(len(bars), Vocabulary.from_tokens(doc["vocab"]), seed=1)
    np.testing.assert_array_equal(original.decode(mu_a, masks), again.decode(mu_a, masks))


def test_recovery_refuses_a_file_without_metadata(tmp_path: Path) -> None:
    from arvae_midi.export.recover import recover_model

    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFileError):
        recover_model(tmp_path / "bad.onnx")
