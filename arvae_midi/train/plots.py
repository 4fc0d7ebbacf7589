"""PNG plots of a run: attribute surfaces, latent traversals as piano rolls, loss curves, latent scatter.

The drawing functions take arrays and plain callables, so they work with any decoder (a torch
model, the ONNX :class:`~arvae_midi.engine.engine.Engine`): ``decode_fn`` maps latents (B, Z)
float32 to greedy tokens (B, T) int64; ``attribute_fn`` maps tokens (B, T) to one value per row
(NaN where undefined). Bars are drawn by :func:`arvae_midi.plotting.plot_piano_roll`, which ``demo`` shares.
:func:`plot_run` draws everything for a run folder (docs/reference.md §1.8):

* ``surface_<label>.png``: the label's latent dim (x) against a free dim (y) over a grid, the other
  dims fixed to one seeded N(0, I) draw, coloured by the label of the greedy decoding;
* ``traversal_<label>_<k>.png``: an encoded held-out bar with the label's dim swept over
  ``linspace(-4, 4, 5)`` (the middle bar is the unmodified reconstruction, as in the reference),
  drawn as consecutive bars with the label's value per bar;
* ``latent_<label>.png``: encoded held-out codes, label dim vs free dim, coloured by the label;
* ``loss_curves.png`` from ``metrics.jsonl``.

Figures are built with :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state), so
plotting never opens a window or touches the global backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arvae_midi.core.tokens import (
    Vocabulary,
)
from arvae_midi.errors import ConfigError
from arvae_midi.plotting import as_vocab, new_figure, plot_piano_roll, save_figure
from arvae_midi.progress import Progress, ProgressFn, reporter

if TYPE_CHECKING:
    pass

DecodeFn = Callable[[np.ndarray], np.ndarray]
AttributeFn = Callable[[np.ndarray], np.ndarray]

#: Keys of metrics.jsonl that are bookkeeping, not curves.
_NOT_CURVES = frozenset({"epoch", "step", "seconds", "samples_per_s"})


@dataclass(frozen=True)
class PlotConfig:
    """What :func:`plot_run` draws."""

    grid: int = 60  # surface grid points per axis (the reference used 200 x 200 at step 0.05)
    limit: float = 5.0  # surface axes span [-limit, limit]
    traversal_values: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
    n_traversals: int = 2  # held-out bars traversed per label
    scatter_points: int = 2000  # encoded held-out bars in the latent scatter
    split: str = "test"
    seed: int = 0
    batch_size: int = 500  # decoding batch (the reference's surface batch)
    labels: tuple[str, ...] | None = None  # labels to draw (None = every label of the run)

    def __post_init__(self) -> None:
        if self.grid < 2 or self.limit <= 0 or self.batch_size < 1:
            raise ConfigError("grid must be >= 2, limit > 0 and batch_size >= 1")
        if not self.traversal_values or self.n_traversals < 0 or self.scatter_points < 1:
            raise ConfigError("need traversal values, n_traversals >= 0 and scatter_points >= 1")


# -- attribute surface -------------------------------------------------------------------------


def _decode_batched(decode_fn: DecodeFn, z: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(decode_fn(z[i : i + batch_size])) for i in range(0, len(z), batch_size)])


def attribute_surface(
    decode_fn: DecodeFn,
    attribute_fn: AttributeFn,
    latent_dim: int,
    dim_x: int,
    dim_y: int,
    grid: int = 60,
    limit: float = 5.0,
    seed: int = 0,
    batch_size: int = 500,
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attribute of the greedy decoding over a grid of (z[dim_x], z[dim_y]).

    The other dims hold ``base`` (Z,), default one seeded N(0, I) draw. Returns ``(xs (grid,),
    ys (grid,), values (grid_y, grid_x))`` with ``values[r, c]`` at ``(xs[c], ys[r])``.
    """
    if not (0 <= dim_x < latent_dim and 0 <= dim_y < latent_dim) or dim_x == dim_y:
        raise ValueError(f"need two different dims in 0..{latent_dim - 1}, got {dim_x} and {dim_y}")
    z0 = np.random.default_rng(seed).standard_normal(latent_dim) if base is None else np.asarray(base, np.float64)
    xs = np.linspace(-limit, limit, grid)
    ys = np.linspace(-limit, limit, grid)
    gx, gy = np.meshgrid(xs, ys)  # (grid_y, grid_x)
    z = np.tile(z0.astype(np.float32), (grid * grid, 1))
    z[:, dim_x] = gx.ravel()
    z[:, dim_y] = gy.ravel()
    values = np.asarray(attribute_fn(_decode_batched(decode_fn, z, batch_size)), dtype=np.float64)
    return xs, ys, values.reshape(grid, grid)


def plot_attribute_surface(
    xs: np.ndarray, ys: np.ndarray, values: np.ndarray, path: str | Path, name: str, dim_x: int, dim_y: int
) -> Path:
    """Heat map of an :func:`attribute_surface` (viridis; NaN = undefined, left blank)."""
    fig = new_figure(5.2, 4.4)
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(xs, ys, np.ma.masked_invalid(values), cmap="viridis", shading="nearest")
    fig.colorbar(mesh, ax=ax, label=name)
    ax.set_xlabel(f"z[{dim_x}] ({name} dim)")
    ax.set_ylabel(f"z[{dim_y}] (free dim)")
    ax.set_title(f"{name} of the decoded bar")
    return save_figure(fig, path)


# -- traversal ---------------------------------------------------------------------------------


def traversal_bars(
    decode_fn: DecodeFn, z0: np.ndarray, dim: int, values: Sequence[float], keep_middle: bool = True
) -> np.ndarray:
    """Greedy decodings (len(values), T) of ``z0`` (Z,) with ``z0[dim]`` set to each value.

    With ``keep_middle`` and an odd count, the middle bar decodes ``z0`` itself (the reference's
    traversal shows the unmodified reconstruction there).
    """
    z = np.tile(np.asarray(z0, dtype=np.float32), (len(values), 1))
    z[:, dim] = np.asarray(values, dtype=np.float32)
    if keep_middle and len(values) % 2 == 1:
        z[len(values) // 2] = z0
    return np.asarray(decode_fn(z), dtype=np.int64)


def plot_traversal(
    decode_fn: DecodeFn,
    attribute_fn: AttributeFn,
    z0: np.ndarray,
    dim: int,
    vocab: Vocabulary | Sequence[str],
    path: str | Path,
    name: str,
    values: Sequence[float] = (-4.0, -2.0, 0.0, 2.0, 4.0),
) -> Path:
    """Piano roll of a traversal of ``dim`` from ``z0`` with ``name`` computed on every bar."""
    bars = traversal_bars(decode_fn, z0, dim, values)
    middle = len(values) // 2 if len(values) % 2 == 1 else -1
    titles = [
        f"z[{dim}] = {float(z0[dim]):+.2f} (recon.)" if i == middle else f"z[{dim}] = {v:+.1f}"
        for i, v in enumerate(values)
    ]
    return plot_piano_roll(bars, vocab, path, titles=titles, values=attribute_fn(bars), value_label=name,
                           title=f"traversal of z[{dim}] ({name})")  # fmt: skip


# -- loss curves and scatter -------------------------------------------------------------------


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """Lines of a ``metrics.jsonl`` as dicts (a torn last line from a killed run is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_loss_curves(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One panel per quantity (``loss``, ``recon``, ``kl``, ``ar``, ``accuracy``, ``beta``, ...) with
    its ``train_`` and ``val_`` curves against the epoch; constant-zero quantities are left out."""
    if not rows:
        raise ValueError("no epochs to plot")
    epochs = [float(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    series: dict[str, dict[str, list[float]]] = {}
    for key in dict.fromkeys(k for r in rows for k in r):
        if key in _NOT_CURVES:
            continue
        ys = [r.get(key) for r in rows]
        if not all(isinstance(y, (int, float)) and not isinstance(y, bool) or y is None for y in ys):
            continue
        vals = [float("nan") if y is None else float(y) for y in ys]
        if all(v == 0.0 or np.isnan(v) for v in vals):
            continue
        part, _, base = key.partition("_") if key.startswith(("train_", "val_")) else ("", "", key)
        series.setdefault(base, {})[part or key] = vals
    if not series:
        raise ValueError("metrics log has no numeric curves")
    cols = min(3, len(series))
    nrows = -(-len(series) // cols)
    fig = new_figure(4.0 * cols, 2.8 * nrows)
    for i, (base, curves) in enumerate(series.items()):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for label, vals in curves.items():
            ax.plot(epochs, vals, marker="o" if len(epochs) < 20 else None, label=label)
        ax.set_title(base, fontsize=10)
        ax.set_xlabel("epoch")
        if len(curves) > 1 or next(iter(curves)) in ("train", "val"):
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def plot_latent_scatter(
    z: np.ndarray, values: np.ndarray, dim_x: int, dim_y: int, path: str | Path, name: str, limit: float = 4.0
) -> Path:
    """Encoded codes ``z`` (N, Z): ``z[dim_x]`` vs ``z[dim_y]`` coloured by ``values`` (N,)."""
    fig = new_figure(5.2, 4.4)
    ax = fig.add_subplot()
    sc = ax.scatter(z[:, dim_x], z[:, dim_y], c=values, s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax, label=name)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_xlabel(f"z[{dim_x}]")
    ax.set_ylabel(f"z[{dim_y}]")
    ax.set_title(f"held-out codes coloured by {name}")
    return save_figure(fig, path)


# -- a whole run -------------------------------------------------------------------------------


def label_functions(kind: str, vocab: Sequence[str], names: Sequence[str]) -> dict[str, AttributeFn]:
    """Per label, a function computing it on decoded tokens (B, T) -> (B,) float.

    Measures: the four attributes (:func:`~arvae_midi.core.attributes.compute_attributes`).
    dMelodies: the factor estimated from the notes (:func:`~arvae_midi.train.dmelodies.factors_from_tokens`),
    NaN where it cannot be determined. Labels without an estimator are left out.
    """
    from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes

    v = as_vocab(vocab)
    fns: dict[str, AttributeFn] = {}
    if kind == "dmelodies":
        from arvae_midi.train.dmelodies import FACTOR_NAMES, factors_from_tokens

        def factor(col: int) -> AttributeFn:
            def fn(tokens: np.ndarray) -> np.ndarray:
                f = factors_from_tokens(np.asarray(tokens, dtype=np.int64))[:, col].astype(np.float64)
                return np.where(f < 0, np.nan, f)

            return fn

        fns = {n: factor(FACTOR_NAMES.index(n)) for n in names if n in FACTOR_NAMES}
    else:

        def attribute(col: int) -> AttributeFn:
            def fn(tokens: np.ndarray) -> np.ndarray:
                return compute_attributes(np.asarray(tokens, dtype=np.int64), v)[:, col].astype(np.float64)

            return fn

        fns = {n: attribute(ATTRIBUTE_NAMES.index(n)) for n in names if n in ATTRIBUTE_NAMES}
    return fns


def label_dims(
    names: Sequence[str],
    reg_dims: dict[str, int],
    z: np.ndarray,
    labels: np.ndarray,
    eval_result: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Latent dim shown for each label: the regularised one, else the Interpretability dim.

    The Interpretability dim (highest kNN MI) comes from ``eval.json`` when given, else it is
    estimated on ``z`` (N, Z) / ``labels`` (N, K) (at most 2,000 points).
    """
    from arvae_midi.train.metrics import MetricSettings, knn_mi_matrix

    found: dict[str, int] = {}
    if eval_result is not None:
        try:
            found = {str(k): int(v) for k, v in
                     eval_result["metrics"]["sampled"]["ar_vae"]["interpretability"]["dims"].items()}  # fmt: skip
        except (KeyError, TypeError, ValueError):
            found = {}
    missing = [n for n in names if n not in reg_dims and n not in found]
    if missing:
        mi, _ = knn_mi_matrix(z, labels, MetricSettings(max_points=2000, seed=seed))
        found.update({n: int(np.argmax(mi[:, j])) for j, n in enumerate(names) if n in missing})
    return {n: int(reg_dims[n]) if n in reg_dims else found[n] for n in names}


def free_dim(used: Sequence[int], latent_dim: int) -> int:
    """The lowest latent dim not in ``used`` (the y axis of surfaces and scatters)."""
    for d in range(latent_dim):
        if d not in used:
            return d
    return (max(used) + 1) % latent_dim


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    config: PlotConfig | None = None,
    data: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write every plot of a run folder under ``out`` (default ``RUN_DIR/plots``); returns the paths.

    ``progress`` gets a report after each figure (task "plot", detail the figure being drawn).
    """
    from arvae_midi.train.checkpoint import load_run
    from arvae_midi.train.run import encode_tokens, greedy_decode, load_run_data, read_eval, select_items

    cfg = config or PlotConfig()
    run = load_run(run_dir)
    out_dir = Path(out) if out is not None else run.run_dir / "plots"
    token_data = load_run_data(run, data)
    names = list(run.label_names)
    idx = select_items(token_data, cfg.split, max(cfg.scatter_points, cfg.n_traversals), cfg.seed)
    tokens = token_data.tokens[idx]
    labels = token_data.labels[idx][:, token_data.label_index(names)].astype(np.float64)
    if cfg.labels is not None:
        unknown = [n for n in cfg.labels if n not in names]
        if unknown:
            raise ConfigError(f"unknown label(s) {', '.join(unknown)}; this run has {', '.join(names)}")
    fns = label_functions(token_data.kind, run.vocab, cfg.labels if cfg.labels is not None else names)
    latent_dim = int(run.model.config.latent_dim)

    def decode(z: np.ndarray) -> np.ndarray:
        return greedy_decode(run.model, z, cfg.batch_size)

    paths: list[Path] = []
    metrics_log = run.run_dir / "metrics.jsonl"
    steps = len(fns) * (2 + cfg.n_traversals) + 2
    report = reporter(progress)
    done = 0

    def advance(n: int, what: str) -> None:
        nonlocal done
        done += n
        report(Progress("plot", done, steps, detail=what))

    advance(0, "encode")
    _, z = encode_tokens(run.model, tokens, cfg.batch_size, cfg.seed)
    dims = label_dims(names, run.reg_dims, z, labels, read_eval(run.run_dir), cfg.seed)
    y_dim = free_dim(sorted(set(dims.values())), latent_dim)
    advance(1, "encode")
    for name, fn in fns.items():
        x_dim = dims[name]
        y = y_dim if y_dim != x_dim else free_dim([x_dim, y_dim], latent_dim)
        advance(0, f"surface {name}")
        xs, ys, vals = attribute_surface(decode, fn, latent_dim, x_dim, y, cfg.grid, cfg.limit, cfg.seed,
                                         cfg.batch_size)  # fmt: skip
        paths.append(plot_attribute_surface(xs, ys, vals, out_dir / f"surface_{name}.png", name, x_dim, y))
        advance(1, f"traversal {name}")
        for k in range(min(cfg.n_traversals, len(z))):
            paths.append(plot_traversal(decode, fn, z[k], x_dim, run.vocab, out_dir / f"traversal_{name}_{k}.png",
                                        name, cfg.traversal_values))  # fmt: skip
            advance(1, f"traversal {name}")
        col = names.index(name)
        paths.append(plot_latent_scatter(z, labels[:, col], x_dim, y, out_dir / f"latent_{name}.png", name))
        advance(1, "scatter")
    if metrics_log.is_file():
        rows = read_metrics_log(metrics_log)
        if rows:
            paths.append(plot_loss_curves(rows, out_dir / "loss_curves.png", title=run.config.name))
    advance(1, "done")
    return paths
