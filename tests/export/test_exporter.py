"""The exporter: torch <-> onnxruntime parity, the file format, run folders, loud failures."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import Engine
from arvae_midi.engine.metadata import METADATA_KEY
from arvae_midi.errors import ConfigError, ModelFileError
from arvae_midi.export import graph
from arvae_midi.export.exporter import ExportConfig, export_model, export_run
from arvae_midi.export.parity import check_parity, key_masks
from arvae_midi.train.build import build_model
from arvae_midi.train.models import VAE, ModelConfig
from tests.export.conftest import assert_matches_torch, make_run
from tests.fixtures.make_tiny_model import TINY_MODEL, synthetic_bars

QUICK = ExportConfig(calibration_points=5, calibration_bars=32, parity_bars=128)
DIMS = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
VOCAB = list(Vocabulary().tokens)


@pytest.fixture(scope="module")
def model() -> VAE:
    torch.manual_seed(3)
    return build_model(TINY_MODEL).eval()


@pytest.fixture(scope="module")
def exported(model: VAE, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "m.onnx"
    export_model(model, path, VOCAB, DIMS, synthetic_bars(200, seed=5), recipe={"name": "t"}, config=QUICK)
    return path


def test_parity_torch_onnxruntime(model: VAE, exported: Path) -> None:
    bars = synthetic_bars(300, seed=99)
    engine = Engine.load(exported, device="cpu")
    masks = key_masks(len(bars), Vocabulary(), seed=4)
    mu_t, out_t = assert_matches_torch(model, engine, bars, masks)
    # Batch 1 runs the same graph with the dynamic batch at its smallest.
    np.testing.assert_array_equal(engine.decode(mu_t[7:8], masks[7:8]), out_t[7:8])


def test_file_format(exported: Path) -> None:
    proto = onnx.load(str(exported))
    assert [i.name for i in proto.graph.input] == ["tokens", "z", "pitch_mask"]
    assert [o.name for o in proto.graph.output] == ["mu", "logvar", "out_tokens"]
    assert not list(exported.parent.glob("*.data")) and not list(exported.parent.glob("*.tmp"))  # weights inline
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    doc = json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))
    assert doc["format_version"] == 1 and doc["latent_dim"] == TINY_MODEL.latent_dim
    assert doc["vocab"] == VOCAB and doc["attribute_dims"] == DIMS and doc["recipe"] == {"name": "t"}
    for name in ATTRIBUTE_NAMES:
        cal = doc["calibration"][name]
        assert len(cal["latent"]) == len(cal["median"]) == QUICK.calibration_points
        assert np.all(np.diff(cal["latent"]) > 0) and cal["bars"] == QUICK.calibration_bars
        assert np.all(np.asarray(cal["q25"]) <= np.asarray(cal["q75"]))


def test_check_parity_fails_loudly_on_a_different_model(model: VAE, exported: Path) -> None:
    other = copy.deepcopy(model)
    with torch.no_grad():
        dict(other.named_parameters())["mu_head.2.bias"].add_(0.01)
    with pytest.raises(ModelFileError, match="parity failed: onnxruntime mu/logvar differ"):
        check_parity(other, exported, synthetic_bars(20, seed=1), Vocabulary(), 1e-4)
    other = copy.deepcopy(model)
    with torch.no_grad():
        dict(other.named_parameters())["out.bias"][3] += 50.0  # the decoder now prefers token 3 everywhere
    with pytest.raises(ModelFileError, match="greedy tokens differ"):
        check_parity(other, exported, synthetic_bars(20, seed=1), Vocabulary(), 1e-4)


def test_failed_parity_writes_nothing(model: VAE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrong(graph._HierarchicalDecoder):
        def forward(self, z: torch.Tensor, pitch_mask: torch.Tensor) -> torch.Tensor:
            return super().forward(z + 1.0, pitch_mask)  # a broken graph

    monkeypatch.setattr(graph, "_decoder_module", Wrong)
    out = tmp_path / "broken.onnx"
    with pytest.raises(ModelFileError, match="parity failed"):
        export_model(model, out, VOCAB, DIMS, synthetic_bars(64, seed=5), config=QUICK)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_non_measure_models(tmp_path: Path) -> None:
    cnn = build_model(ModelConfig(arch="cnn", vocab_size=52, num_beats=2, ticks_per_beat=8))
    with pytest.raises(ConfigError, match="only measure models"):
        graph.build_graph(cnn)
    with pytest.raises(ModelFileError, match="vocabulary of 32 tokens, model of 52"):
        export_model(cnn, tmp_path / "x.onnx", VOCAB, {}, synthetic_bars(4, seed=0))


def test_export_run_folder(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, eval_summary={"mig": 0.25})
    report = export_run(run_dir, tmp_path / "out" / "run.onnx", QUICK)
    assert report.path.is_file() and report.parity_bars == 30  # the 30 test rows of 300
    meta = Engine.load(report.path, device="cpu").meta
    assert meta.recipe["name"] == "tiny-test" and meta.metrics["summary"] == {"mig": 0.25}
    assert meta.data["heldout_split"] == "test" and meta.data["heldout_rows"] == 30
    assert meta.document.export["opset"] == QUICK.opset
