"""Recover the shipped default model's torch weights from ``presets/default.onnx``.

Usage: ``python bench/recover_default_weights.py [--model arvae_midi/presets/default.onnx]
[--out arvae_midi/presets/default.safetensors]``

The training run of the shipped ``default.onnx`` is not kept, yet fine-tuning
(``arvae-midi train --init default``, ``arvae-midi fit``) starts from its torch weights. This
script maps the file's ONNX tensors back onto the MeasureVAE parameters
(:mod:`arvae_midi.export.recover`), writes them as a run's ``model.safetensors`` (config JSON in
its metadata), then proves the recovery twice: torch on the recovered weights against the
original file (parity check of the exporter: identical greedy tokens with and without key masks,
max |d mu|), and a fresh export of the recovered model against the original file (identical
tokens and mu on the same bars). Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arvae_midi.core.tokens import Vocabulary  # noqa: E402
from arvae_midi.engine.engine import Engine  # noqa: E402
from arvae_midi.export.exporter import ExportConfig, export_model  # noqa: E402
from arvae_midi.export.parity import check_parity, key_masks  # noqa: E402
from arvae_midi.export.recover import recover_model, run_info_of  # noqa: E402
from arvae_midi.train.checkpoint import save_weights  # noqa: E402


def _bars(n: int, seed: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.make_tiny_model import synthetic_bars

    return synthetic_bars(n, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "arvae_midi/presets/default.onnx")
    parser.add_argument("--out", type=Path, default=ROOT / "arvae_midi/presets/default.safetensors")
    parser.add_argument("--bars", type=int, default=512, help="bars compared (synthetic + real-ish)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model, recipe, doc = recover_model(args.model)
    info = run_info_of(recipe, doc, args.model.name)
    save_weights(model, args.out, metadata={"config": json.dumps(info, indent=2)})
    vocab = Vocabulary.from_tokens(doc["vocab"])
    bars = _bars(args.bars, seed=7)
    # 1. torch (recovered) vs the original file.
    d_mu, d_lv = check_parity(model, args.model, bars, vocab, mu_atol=1e-4)
    # 2. a fresh export of the recovered model vs the original file, same bars and masks.
    with tempfile.TemporaryDirectory() as tmp:
        report = export_model(
            model,
            Path(tmp) / "re.onnx",
            doc["vocab"],
            doc["attribute_dims"],
            bars,
            recipe=doc["recipe"],
            config=ExportConfig(calibration_bars=64, parity_bars=64),
        )
        original, again = Engine.load(args.model, device="cpu"), Engine.load(report.path, device="cpu")
        masks = key_masks(len(bars), vocab, 1)
        mu_a, _ = original.encode(bars)
        mu_b, _ = again.encode(bars)
        same_tokens = bool((original.decode(mu_a, masks) == again.decode(mu_a, masks)).all())
        d_mu_reexport = float(np.abs(mu_a - mu_b).max())
    print(
        json.dumps(
            {
                "bench": "recover_default_weights",
                "model": str(args.model),
                "out": str(args.out),
                "parameters": sum(p.numel() for p in model.parameters()),
                "bars": len(bars),
                "torch_vs_file_max_dmu": d_mu,
                "torch_vs_file_max_dlogvar": d_lv,
                "torch_vs_file_identical_tokens": True,
                "reexport_vs_file_identical_tokens": same_tokens,
                "reexport_vs_file_max_dmu": d_mu_reexport,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )
    if not same_tokens or d_mu_reexport > 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    main()
