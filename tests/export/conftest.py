"""Helpers of the export tests: an untrained tiny run folder."""

from __future__ import annotations

from pathlib import Path

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from tests.fixtures.make_tiny_model import TINY_MODEL, write_dataset


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
