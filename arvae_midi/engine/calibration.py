"""Per-attribute calibration: latent value -> attribute statistics, and knob (0..127) -> target.

At export (or ``arvae-midi calibrate``), every regularised latent dim is swept over a grid of
values (1st to 99th percentile of the held-out means on that dim, widened by ``extend`` times
that span on each side so the decoder's extremes are on the grid); at each grid value all
held-out bars are decoded with that dim set (the other dims keep each bar's own mean) and the
attribute's median and quartiles recorded.

Knob range: knob position k targets the attribute value ``lo + k / 127 * (hi - lo)``, where
lo..hi is the attribute's 2nd..98th percentile over the *training bars* (``target_range``,
:func:`target_ranges`), so the knob covers what the music itself does, not only what the median
curve of a traversal reaches. The engine starts its search at the latent value where the median
curve's monotone fit reaches the target (clipped to the curve's range: the nearest reachable
value) and then closes the loop per bar.

Framework-free (numpy only): the exporter passes encode/decode callables backed by the exported
ONNX graph, and the engine imports :func:`knob_table` without pulling in torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.constants import KNOB_STEPS
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.metadata import Calibration
from arvae_midi.errors import ConfigError
from arvae_midi.progress import Progress, ProgressFn

DEFAULT_POINTS = 33
DEFAULT_PERCENTILES = (1.0, 99.0)
#: The latent grid is widened by this share of its percentile span on each side.
DEFAULT_EXTEND = 0.5
#: Percentiles of the training bars' attribute values that knob 0 and knob 127 target.
TARGET_PERCENTILES = (2.0, 98.0)
#: Rows per decode call while calibrating (bounds memory, keeps batches efficient).
DECODE_CHUNK = 4096

#: tokens (N, T) int64 -> mu (N, Z) float32
EncodeFn = Callable[[np.ndarray], np.ndarray]
#: z (N, Z) float32 -> tokens (N, T) int64
DecodeFn = Callable[[np.ndarray], np.ndarray]


def latent_grid(values: np.ndarray, points: int, percentiles: tuple[float, float], extend: float = 0.0) -> np.ndarray:
    """``points`` ascending values spanning the given percentiles of ``values`` (N,).

    The span is widened by ``extend`` times itself on each side. A degenerate spread (an
    untrained or collapsed dim) is widened to +-0.5 around the median so the grid stays strictly
    ascending.
    """
    lo, hi = np.percentile(values, percentiles)
    if hi - lo < 1e-3:
        mid = float(np.median(values))
        lo, hi = mid - 0.5, mid + 0.5
    pad = extend * (hi - lo)
    return np.linspace(lo - pad, hi + pad, points)


def target_ranges(
    attributes: np.ndarray, names: tuple[str, ...] = ATTRIBUTE_NAMES,
    percentiles: tuple[float, float] = TARGET_PERCENTILES,
) -> dict[str, tuple[float, float]]:
    """Knob range per attribute: the given percentiles of training-bar ``attributes`` (N, 4).

    ``attributes`` columns are in ``names`` order (the datasets store them in
    :data:`ATTRIBUTE_NAMES` order). ConfigError for an empty array.
    """
    values = np.asarray(attributes, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(names) or len(values) == 0:
        raise ConfigError(f"target ranges need (N>0, {len(names)}) attribute values, got shape {values.shape}")
    lo, hi = np.percentile(values, percentiles, axis=0)
    return {name: (float(a), float(b)) for name, a, b in zip(names, lo, hi, strict=True)}


def calibrate(
    encode: EncodeFn,
    decode: DecodeFn,
    tokens: np.ndarray,
    vocab: Vocabulary,
    attribute_dims: Mapping[str, int],
    points: int = DEFAULT_POINTS,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    progress: ProgressFn | None = None,
    targets: Mapping[str, tuple[float, float]] | None = None,
    extend: float = DEFAULT_EXTEND,
) -> dict[str, Calibration]:
    """Calibrate every regularised attribute on held-out ``tokens`` (N, 24).

    ``targets``: the knob range (knob 0, knob 127) of each attribute in attribute units, from
    the training bars (:func:`target_ranges`); an attribute missing from it spans its median
    curve. Decodes ``len(attribute_dims) * points * N`` bars in total, reported to ``progress``
    as the task "calibrating".
    """
    unknown = [a for a in attribute_dims if a not in ATTRIBUTE_NAMES]
    if unknown:
        raise ConfigError(f"cannot calibrate {', '.join(unknown)}: not a bar attribute ({', '.join(ATTRIBUTE_NAMES)})")
    if points < 2:
        raise ConfigError(f"calibration needs at least 2 grid points, got {points}")
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) == 0:
        raise ConfigError("calibration needs at least one held-out bar")
    mu = np.asarray(encode(tokens), dtype=np.float32)  # (N, Z)
    n = len(tokens)
    total, done = len(attribute_dims) * points * n, 0
    result: dict[str, Calibration] = {}
    for name, dim in attribute_dims.items():
        grid = latent_grid(mu[:, dim], points, percentiles, extend)
        # (points * N, Z): every held-out mean repeated once per grid value, the dim overwritten.
        z = np.tile(mu, (points, 1))
        z[:, dim] = np.repeat(grid, n).astype(np.float32)
        chunks = []
        for s in range(0, len(z), DECODE_CHUNK):
            chunks.append(np.asarray(decode(z[s : s + DECODE_CHUNK]), dtype=np.int64))
            done += len(chunks[-1])
            if progress is not None:
                progress(Progress("calibrating", done, total))
        decoded = np.concatenate(chunks)
        attr = compute_attributes(decoded, vocab)[:, ATTRIBUTE_NAMES.index(name)].reshape(points, n)
        q25, median, q75 = np.percentile(attr, [25, 50, 75], axis=1)
        result[name] = Calibration(
            dim=int(dim),
            latent=[float(v) for v in grid],
            median=[float(v) for v in median],
            q25=[float(v) for v in q25],
            q75=[float(v) for v in q75],
            bars=n,
            target_range=[float(v) for v in targets[name]] if targets and name in targets else [],
        )
    return result


def _oriented(cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(latent, monotone median fit) along the grid, oriented so the attribute rises."""
    latent = np.asarray(cal.latent, dtype=np.float64)
    median = np.asarray(cal.median, dtype=np.float64)
    if np.polyfit(latent, median, 1)[0] < 0:
        latent, median = latent[::-1], median[::-1]
    return latent, isotonic_fit(median)


def knob_targets(cal: Calibration, steps: int = KNOB_STEPS) -> np.ndarray:
    """Attribute value every knob position asks for, shape (steps,), float32, non-decreasing.

    Evenly spaced over ``cal.target_range`` (the training bars' 2nd..98th percentile); files
    without it span the median curve's monotone fit instead.
    """
    if cal.target_range:
        lo, hi = cal.target_range
    else:
        _, envelope = _oriented(cal)
        lo, hi = float(envelope[0]), float(envelope[-1])
    return (lo + (hi - lo) * np.arange(steps) / (steps - 1)).astype(np.float32)


class CurveInverse:
    """Attribute value -> latent value along the median curve's monotone fit (precomputed).

    Targets beyond the curve's range map to its end (the nearest value the median bar reaches);
    a target on a plateau maps to the plateau's start. A flat curve (no control) maps the
    knob range linearly over the latent grid.
    """

    def __init__(self, cal: Calibration, extrapolate: float = 0.0) -> None:
        """``extrapolate``: targets beyond the curve's range continue along its mean slope for at
        most this share of the latent grid's span past its end (0 = clip at the end)."""
        latent, envelope = _oriented(cal)
        lo, hi = envelope[0], envelope[-1]
        self.flat = bool(hi - lo < 1e-9)
        self.latent = latent
        if self.flat:
            tlo, thi = cal.target_range or [0.0, 1.0]
            self.abscissa = np.asarray([tlo, thi if thi > tlo else tlo + 1.0])
            self.latent = np.asarray([latent[0], latent[-1]])
        else:
            # A tiny ramp turns plateaus into a strictly increasing abscissa for np.interp.
            self.abscissa = envelope + np.arange(len(envelope)) * (hi - lo) * 1e-9
        span = float(self.latent[-1] - self.latent[0])
        self.slope = span / float(self.abscissa[-1] - self.abscissa[0])  # latent per attribute unit
        self.reach = abs(extrapolate * span)

    def clipped(self, targets: np.ndarray) -> np.ndarray:
        """Latent values (float64) without the continuation past the curve's ends."""
        return np.asarray(np.interp(targets, self.abscissa, self.latent), dtype=np.float64)

    def __call__(self, targets: np.ndarray) -> np.ndarray:
        """Latent values (float64, shape of ``targets``)."""
        t = np.asarray(targets, dtype=np.float64)
        z = np.asarray(np.interp(t, self.abscissa, self.latent), dtype=np.float64)
        if self.reach > 0:
            # Beyond the median bar's range a given bar may still go on (the median curve of a
            # decoder saturates where many bars do): continue along the mean slope, bounded.
            past = np.clip(t - self.abscissa[-1], 0, None) + np.clip(t - self.abscissa[0], None, 0)
            z = z + np.clip(past * self.slope, -self.reach, self.reach)
        return z


def latent_for(cal: Calibration, targets: np.ndarray) -> np.ndarray:
    """Latent values (float64, shape of ``targets``) where the median curve's fit reaches them
    (:class:`CurveInverse`; build one to invert many times)."""
    return CurveInverse(cal)(np.asarray(targets, dtype=np.float64))


def knob_table(cal: Calibration, steps: int = KNOB_STEPS) -> np.ndarray:
    """Latent value of every knob position, shape (steps,), float32 (the search's start point).

    :func:`latent_for` of :func:`knob_targets`: the latent value moves one way as the knob
    turns, oriented so the attribute rises with the knob even if the model learned the dim
    upside down.
    """
    targets = knob_targets(cal, steps)
    if not cal.target_range and float(targets[-1] - targets[0]) < 1e-9:
        return np.linspace(cal.latent[0], cal.latent[-1], steps).astype(np.float32)
    return latent_for(cal, targets).astype(np.float32)


def isotonic_fit(values: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of ``values`` (n,) (pool adjacent violators)."""
    means: list[float] = []
    counts: list[int] = []
    for v in np.asarray(values, dtype=np.float64):
        means.append(float(v))
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:  # merge a violating pair into its mean
            m2, c2, m1, c1 = means.pop(), counts.pop(), means.pop(), counts.pop()
            means.append((m1 * c1 + m2 * c2) / (c1 + c2))
            counts.append(c1 + c2)
    return np.repeat(means, counts)


def knob_attribute(cal: Calibration, steps: int = KNOB_STEPS) -> np.ndarray:
    """Target attribute value of every knob position, (steps,) float32 (:func:`knob_targets`)."""
    return knob_targets(cal, steps)
