"""Disentanglement metrics with the dMelodies / disentanglement_lib definitions (discrete factors).

Inputs: ``latents`` (N, Z) float and ``factors`` (N, K) integer factor indices (floats holding
integers are accepted). Definitions (docs/reference.md §3.4, §4):

* latents are discretised per dim into **20 equal-width histogram bins**;
* **MIG**: discrete MI (``mutual_info_score``, nats) of binned latents with each factor,
  gap of the two best dims over H(factor) = MI(factor, factor);
* **Modularity**: Ridgeway & Zemel from the binned MI on the first 60% of the points;
  **explicitness**: ``LogisticRegression`` on z-scored codes, ROC-AUC on the first 60% (train)
  and the last 40% (test);
* **SAP** (discrete): ``LinearSVC(C=0.01, class_weight="balanced")`` per (latent dim, factor) on
  that one dim, trained on the first 60%, accuracy on the last 40%; gap of the two best dims.

The train/test cut is positional, as in the reference: shuffle the points first when their order
carries structure (dMelodies' index order varies the factors systematically). The classifier-based
scores run on at most ``max_train`` / ``max_test`` points of each part (10,000 / 5,000, the
disentanglement_lib ``num_train`` / ``num_test``) so that the 288 SVC fits of a 32-dim, 9-factor
code stay within seconds; the classifiers get ``random_state=0`` for reproducibility.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from arvae_midi.train.metrics import check_arrays, modularity_from_mi

NUM_BINS = 20
TRAIN_FRACTION = 0.6
MAX_TRAIN = 10_000
MAX_TEST = 5_000


def histogram_discretize(latents: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """(N, Z) bin index 1..num_bins per latent dim, from ``np.histogram`` edges of that dim."""
    z = np.asarray(latents, dtype=np.float64)
    out = np.zeros(z.shape, dtype=np.int64)
    for i in range(z.shape[1]):
        edges = np.histogram(z[:, i], num_bins)[1]
        out[:, i] = np.digitize(z[:, i], edges[:-1])
    return out


def _factor_codes(factors: np.ndarray) -> np.ndarray:
    """(N, K) int factor indices; rejects non-integer values."""
    y = np.asarray(factors)
    if y.ndim == 1:
        y = y[:, None]
    yi = np.rint(y).astype(np.int64)
    if not np.array_equal(yi, y):
        raise ValueError("factors must hold integer class indices")
    return yi


def discrete_mi_matrix(binned: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(Z, K) discrete MI (nats) between binned latents and integer factors."""
    from sklearn.metrics import mutual_info_score

    y = _factor_codes(factors)
    return np.array(
        [[mutual_info_score(y[:, j], binned[:, i]) for j in range(y.shape[1])] for i in range(binned.shape[1])]
    )


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """(K,) entropy (nats) of each integer factor, as MI(factor, factor)."""
    from sklearn.metrics import mutual_info_score

    y = _factor_codes(factors)
    return np.array([mutual_info_score(y[:, j], y[:, j]) for j in range(y.shape[1])])


def mig_discrete(latents: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> tuple[np.ndarray, float]:
    """disentanglement_lib MIG: ``(gap_j / H_j per factor (K,), mean)``; a constant factor scores 0."""
    z, _ = check_arrays(latents, factors)
    y = _factor_codes(factors)
    mi = discrete_mi_matrix(histogram_discretize(z, num_bins), y)
    top = np.sort(mi, axis=0)[::-1]
    h = discrete_entropy(y)
    per = np.zeros(y.shape[1])
    np.divide(top[0] - top[1], h, out=per, where=h > 0)
    return per, float(per.mean())


def _split(n: int, train_fraction: float, max_train: int, max_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Positional split: first ``train_fraction`` / the rest, each truncated to its cap."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    cut = int(round(n * train_fraction))
    if cut < 2 or n - cut < 1:
        raise ValueError(f"{n} points are too few for a {train_fraction:.0%} train split")
    train = np.arange(cut)[:max_train]
    test = np.arange(cut, n)[:max_test]
    return train, test


def modularity_discrete(
    latents: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS, train_fraction: float = TRAIN_FRACTION
) -> tuple[np.ndarray, float]:
    """Modularity on the binned MI of the first ``train_fraction`` points: ``(per latent (Z,), mean)``."""
    z, _ = check_arrays(latents, factors)
    y = _factor_codes(factors)
    train, _ = _split(len(z), train_fraction, len(z), len(z))
    # Bins come from the training part only, as disentanglement_lib discretises mus_train.
    mi = discrete_mi_matrix(histogram_discretize(z[train], num_bins), y[train])
    return modularity_from_mi(mi)


def _auc_ovr(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Macro ROC-AUC over one-vs-rest columns that have both classes present (NaN if none)."""
    from sklearn.metrics import roc_auc_score

    scores = []
    for c, cls in enumerate(classes):
        positive = y == cls
        if 0 < positive.sum() < len(y):
            scores.append(roc_auc_score(positive, proba[:, c]))
    return float(np.mean(scores)) if scores else float("nan")


def _quiet() -> None:
    """Inside ``warnings.catch_warnings()``: silence what sklearn says about small or many-class fits."""
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    # Small evaluation sets make sklearn guess "regression target?" for many-class factors.
    warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)


def explicitness(
    latents: np.ndarray,
    factors: np.ndarray,
    train_fraction: float = TRAIN_FRACTION,
    max_train: int = MAX_TRAIN,
    max_test: int = MAX_TEST,
) -> dict[str, float]:
    """Ridgeway & Zemel explicitness: mean ROC-AUC of a per-factor logistic regression.

    Codes are z-scored with the training mean/std. Returns ``{"train": auc, "test": auc}``
    averaged over factors with at least two classes in training (a one-class factor is skipped).
    """
    from sklearn.linear_model import LogisticRegression

    z, _ = check_arrays(latents, factors)
    y = _factor_codes(factors)
    train, test = _split(len(z), train_fraction, max_train, max_test)
    mean = z[train].mean(axis=0)
    std = z[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (z[train] - mean) / std, (z[test] - mean) / std
    auc_train, auc_test = [], []
    for j in range(y.shape[1]):
        y_train, y_test = y[train, j], y[test, j]
        if len(np.unique(y_train)) < 2:
            continue
        with warnings.catch_warnings():
            _quiet()
            clf = LogisticRegression().fit(x_train, y_train)
        auc_train.append(_auc_ovr(y_train, clf.predict_proba(x_train), clf.classes_))
        auc_test.append(_auc_ovr(y_test, clf.predict_proba(x_test), clf.classes_))
    return {"train": float(np.nanmean(auc_train)) if auc_train else float("nan"),
            "test": float(np.nanmean(auc_test)) if auc_test else float("nan")}  # fmt: skip


def sap_discrete(
    latents: np.ndarray,
    factors: np.ndarray,
    train_fraction: float = TRAIN_FRACTION,
    max_train: int = MAX_TRAIN,
    max_test: int = MAX_TEST,
) -> tuple[np.ndarray, float]:
    """dMelodies SAP: test accuracy of a 1-D ``LinearSVC`` per (dim, factor); ``(gap per factor, mean)``.

    A factor with one class in the training part is predicted as that class (accuracy = its share
    of the test part) for every dim, so its gap is 0.
    """
    from sklearn.svm import LinearSVC

    z, _ = check_arrays(latents, factors)
    y = _factor_codes(factors)
    train, test = _split(len(z), train_fraction, max_train, max_test)
    score = np.zeros((z.shape[1], y.shape[1]))
    for j in range(y.shape[1]):
        y_train, y_test = y[train, j], y[test, j]
        classes = np.unique(y_train)
        for i in range(z.shape[1]):
            if len(classes) < 2:
                score[i, j] = float((y_test == classes[0]).mean())
                continue
            with warnings.catch_warnings():
                _quiet()
                clf = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
                clf.fit(z[train, i : i + 1], y_train)
            score[i, j] = float((clf.predict(z[test, i : i + 1]) == y_test).mean())
    top = np.sort(score, axis=0)[::-1]
    per = top[0] - top[1]
    return per, float(per.mean())


def dmelodies_metrics(
    latents: np.ndarray,
    factors: np.ndarray,
    names: Sequence[str] | None = None,
    with_explicitness: bool = True,
) -> dict[str, Any]:
    """MIG, Modularity (+ explicitness) and SAP with the dMelodies definitions, JSON-ready.

    Keys: ``mig`` and ``sap`` {mean, per_attribute}, ``modularity`` {mean} (+ ``explicitness``
    {train, test}). ``names`` label the K factors (default ``f0, f1, ...``).
    """
    z, _ = check_arrays(latents, factors)
    y = _factor_codes(factors)
    names = list(names) if names is not None else [f"f{j}" for j in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} names for {y.shape[1]} factors")
    mig_per, mig = mig_discrete(z, y)
    sap_per, sap = sap_discrete(z, y)
    result: dict[str, Any] = {
        "mig": {"mean": mig, "per_attribute": {n: float(v) for n, v in zip(names, mig_per, strict=True)}},
        "sap": {"mean": sap, "per_attribute": {n: float(v) for n, v in zip(names, sap_per, strict=True)}},
    }
    if y.shape[1] >= 2:
        result["modularity"] = {"mean": modularity_discrete(z, y)[1]}
    if with_explicitness:
        result["explicitness"] = explicitness(z, y)
    return result
