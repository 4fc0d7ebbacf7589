"""Encoder variants (``model.encoder``) export to ONNX with torch <-> onnxruntime parity."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import Engine
from arvae_midi.export.exporter import ExportConfig, export_model
from arvae_midi.export.parity import key_masks
from arvae_midi.train.build import build_model
from tests.export.conftest import assert_matches_torch
from tests.fixtures.make_tiny_model import TINY_MODEL, synthetic_bars

QUICK = ExportConfig(calibration_points=5, calibration_bars=32, parity_bars=128)


@pytest.mark.parametrize("encoder", ["conv", "mlp"])
def test_encoder_variant_exports_with_parity(encoder: str, tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = build_model(replace(TINY_MODEL, encoder=encoder)).eval()
    path = tmp_path / f"{encoder}.onnx"
    dims = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
    # export_model runs its own parity check and refuses to write the file when it fails
    export_model(
        model, path, list(Vocabulary().tokens), dims, synthetic_bars(200, seed=5), recipe={"name": "t"}, config=QUICK
    )
    bars = synthetic_bars(100, seed=8)
    masks = key_masks(len(bars), Vocabulary(), seed=4)
    engine = Engine.load(path, device="cpu")
    assert_matches_torch(model, engine, bars, masks)
