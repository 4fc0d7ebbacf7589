"""The parity check: the exported file against torch on held-out bars, with and without a key mask.

Parity means identical greedy tokens and mu / logvar within a tolerance; the export writes its
file only when it holds (:func:`arvae_midi.export.exporter.export_model`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from arvae_midi.core.tokens import HOLD_ID, REST_ID, Vocabulary
from arvae_midi.engine.metadata import MASK_FORBIDDEN
from arvae_midi.errors import ModelFileError
from arvae_midi.train.models import VAE


def key_masks(n: int, vocab: Vocabulary, seed: int) -> np.ndarray:
    """(n, V) additive masks: every other row unmasked, the rest a random 7-pitch-class key lock.

    HOLD and REST always stay allowed, as the bridge's key lock keeps them.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, len(vocab)), np.float32)
    pitch_class = np.where(vocab.pitch_table >= 0, vocab.pitch_table % 12, -1)
    for i in range(1, n, 2):
        allowed = rng.choice(12, size=7, replace=False)
        masks[i] = np.where(np.isin(pitch_class, allowed), 0.0, MASK_FORBIDDEN)
        masks[i, [HOLD_ID, REST_ID]] = 0.0
    return masks


def _torch_reference(model: VAE, tokens: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.inference_mode():
        mu, logvar = model.encode(torch.as_tensor(tokens, dtype=torch.long))
        out = model.generate(mu, torch.as_tensor(masks))
    return mu.numpy(), logvar.numpy(), out.numpy()


def check_parity(model: VAE, path: Path, tokens: np.ndarray, vocab: Vocabulary, mu_atol: float,
                 seed: int = 0) -> tuple[float, float]:
    """Compare torch and the exported file on ``tokens`` (N, 24); returns max |d mu|, |d logvar|.

    The decoder halves are compared on the same z (torch's mu) so an encoder difference cannot
    hide or cause a decoder one. ModelFileError on any mismatch.
    """
    from arvae_midi.engine.engine import Engine

    engine = Engine.load(path, device="cpu", threads=0)
    masks = key_masks(len(tokens), vocab, seed)
    mu_t, logvar_t, out_t = _torch_reference(model, tokens, masks)
    mu_o, logvar_o = engine.encode(tokens)
    out_o = engine.decode(mu_t, masks)
    d_mu = float(np.abs(mu_t - mu_o).max())
    d_lv = float(np.abs(logvar_t - logvar_o).max())
    if not (d_mu <= mu_atol and d_lv <= mu_atol):
        raise ModelFileError(f"export parity failed: onnxruntime mu/logvar differ from torch by up to "
                             f"{max(d_mu, d_lv):.2e} (tolerance {mu_atol:.0e})")
    rows = np.flatnonzero((out_t != out_o).any(axis=1))
    if len(rows):
        i = int(rows[0])
        raise ModelFileError(
            f"export parity failed: greedy tokens differ on {len(rows)} of {len(tokens)} held-out bars "
            f"(first: bar {i}, torch {out_t[i].tolist()} vs onnxruntime {out_o[i].tolist()})"
        )
    return d_mu, d_lv

