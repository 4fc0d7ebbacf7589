"""The dMelodies paper's figures 3-6, redrawn as PNG from grid records (:mod:`arvae_midi.train.grid`).

* ``dmelodies_fig3_metrics.png``: MIG, Modularity and SAP per method, one point per run, CNN and
  RNN side by side (paper Fig. 3);
* ``dmelodies_fig4_reconstruction.png``: greedy reconstruction accuracy per method (Fig. 4);
* ``dmelodies_fig5_mig_vs_recon.png``: MIG against reconstruction accuracy, one panel per method,
  coloured by the method's hyper-parameter value (Fig. 5);
* ``dmelodies_fig6_factor_mig.png``: MIG per factor for the β-VAE runs (Fig. 6).

A record is a dict with ``method``, ``architecture``, ``hyperparameter`` {name, value}, ``seed``,
``reconstruction_accuracy``, ``mig``, ``modularity``, ``sap`` and ``mig_per_factor``. Figures are
built on the Agg canvas (no pyplot state), as in :mod:`arvae_midi.train.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arvae_midi.train.grid import HYPER_LABELS, METHOD_LABELS, METHODS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Record = dict[str, Any]
ARCH_STYLE = {"cnn": ("tab:blue", "o"), "rnn": ("tab:orange", "s")}
#: Colours of a method's low / middle / high hyper-parameter value.
LEVEL_COLOURS = ("tab:green", "tab:purple", "tab:red")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _methods(records: Sequence[Record]) -> list[str]:
    present = {r["method"] for r in records}
    return [m for m in METHODS if m in present]


def _strip(ax: Axes, records: Sequence[Record], key: str, methods: list[str]) -> None:
    """One point per run at x = method index, CNN left and RNN right of it, median as a bar."""
    for a, (arch, (colour, marker)) in enumerate(ARCH_STYLE.items()):
        offset = -0.15 if a == 0 else 0.15
        for i, method in enumerate(methods):
            values = [r[key] for r in records if r["method"] == method and r["architecture"] == arch
                      and r.get(key) is not None]  # fmt: skip
            if not values:
                continue
            x = np.full(len(values), i + offset) + np.linspace(-0.05, 0.05, len(values))
            ax.scatter(x, values, c=colour, marker=marker, s=36, label=arch.upper() if i == 0 or not ax.get_legend()
                       else None, zorder=3)  # fmt: skip
            ax.hlines(float(np.median(values)), i + offset - 0.1, i + offset + 0.1, colors="k", lw=1.5, zorder=4)
    ax.set_xticks(range(len(methods)), [METHOD_LABELS[m] for m in methods])
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.grid(axis="y", alpha=0.3)


def _dedupe_legend(ax: Axes, **kwargs: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, label in zip(handles, labels, strict=True):
        seen.setdefault(label, h)
    if seen:
        ax.legend(list(seen.values()), list(seen), **kwargs)


def plot_metrics(records: Sequence[Record], path: Path, title: str = "") -> Path:
    """Figure 3: MIG, Modularity, SAP per method and architecture."""
    methods = _methods(records)
    fig = _figure(12, 3.8)
    axes = fig.subplots(1, 3)
    for ax, (key, label) in zip(axes, (("mig", "MIG"), ("modularity", "Modularity"), ("sap", "SAP")), strict=True):
        _strip(ax, records, key, methods)
        ax.set_title(label)
    _dedupe_legend(axes[0], loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_reconstruction(records: Sequence[Record], path: Path, title: str = "") -> Path:
    """Figure 4: greedy reconstruction accuracy per method and architecture."""
    methods = _methods(records)
    fig = _figure(5.5, 3.8)
    ax = fig.subplots()
    _strip(ax, records, "reconstruction_accuracy", methods)
    ax.set_ylabel("reconstruction accuracy")
    ax.set_ylim(0, 1.02)
    _dedupe_legend(ax, loc="best", fontsize=8)
    ax.set_title(title or "Reconstruction accuracy")
    return _save(fig, path)


def plot_mig_vs_recon(records: Sequence[Record], path: Path, title: str = "") -> Path:
    """Figure 5: MIG against reconstruction accuracy, one panel per method, colour = hyper-parameter."""
    methods = _methods(records)
    fig = _figure(4 * max(1, len(methods)), 3.8)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(methods)), sharey=True))
    for ax, method in zip(axes, methods, strict=False):
        grid_values = METHODS[method][2]
        hyper = METHODS[method][1]
        runs = sorted((r for r in records if r["method"] == method),
                      key=lambda r: (r["architecture"], float(r["hyperparameter"]["value"])))  # fmt: skip
        for r in runs:
            value = float(r["hyperparameter"]["value"])
            level = grid_values.index(value) if value in grid_values else 1
            marker = ARCH_STYLE[r["architecture"]][1]
            ax.scatter(r["reconstruction_accuracy"], r["mig"], c=LEVEL_COLOURS[level], marker=marker, s=48,
                       label=f"{HYPER_LABELS[hyper]} = {value:g} ({r['architecture'].upper()})", zorder=3)  # fmt: skip
        ax.set_title(METHOD_LABELS[method])
        ax.set_xlabel("reconstruction accuracy")
        ax.grid(alpha=0.3)
        _dedupe_legend(ax, loc="best", fontsize=7)
    axes[0].set_ylabel("MIG")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_factor_mig(records: Sequence[Record], path: Path, method: str = "betavae", title: str = "") -> Path:
    """Figure 6: MIG per factor for the runs of ``method`` (grouped bars, one group per factor)."""
    runs = sorted((r for r in records if r["method"] == method),
                  key=lambda r: (r["architecture"], float(r["hyperparameter"]["value"]), r["seed"]))  # fmt: skip
    factors = list(runs[0]["mig_per_factor"]) if runs else []
    fig = _figure(11, 4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(runs))
    hyper = METHODS[method][1]
    for k, r in enumerate(runs):
        x = np.arange(len(factors)) + (k - (len(runs) - 1) / 2) * width
        value = float(r["hyperparameter"]["value"])
        grid_values = METHODS[method][2]
        colour = LEVEL_COLOURS[grid_values.index(value) if value in grid_values else 1]
        ax.bar(x, [r["mig_per_factor"][f] for f in factors], width, color=colour,
               hatch="//" if r["architecture"] == "rnn" else None, edgecolor="k", linewidth=0.4,
               label=f"{HYPER_LABELS[hyper]} = {value:g} {r['architecture'].upper()} seed {r['seed']}")  # fmt: skip
    ax.set_xticks(range(len(factors)), factors, rotation=20)
    ax.set_ylabel("MIG")
    ax.grid(axis="y", alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    ax.set_title(title or f"Factor-wise MIG, {METHOD_LABELS[method]}")
    return _save(fig, path)


def write_figures(records: Sequence[Record], folder: str | Path, title: str = "") -> list[Path]:
    """Figures 3-6 into ``folder``; returns their paths."""
    folder = Path(folder)
    return [
        plot_metrics(records, folder / "dmelodies_fig3_metrics.png", title),
        plot_reconstruction(records, folder / "dmelodies_fig4_reconstruction.png", title),
        plot_mig_vs_recon(records, folder / "dmelodies_fig5_mig_vs_recon.png", title),
        plot_factor_mig(records, folder / "dmelodies_fig6_factor_mig.png", title=title),
    ]
