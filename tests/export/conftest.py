"""Helpers of the export tests: an untrained tiny run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import Engine
from arvae_midi.train.models import VAE
from tests.fixtures.make_tiny_model import TINY_MODEL, write_dataset


def assert_matches_torch(
    model: VAE, engine: Engine, bars: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's encode (atol 1e-4) and masked greedy decode (identical tokens) equal torch's on
    ``bars`` (N, 24); returns torch's means (N, Z) and tokens (N, 24)."""
    with torch.inference_mode():
        mu_t, logvar_t = model.encode(torch.as_tensor(bars))
        out_t = model.generate(mu_t, torch.as_tensor(masks)).numpy()
    mu_o, logvar_o = engine.encode(bars)
    np.testing.assert_allclose(mu_o, mu_t.numpy(), atol=1e-4)
    np.testing.assert_allclose(logvar_o, logvar_t.numpy(), atol=1e-4)
    np.testing.assert_array_equal(engine.decode(mu_t.numpy(), masks), out_t)
    return mu_t.numpy(), out_t


def make_run(folder: Path, seed: int = 3, eval_summary: dict[str, float] | None = None) -> Path:
    """An untrained tiny run folder (``save_run`` layout) over a 300-bar synthetic dataset."""
    import json

    import torch

    from arvae_midi.train.build import build_model
    from arvae_midi.train.checkpoint import run_info, save_run
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
