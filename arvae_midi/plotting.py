"""Piano rolls and the figure helpers every plot shares: matplotlib only, no torch.

``demo`` (runtime side) and ``plot`` (training side) both draw bars with :func:`plot_piano_roll`.
Figures are built with :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state), so
plotting never opens a window or touches the global backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from arvae_midi.core.tokens import (
    DMELODIES_BOUNDARIES,
    DMELODIES_TICKS,
    TICK_BOUNDARIES,
    TICKS_PER_BAR,
    Vocabulary,
    tokens_to_notes,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches at 100 dpi (no pyplot state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def as_vocab(vocab: Vocabulary | Sequence[str]) -> Vocabulary:
    """``vocab`` as a :class:`Vocabulary` (token strings in id order are converted)."""
    return vocab if isinstance(vocab, Vocabulary) else Vocabulary.from_tokens(list(vocab))


def tick_boundaries(ticks: int) -> np.ndarray:
    """Tick boundaries in beats of a ``ticks``-token sequence: the measure grid, the dMelodies grid,
    else ``ticks`` equal steps over 4 beats."""
    if ticks == TICKS_PER_BAR:
        return TICK_BOUNDARIES
    if ticks == DMELODIES_TICKS:
        return DMELODIES_BOUNDARIES
    return np.linspace(0.0, 4.0, ticks + 1)


# -- piano roll --------------------------------------------------------------------------------


def plot_piano_roll(
    bars_tokens: np.ndarray,
    vocab: Vocabulary | Sequence[str],
    path: str | Path,
    titles: Sequence[str] | None = None,
    values: Sequence[float] | np.ndarray | None = None,
    value_label: str = "",
    title: str = "",
) -> Path:
    """Draw bars (n, T) of token ids as one piano roll of consecutive bars; returns ``path``.

    ``titles`` (n) go above the bars; ``values`` (n) are printed under each title and drawn as
    dots on a right-hand axis (e.g. the attribute of each bar), labelled ``value_label``.
    """
    bars = np.asarray(bars_tokens, dtype=np.int64)
    if bars.ndim == 1:
        bars = bars[None, :]
    if bars.ndim != 2 or len(bars) == 0:
        raise ValueError(f"bars_tokens must be (n, T) with n >= 1, got {bars.shape}")
    n, ticks = bars.shape
    for name, seq in (("titles", titles), ("values", values)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{len(seq)} {name} for {n} bars")
    v = as_vocab(vocab)
    bounds = tick_boundaries(ticks)
    bar_len = float(bounds[-1])
    notes = [note for i, bar in enumerate(bars) for note in tokens_to_notes(bar, v, offset=i * bar_len,
                                                                           tick_positions=bounds)]  # fmt: skip
    fig = new_figure(max(4.0, 2.2 * n + 1.0), 3.4)
    ax = fig.add_subplot()
    if notes:
        ax.barh([nt.pitch for nt in notes], [nt.end - nt.start for nt in notes], left=[nt.start for nt in notes],
                height=0.8, color="tab:blue", edgecolor="black", linewidth=0.5)  # fmt: skip
        lo = min(nt.pitch for nt in notes)
        hi = max(nt.pitch for nt in notes)
    else:
        lo, hi = 60, 72
    ax.set_ylim(lo - 2, hi + 2)
    ax.set_xlim(0, n * bar_len)
    for i in range(1, n):
        ax.axvline(i * bar_len, color="gray", linewidth=1.0)
    ax.set_xticks(np.arange(0, n * bar_len + 1e-9, 1.0), minor=True)
    ax.set_xticks(np.arange(n) * bar_len)
    ax.set_xticklabels([str(i + 1) for i in range(n)])
    ax.grid(axis="x", which="minor", color="lightgray", linewidth=0.5)
    ax.set_xlabel("bar")
    ax.set_ylabel("MIDI pitch")
    for i in range(n):
        label = titles[i] if titles is not None else ""
        if values is not None:
            label = f"{label}\n{value_label or 'value'} = {float(values[i]):.3f}".strip()
        if label:
            ax.text((i + 0.5) * bar_len, 1.02, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=8)  # fmt: skip
    if values is not None:
        twin = ax.twinx()
        twin.plot((np.arange(n) + 0.5) * bar_len, np.asarray(values, dtype=float), "o--", color="tab:red")
        twin.set_ylabel(value_label or "value", color="tab:red")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
