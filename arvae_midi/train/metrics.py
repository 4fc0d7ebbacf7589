"""Disentanglement metrics with the AR-VAE definitions (continuous attributes), on plain arrays.

Inputs everywhere: ``latents`` (N, Z) float (sampled z or posterior means) and ``labels``
(N, K) float (attribute values). Definitions follow ``ashispati/ar-vae:utils/evaluation.py``
(docs/reference.md §1.7):

* **Interpretability**: per attribute, the latent dim with the highest kNN mutual information,
  then R^2 of a 1-D linear regression of the attribute on that dim;
* **MIG** (continuous): kNN MI matrix, normalised by a kNN "self-MI" of each attribute;
* **Modularity** (Ridgeway & Zemel) from the same MI matrix;
* **SAP** (continuous): squared Pearson correlation, gap between the two best dims;
* **SCC**: Spearman |rho| (0 where p > 0.05), best dim per attribute;
* **token accuracy** of greedy reconstructions.

Differences from the reference, all for speed or reproducibility:

* the kNN estimators (sklearn ``mutual_info_regression``, k = 3) get ``random_state=seed``; the
  reference leaves them unseeded, so its numbers vary slightly from run to run;
* the kNN MI runs on at most ``max_points`` (default 10,000) points drawn without replacement by a
  seeded generator; the cheap statistics (R^2, Pearson, Spearman) use every point;
* R^2 of a 1-D least-squares fit with intercept is computed in closed form as the squared
  Pearson correlation (what ``LinearRegression().score`` returns on the training data).

The dMelodies / disentanglement_lib definitions for discrete factors live in
:mod:`arvae_midi.train.metrics_dl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

#: Default cap on points fed to the kNN MI estimator: O(N log N) per (dim, attribute) pair,
#: ~7 s for 10k points x 32 dims x 4 attributes on one core.
KNN_MAX_POINTS = 10_000
#: Neighbours of the kNN MI estimator (the sklearn default, as in the reference).
KNN_NEIGHBORS = 3
#: Spearman correlations with a larger p-value count as 0 in SCC.
SCC_ALPHA = 0.05
#: Variances at or below this count as constant (the reference's SAP guard).
_VAR_EPS = 1e-12


@dataclass(frozen=True)
class MetricSettings:
    """Knobs of the estimators; the defaults are what ``evaluate`` uses."""

    max_points: int = KNN_MAX_POINTS  # cap for the kNN MI estimator (seeded subsample)
    n_neighbors: int = KNN_NEIGHBORS
    seed: int = 0  # seeds the subsample and the estimator's jitter
    scc_alpha: float = SCC_ALPHA


def check_arrays(latents: np.ndarray, labels: np.ndarray, min_points: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float64: (N, Z) latents and (N, K) labels with equal N >= ``min_points``."""
    z = np.asarray(latents, dtype=np.float64)
    a = np.asarray(labels, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if z.ndim != 2 or a.ndim != 2:
        raise ValueError(f"latents must be (N, Z) and labels (N, K), got {z.shape} and {a.shape}")
    if len(z) != len(a):
        raise ValueError(f"latents and labels disagree on N: {len(z)} vs {len(a)}")
    if len(z) < min_points:
        raise ValueError(f"need at least {min_points} points, got {len(z)}")
    if z.shape[1] < 2:
        raise ValueError(f"gap metrics need at least 2 latent dims, got {z.shape[1]}")
    if not (np.isfinite(z).all() and np.isfinite(a).all()):
        raise ValueError("latents and labels must be finite")
    return z, a


def subsample_indices(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded draw of ``min(n, max_points)`` of ``n`` points, without replacement."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def knn_mi_matrix(
    latents: np.ndarray, labels: np.ndarray, settings: MetricSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """kNN mutual information (nats) between every latent dim and every attribute.

    Returns ``(mi, entropy)``: ``mi`` (Z, K) from ``mutual_info_regression(z, a_j)`` and
    ``entropy`` (K,) the reference's stand-in for H(a_j), ``mutual_info_regression(a_j, a_j)``.
    Both on the same seeded subsample of at most ``settings.max_points`` points.
    """
    from sklearn.feature_selection import mutual_info_regression

    s = settings or MetricSettings()
    z, a = check_arrays(latents, labels, min_points=s.n_neighbors + 2)
    idx = subsample_indices(len(z), s.max_points, s.seed)
    z, a = z[idx], a[idx]
    mi = np.zeros((z.shape[1], a.shape[1]))
    entropy = np.zeros(a.shape[1])
    for j in range(a.shape[1]):
        target = a[:, j]
        mi[:, j] = mutual_info_regression(z, target, n_neighbors=s.n_neighbors, random_state=s.seed)
        entropy[j] = mutual_info_regression(target[:, None], target, n_neighbors=s.n_neighbors, random_state=s.seed)[0]
    return mi, entropy


def _pearson_matrix(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(Z, K) Pearson correlations, 0 where either side is constant."""
    zc = z - z.mean(axis=0)
    ac = a - a.mean(axis=0)
    zs = np.sqrt((zc**2).sum(axis=0))
    as_ = np.sqrt((ac**2).sum(axis=0))
    cov = zc.T @ ac
    denom = zs[:, None] * as_[None, :]
    n = len(z)
    # Constant columns: sum of squares <= n * eps (variance guard of the reference, ddof aside).
    ok = (zs[:, None] ** 2 > n * _VAR_EPS) & (as_[None, :] ** 2 > n * _VAR_EPS)
    r = np.zeros_like(cov)
    np.divide(cov, denom, out=r, where=ok)
    return np.clip(r, -1.0, 1.0)


def _gaps(score: np.ndarray) -> np.ndarray:
    """Per column (attribute): largest minus second largest entry over rows (latent dims)."""
    top = np.sort(score, axis=0)[::-1]
    gaps: np.ndarray = top[0] - top[1]
    return gaps


def interpretability(
    latents: np.ndarray, labels: np.ndarray, mi: np.ndarray | None = None, settings: MetricSettings | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """AR-VAE Interpretability: ``(dims (K,) int, r2 (K,), mean r2)``.

    ``dims[j]`` is the latent dim of highest kNN MI with attribute j (found, not assumed to be the
    regularised one); ``r2[j]`` the R^2 of attribute j regressed linearly on that dim alone.
    Pass ``mi`` from :func:`knn_mi_matrix` to reuse it.
    """
    z, a = check_arrays(latents, labels)
    if mi is None:
        mi, _ = knn_mi_matrix(z, a, settings)
    dims = np.argmax(mi, axis=0)
    r = _pearson_matrix(z, a)
    r2 = r[dims, np.arange(a.shape[1])] ** 2
    return dims.astype(np.int64), r2, float(r2.mean())


def mig_continuous(
    latents: np.ndarray,
    labels: np.ndarray,
    mi: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
    settings: MetricSettings | None = None,
) -> tuple[np.ndarray, float]:
    """AR-VAE MIG without binning: ``(gap_j / H_j per attribute (K,), mean)``.

    MI and the entropy stand-in come from the kNN estimator (:func:`knn_mi_matrix`); an attribute
    whose entropy estimate is <= 0 (constant) scores 0.
    """
    if mi is None or entropy is None:
        mi, entropy = knn_mi_matrix(latents, labels, settings)
    per = np.zeros(mi.shape[1])
    np.divide(_gaps(mi), entropy, out=per, where=entropy > 0)
    return per, float(per.mean())


def modularity_from_mi(mi: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridgeway & Zemel modularity from a (Z, K) MI matrix: ``(score per latent (Z,), mean)``.

    Per latent i: theta = max_j m_ij^2, delta = (sum_j m_ij^2 - theta) / (theta (K - 1)),
    score = 1 - delta, or 0 when theta = 0. It only asks whether each latent depends on *one*
    attribute, whatever the strength: a latent carrying faint information about one attribute
    scores as high as a perfectly informative one, so a random code does not score near 0 (its
    per-latent scores are set by estimator noise: 0 where all MI estimates clip to 0, near 1 where
    one noisy estimate dominates), and uninformative extra dims pull a perfect code below 1.
    """
    m2 = np.asarray(mi, dtype=np.float64) ** 2
    if m2.ndim != 2 or m2.shape[1] < 2:
        raise ValueError(f"modularity needs a (Z, K) MI matrix with K >= 2, got shape {m2.shape}")
    theta = m2.max(axis=1)
    k = m2.shape[1]
    delta = np.zeros_like(theta)
    np.divide(m2.sum(axis=1) - theta, theta * (k - 1), out=delta, where=theta > 0)
    score = np.where(theta > 0, 1.0 - delta, 0.0)
    return score, float(score.mean())


def sap_continuous(latents: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """AR-VAE SAP: squared Pearson correlation S[i, j]; ``(best - second best over dims (K,), mean)``."""
    z, a = check_arrays(latents, labels)
    per = _gaps(_pearson_matrix(z, a) ** 2)
    return per, float(per.mean())


def spearman_matrix(latents: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho (Z, K) and two-sided p-values, as ``scipy.stats.spearmanr`` computes them.

    Ties get average ranks; a constant column has rho = 0 and p = 1 (scipy gives NaN).
    """
    z, a = check_arrays(latents, labels)
    rho = _pearson_matrix(stats.rankdata(z, axis=0), stats.rankdata(a, axis=0))
    n = len(z)
    dof = n - 2
    # t statistic of a correlation with n - 2 degrees of freedom (scipy's spearmanr p-value).
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rho * np.sqrt(dof / ((1.0 - rho) * (1.0 + rho)))
    p = np.where(np.abs(rho) >= 1.0, 0.0, 2.0 * stats.t.sf(np.abs(np.nan_to_num(t, posinf=0.0)), dof))
    p = np.where(rho == 0.0, 1.0, p)
    return rho, p


def scc(latents: np.ndarray, labels: np.ndarray, alpha: float = SCC_ALPHA) -> tuple[np.ndarray, float]:
    """Spearman correlation coefficient metric: ``(max_i |rho_ij| with p <= alpha (K,), mean)``."""
    rho, p = spearman_matrix(latents, labels)
    s = np.where(p <= alpha, np.abs(rho), 0.0)
    per = s.max(axis=0)
    return per, float(per.mean())


def token_accuracy(predicted: np.ndarray, target: np.ndarray) -> float:
    """Fraction of equal tokens between (N, T) predictions and targets (every token counts)."""
    pred = np.asarray(predicted)
    tgt = np.asarray(target)
    if pred.shape != tgt.shape or pred.ndim != 2:
        raise ValueError(f"predicted and target must both be (N, T), got {pred.shape} and {tgt.shape}")
    if pred.size == 0:
        raise ValueError("token_accuracy needs at least one token")
    return float((pred == tgt).mean())


def _per_name(values: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {name: float(v) for name, v in zip(names, values, strict=True)}


def ar_vae_metrics(
    latents: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str] | None = None,
    settings: MetricSettings | None = None,
) -> dict[str, Any]:
    """All five AR-VAE metrics as a JSON-ready dict.

    Keys: ``interpretability`` {mean, per_attribute, dims}, ``mig``, ``sap``, ``scc``
    {mean, per_attribute}, ``modularity`` {mean}. ``names`` label the K attributes
    (default ``a0, a1, ...``). The kNN MI matrix is computed once and shared.
    """
    s = settings or MetricSettings()
    z, a = check_arrays(latents, labels, min_points=s.n_neighbors + 2)
    names = list(names) if names is not None else [f"a{j}" for j in range(a.shape[1])]
    if len(names) != a.shape[1]:
        raise ValueError(f"{len(names)} names for {a.shape[1]} attributes")
    mi, entropy = knn_mi_matrix(z, a, s)
    dims, r2, interp = interpretability(z, a, mi=mi)
    mig_per, mig = mig_continuous(z, a, mi=mi, entropy=entropy)
    sap_per, sap = sap_continuous(z, a)
    scc_per, scc_mean = scc(z, a, alpha=s.scc_alpha)
    result: dict[str, Any] = {
        "interpretability": {
            "mean": interp,
            "per_attribute": _per_name(r2, names),
            "dims": {name: int(d) for name, d in zip(names, dims, strict=True)},
        },
        "mig": {"mean": mig, "per_attribute": _per_name(mig_per, names)},
        "sap": {"mean": sap, "per_attribute": _per_name(sap_per, names)},
        "scc": {"mean": scc_mean, "per_attribute": _per_name(scc_per, names)},
    }
    if a.shape[1] >= 2:
        result["modularity"] = {"mean": modularity_from_mi(mi)[1]}
    return result
