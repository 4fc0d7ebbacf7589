"""Fixtures of the export tests: the committed tiny model, its engine, held-out synthetic bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.export.engine import Engine
from tests.fixtures.make_tiny_model import FIXTURE, TINY_MODEL, synthetic_bars, write_dataset


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """``tests/fixtures/tiny.onnx``."""
    return FIXTURE


@pytest.fixture(scope="session")
def tiny_engine(tiny_path: Path) -> Engine:
    """The tiny fixture model on the CPU (shared: the engine is stateless between calls)."""
    return Engine.load(tiny_path, device="cpu")


@pytest.fixture(scope="session")
def heldout_bars() -> np.ndarray:
    """Synthetic bars (400, 24) from a seed the fixture model was not trained on."""
    return synthetic_bars(400, seed=12345)


def make_run(folder: Path, seed: int = 3, eval_summary: dict[str, float] | None = None) -> Path:
    """An untrained tiny run folder (``save_run`` layout) over a 300-bar synthetic dataset."""
    import json

    import torch

    from arvae_midi.train.checkpoint import run_info, save_run
    from arvae_midi.train.models import build_model
    from arvae_midi.train.recipe import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    data = write_dataset(folder / "synthetic.npz", 300, seed=2)
    config = TrainConfig(name="tiny-test", data=str(data), model=TINY_MODEL, epochs=1)
    torch.manual_seed(seed)
    model = build_model(TINY_MODEL).eval()
    dims = {name: i for i, name in enumerate(ATTRIBUTE_NAMES)}
    run_dir = folder / "run"
    save_run(run_dir, model, run_info(config, list(Vocabulary().tokens), list(ATTRIBUTE_NAMES), dims, "measure"))
    if eval_summary is not None:
        (run_dir / "eval.json").write_text(json.dumps({"split": "test", "n_items": 30, "summary": eval_summary}))
    return run_dir
