"""A model file's figures on held-out bars: reconstruction accuracy and knob Spearman.

Used by ``arvae-midi fit`` to compare the start model with the fine-tuned one on bars of files
neither was trained on. Both figures go through :class:`~arvae_midi.engine.engine.Engine`, as
``vary`` and ``serve`` do:

* ``reconstruction``: greedy token accuracy of decode(encode mean) over all bars (and
  ``exact_bars``, the share of bars reproduced without a wrong token);
* ``spearman[attribute]``: the knob swept over ``positions`` evenly spaced positions 0..127 (the
  other knobs unset, amount 0, the engine's default closed loop), Spearman correlation between
  knob position and the attribute of the decoded bar, per bar (a constant sequence counts as 0),
  mean over bars. Same definition as ``bench/knobs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.engine.engine import Engine
from arvae_midi.errors import DatasetError
from arvae_midi.progress import Progress, ProgressFn


@dataclass
class ModelFigures:
    """Figures of one model on one set of held-out bars."""

    bars: int  # bars reconstructed
    reconstruction: float
    spearman: dict[str, float] = field(default_factory=dict)
    sweep_bars: int = 0  # bars the knob sweeps ran on
    exact_bars: float = 0.0  # share of bars reconstructed without a single wrong token

    @property
    def spearman_min(self) -> float:
        """The weakest knob's Spearman (1.0 when the model has none)."""
        return min(self.spearman.values(), default=1.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties given their average rank; (N, P) -> (N, P)."""
    order = np.argsort(values, axis=-1, kind="stable")
    ranks = np.empty_like(values, dtype=np.float64)
    np.put_along_axis(ranks, order, np.arange(values.shape[-1], dtype=np.float64)[None, :], axis=-1)
    for row, vals in zip(ranks, values, strict=True):
        for v in np.unique(vals):
            tied = vals == v
            if tied.sum() > 1:
                row[tied] = row[tied].mean()
    return ranks


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of ``x`` (P,) with every row of ``y`` (N, P); a constant row gives 0."""
    rx = _ranks(np.asarray(x, np.float64)[None, :])[0]
    rx = rx - rx.mean()
    ry = _ranks(np.asarray(y, np.float64))
    ry = ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
    out = np.zeros(len(ry))
    ok = denom > 0
    out[ok] = (ry[ok] @ rx) / denom[ok]
    return out


def model_figures(
    engine: Engine,
    bars: np.ndarray,
    positions: int = 9,
    progress: ProgressFn | None = None,
    sweep_bars: int | None = None,
    seed: int = 0,
) -> ModelFigures:
    """Reconstruction accuracy and per-knob Spearman of ``engine`` on ``bars`` (N, 24) (module docstring).

    Reconstruction uses every bar; the knob sweeps (``4 * positions`` vary calls per bar) a
    seeded subset of ``sweep_bars`` of them when set.
    """
    bars = np.asarray(bars, np.int64)
    if bars.ndim != 2 or len(bars) == 0:
        raise DatasetError(f"need held-out bars of shape (N>0, 24), got {bars.shape}")
    mu, _ = engine.encode(bars)
    same = engine.decode(mu) == bars
    reconstruction, exact = float(same.mean()), float(same.all(axis=1).mean())
    n_recon = len(bars)
    if sweep_bars is not None and sweep_bars < len(bars):
        bars = bars[np.sort(np.random.default_rng(seed).choice(len(bars), sweep_bars, replace=False))]
    knob = np.unique(np.round(np.linspace(0, 127, positions)).astype(np.int64))
    attributes = [a for a in engine.meta.attributes if a in ATTRIBUTE_NAMES]
    total, done = len(attributes) * len(bars) * len(knob), 0
    spearman: dict[str, float] = {}
    for attribute in attributes:
        out = np.empty((len(bars), len(knob), bars.shape[1]), np.int64)
        for i, bar in enumerate(bars):
            for j, pos in enumerate(knob):
                out[i, j] = engine.vary(bar, {attribute: int(pos)}, amount=0.0, seed=i, n=1)[0]
            done += len(knob)
            if progress is not None:
                progress(Progress("knob sweeps", done, total))
        values = engine.attributes(out.reshape(-1, bars.shape[1]))[:, ATTRIBUTE_NAMES.index(attribute)]
        spearman[attribute] = float(spearman_rows(knob, values.reshape(len(bars), len(knob))).mean())
    return ModelFigures(n_recon, reconstruction, spearman, sweep_bars=len(bars), exact_bars=exact)
