"""The one variation policy: defaults shared by ``vary`` and ``serve``, and the knob search.

Both the offline command and the bridge call :meth:`arvae_midi.engine.engine.Engine.vary` with
these defaults: the key lock on, its scale taken from the bar and up to :data:`CONTEXT_BARS`
recent bars before it (``context``), and the closed loop below whenever a knob is set.

Closed loop (:func:`search`): every set knob asks for a target attribute value. The regularised
dims are monotone in their attribute, so instead of random candidates the loop brackets each
target along its own dim, all set dims at once and every row of a round in one decoder batch:

1. start: the bar's own latent moved along the calibrated median curve by the distance that
   separates the bar's own attribute value from the target (the curve's shape, the bar's level);
2. round r decodes ``rows`` latents at offsets ``0, -1, +1, -2, ...`` times a step around the
   current centre, each set dim reading the offsets in its own rotated order (so rows do not move
   every dim the same way);
3. after a round, per set dim, the decoded rows that landed below and above the target bracket
   it: the next centre is the secant between the nearest pair (or a step beyond the extreme row
   when all landed on one side), and the step shrinks to the bracket's width over ``rows``;
4. of every decoded row the one with the least cost (:func:`cost`) wins; the first (the start
   point of round 1) wins ties.

A target the bar cannot reach so ends at the nearest reachable value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: The key lock is on by default, in ``vary`` and ``serve`` alike.
KEY_LOCK = True
#: The key lock's scale is estimated from this many bars: the bar itself and the ones before it.
CONTEXT_BARS = 4
#: Latents decoded per round of the closed loop, per variation (1 = the raw latent traversal).
DEFAULT_CANDIDATES = 4
#: Rounds of the closed loop.
DEFAULT_ROUNDS = 1
#: Smallest attribute span the cost divides by (a flat, uncontrolled calibration).
MIN_SPAN = 1e-3
#: Largest factor by which a weakly followed dim's round-1 step grows (:func:`step_scale`).
MAX_STEP_SCALE = 4.0

#: z (M, Z) float32 -> decoded attributes (M, 4) and tokens (M, 24)
DecodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class LoopConfig:
    """How the closed loop searches (:func:`search`) and scores candidates (:func:`cost`).

    ``step``: round 1's step in units of each dim's calibrated latent span; ``crosstalk``: the
    weight of the unset attributes' move away from the input bar's own value in the cost;
    ``extrapolate``: how far (share of the latent span) the start may go past the ends of the
    median curve (set at engine load).
    """

    step: float = 0.1
    crosstalk: float = 0.2
    # Share of a dim's latent span the start may go past the curve's ends: 0.6 gave the pitch-range
    # knob of the 126-epoch default its best Spearman (0.938 on 100 test bars, vs 0.921 at 0.3, 0.873
    # at 1.0; bench/knobs.py) and changes nothing for targets inside the curve.
    extrapolate: float = 0.6


@dataclass(frozen=True)
class Knob:
    """One set knob as the search sees it (attribute units unless said otherwise)."""

    column: int  # the attribute's column in compute_attributes' output
    dim: int  # its latent dim
    target: float
    start: float  # latent value to start at
    step: float  # round-1 step, latent units
    span: float  # attribute span of the knob's travel (the cost's unit)
    sign: float = 1.0  # -1 when the model learned the dim upside down (attribute falls as it rises)
    clipped: float | None = None  # the start without the continuation past the curve's ends


def cost(attrs: np.ndarray, own: np.ndarray, knobs: Mapping[str, Knob], free: Mapping[int, float],
         crosstalk: float) -> np.ndarray:  # fmt: skip
    """Cost (M,) of decoded attributes (M, 4): set knobs' distance to their target plus
    ``crosstalk`` times the unset calibrated attributes' (``free``: column -> span) distance to
    the input bar's ``own`` (4,), each in units of the attribute's knob span."""
    total = np.zeros(len(attrs), np.float64)
    for k in knobs.values():
        total += np.abs(attrs[:, k.column] - k.target) / k.span
    for column, span in free.items():
        total += crosstalk * np.abs(attrs[:, column] - own[column]) / span
    return total


def step_scale(knob_span: float, curve_span: float) -> float:
    """Factor on a dim's round-1 step: knob range over the median curve's range, in 1..MAX_STEP_SCALE.

    Where the decoder follows a dim weakly, the median bar's attribute moves over only part of the
    knob's range along the whole latent grid (the retrained default's pitch range: 0.115 of 0.538),
    so a step sized to the grid's span leaves most targets outside the rows; the step grows by the
    shortfall. Dims the median bar follows across the knob's range keep their step (factor 1).
    """
    if curve_span <= MIN_SPAN:
        return 1.0
    return float(np.clip(knob_span / curve_span, 1.0, MAX_STEP_SCALE))


def _offsets(rows: int) -> np.ndarray:
    """0, -1, +1, -2, +2, ... (rows,)."""
    out = np.zeros(rows)
    for j in range(1, rows):
        out[j] = (j + 1) // 2 * (-1 if j % 2 else 1)
    return out


_ORDERS: dict[tuple[int, int], np.ndarray] = {}


def _order(rows: int, dims: int) -> np.ndarray:
    """(rows, dims) offsets: dim s reads 0, -1, +1, ... rotated by s (the rows mix the dims' moves)."""
    key = (rows, dims)
    if key not in _ORDERS:
        base = _offsets(rows)
        _ORDERS[key] = np.asarray([np.roll(base, -s) for s in range(dims)]).T
    return _ORDERS[key]


def search(z: np.ndarray, decode: DecodeFn, knobs: Mapping[str, Knob], own: np.ndarray,
           free: Mapping[int, float], rows: int, rounds: int, crosstalk: float) -> np.ndarray:  # fmt: skip
    """Closed loop for every variation's latent in ``z`` (n, Z); returns the best tokens (n, 24).

    ``decode`` runs once per round on ``n * rows`` latents (variation i's rows together).
    """
    n = len(z)
    names = list(knobs)
    centre = np.asarray([[knobs[a].start for a in names]] * n, np.float64)  # (n, S)
    step = np.asarray([[knobs[a].step for a in names]] * n, np.float64)  # (n, S)
    dims = np.asarray([knobs[a].dim for a in names], np.int64)
    cols = np.asarray([knobs[a].column for a in names], np.int64)
    signs = np.asarray([knobs[a].sign for a in names], np.float64)
    targets = np.asarray([knobs[a].target for a in names], np.float64) * signs  # rising along each dim
    order = _order(rows, len(names))
    seen_z: list[np.ndarray] = []  # per round (n, rows, S) latent values of the set dims
    seen_a: list[np.ndarray] = []  # per round (n, rows, S) decoded attributes of the set dims
    best_tokens: np.ndarray | None = None
    best_cost = np.full(n, np.inf)
    clipped = np.asarray([[knobs[a].start if knobs[a].clipped is None else knobs[a].clipped for a in names]] * n)
    for r in range(rounds):
        values = centre[:, None, :] + order[None, :, :] * step[:, None, :]  # (n, rows, S)
        if r == 0 and rows > 2:
            # A start continued past the median curve's end may overshoot: the last row tries the
            # curve's end itself instead of the farthest offset.
            far = np.abs(clipped - centre) > 0.5 * step
            values[:, -1, :] = np.where(far, clipped, values[:, -1, :])
        cand = np.repeat(z, rows, axis=0)  # (n*rows, Z)
        cand[:, dims] = values.reshape(n * rows, -1)
        attrs, tokens = decode(cand)
        c = cost(attrs, own, knobs, free, crosstalk).reshape(n, rows)
        pick = np.argmin(c, axis=1)  # first minimum: earlier rows win ties
        picked_cost = c[np.arange(n), pick]
        tokens = tokens.reshape(n, rows, -1)
        if best_tokens is None:
            best_tokens = tokens[np.arange(n), pick].copy()
            best_cost = picked_cost
        else:
            better = picked_cost < best_cost
            best_tokens[better] = tokens[np.arange(n), pick][better]
            best_cost = np.where(better, picked_cost, best_cost)
        seen_z.append(values)
        seen_a.append(attrs[:, cols].reshape(n, rows, -1) * signs)
        if len(seen_z) < rounds:
            centre, step = _next_bracket(np.concatenate(seen_z, 1), np.concatenate(seen_a, 1), targets, step, rows)
    assert best_tokens is not None
    return best_tokens


def _next_bracket(zs: np.ndarray, attrs: np.ndarray, targets: np.ndarray, step: np.ndarray,
                  rows: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Next centre and step (n, S) from every decoded row so far: zs, attrs (n, M, S)."""
    t = targets[None, None, :]
    below = attrs < t
    above = attrs > t
    inf = np.inf
    z_lo = np.where(below, zs, -inf).max(axis=1)  # highest latent still below the target
    z_hi = np.where(above, zs, inf).min(axis=1)  # lowest latent already above it
    hit = ~(below | above)
    has_hit = hit.any(axis=1)
    mean_hit = np.where(hit, zs, 0.0).sum(axis=1) / np.maximum(hit.sum(axis=1), 1)
    both = np.isfinite(z_lo) & np.isfinite(z_hi) & (z_lo < z_hi)
    # Default (a non-monotone tangle): around the row that came nearest.
    nearest = np.argmin(np.abs(attrs - t), axis=1)  # (n, S)
    centre = np.take_along_axis(zs, nearest[:, None, :], axis=1)[:, 0, :]
    width = 0.5 * step
    lo_safe, hi_safe = np.where(both, z_lo, 0.0), np.where(both, z_hi, 0.0)
    centre = np.where(both, 0.5 * (lo_safe + hi_safe), centre)
    width = np.where(both, (hi_safe - lo_safe) / (rows + 1), width)
    # All rows on one side: continue beyond the extreme row, in the direction of the target.
    only_below = ~np.isfinite(z_hi)
    only_above = ~np.isfinite(z_lo)
    top = zs.max(axis=1)
    bottom = zs.min(axis=1)
    reach = 0.5 * (rows + 1) * step
    centre = np.where(only_below & ~has_hit, top + reach, centre)
    centre = np.where(only_above & ~has_hit, bottom - reach, centre)
    centre = np.where(has_hit, mean_hit, centre)
    width = np.where(has_hit, 0.5 * step, width)
    return centre, width
