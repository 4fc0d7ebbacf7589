"""Per-attribute calibration: latent value -> attribute statistics, and knob (0..127) -> latent value.

At export, every regularised latent dim is swept over a grid of values (1st to 99th percentile of
the held-out means on that dim); at each grid value all held-out bars are decoded with that dim
set (the other dims keep each bar's own mean) and the attribute's median and quartiles recorded.
The engine inverts the median curve so that a knob position maps onto the attribute's calibrated
range: knob 0 gives the lowest median, knob 127 the highest, monotonically in between.

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
#: Rows per decode call while calibrating (bounds memory, keeps batches efficient).
DECODE_CHUNK = 4096

#: tokens (N, T) int64 -> mu (N, Z) float32
EncodeFn = Callable[[np.ndarray], np.ndarray]
#: z (N, Z) float32 -> tokens (N, T) int64
DecodeFn = Callable[[np.ndarray], np.ndarray]


def latent_grid(values: np.ndarray, points: int, percentiles: tuple[float, float]) -> np.ndarray:
    """``points`` ascending values spanning the given percentiles of ``values`` (N,).

    A degenerate spread (an untrained or collapsed dim) is widened to +-0.5 around the median so
    the grid stays strictly ascending.
    """
    lo, hi = np.percentile(values, percentiles)
    if hi - lo < 1e-3:
        mid = float(np.median(values))
        lo, hi = mid - 0.5, mid + 0.5
    return np.linspace(lo, hi, points)


def calibrate(
    encode: EncodeFn,
    decode: DecodeFn,
    tokens: np.ndarray,
    vocab: Vocabulary,
    attribute_dims: Mapping[str, int],
    points: int = DEFAULT_POINTS,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    progress: ProgressFn | None = None,
) -> dict[str, Calibration]:
    """Calibrate every regularised attribute on held-out ``tokens`` (N, 24).

    Decodes ``len(attribute_dims) * points * N`` bars in total, reported to ``progress`` as the
    task "calibrating".
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
        grid = latent_grid(mu[:, dim], points, percentiles)
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
        )
    return result


def knob_table(cal: Calibration, steps: int = KNOB_STEPS) -> np.ndarray:
    """Latent value of every knob position, shape (steps,), float32.

    Knob position k targets the attribute value ``lo + k / (steps - 1) * (hi - lo)``, where lo..hi
    is the range of the median curve's monotone (isotonic) fit, and returns the latent value where
    the fit first reaches that target (linear interpolation between grid points), so the latent
    value moves one way as the knob turns. The curve is oriented so the attribute rises with the
    knob even if the model learned the dim upside down; a flat curve (no control) spreads the
    knob linearly over the latent grid.
    """
    latent = np.asarray(cal.latent, dtype=np.float64)
    median = np.asarray(cal.median, dtype=np.float64)
    if np.polyfit(latent, median, 1)[0] < 0:
        latent, median = latent[::-1], median[::-1]
    envelope = isotonic_fit(median)  # non-decreasing along the oriented grid
    lo, hi = envelope[0], envelope[-1]
    if hi - lo < 1e-9:
        return np.linspace(latent[0], latent[-1], steps).astype(np.float32)
    # A tiny ramp turns plateaus into a strictly increasing abscissa for np.interp; a target on a
    # plateau then maps to the plateau's start, where the curve first reaches it.
    strict = envelope + np.arange(len(envelope)) * (hi - lo) * 1e-9
    targets = lo + (hi - lo) * np.arange(steps) / (steps - 1)
    return np.interp(targets, strict, latent).astype(np.float32)


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
    """Median attribute of the calibration at every knob position's latent value, (steps,) float32.

    Interpolates the measured median curve itself, so it can dip where the curve does.
    """
    table = knob_table(cal, steps).astype(np.float64)
    return np.interp(table, cal.latent, cal.median).astype(np.float32)
