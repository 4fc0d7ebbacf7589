"""Sanity cases with known answers for the AR-VAE and dMelodies disentanglement metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from arvae_midi.train import metrics as ar
from arvae_midi.train import metrics_dl as dl

N = 1000
SETTINGS = ar.MetricSettings(max_points=N, seed=0)


def _attributes(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(n, 4))


def _linear_code(a: np.ndarray, rng: np.random.Generator, noise_dims: int = 4) -> np.ndarray:
    """Each of the first K dims an affine function of one attribute (shuffled order), then noise."""
    code = np.stack([3.0 * a[:, 2] + 1, -a[:, 0], 0.5 * a[:, 3], 2.0 * a[:, 1] - 4], axis=1)
    return np.concatenate([code, rng.normal(size=(len(a), noise_dims))], axis=1)


def _monotone_code(a: np.ndarray, rng: np.random.Generator, noise_dims: int = 4) -> np.ndarray:
    """Nonlinear but strictly monotone functions of one attribute each, then noise."""
    code = np.stack([np.tanh(a[:, 0]), a[:, 1] ** 3, np.exp(a[:, 2]), -a[:, 3]], axis=1)
    return np.concatenate([code, rng.normal(size=(len(a), noise_dims))], axis=1)


def test_perfect_linear_code_scores_one(rng: np.random.Generator) -> None:
    a = _attributes(rng)
    z = _linear_code(a, rng)
    r = ar.ar_vae_metrics(z, a, names=["w", "x", "y", "v"], settings=SETTINGS)
    assert r["interpretability"]["dims"] == {"w": 1, "x": 3, "y": 0, "v": 2}
    assert r["interpretability"]["mean"] > 0.999
    assert r["sap"]["mean"] > 0.99
    assert r["scc"]["mean"] > 0.999
    assert r["mig"]["mean"] > 0.9
    # Noise dims hold no information: their modularity is set by estimator noise (documented).
    assert ar.modularity_from_mi(ar.knn_mi_matrix(z[:, :4], a, SETTINGS)[0])[1] > 0.99


def test_perfect_monotone_code_rank_metrics(rng: np.random.Generator) -> None:
    a = _attributes(rng)
    z = _monotone_code(a, rng)
    mi, h = ar.knn_mi_matrix(z, a, SETTINGS)
    assert list(np.argmax(mi, axis=0)) == [0, 1, 2, 3]
    assert ar.scc(z, a)[1] == pytest.approx(1.0)
    assert ar.mig_continuous(z, a, mi=mi, entropy=h)[1] > 0.85
    # Interpretability and SAP are linear: a cube or exp costs some R^2 but stays high.
    assert ar.interpretability(z, a, mi=mi)[2] > 0.85


def test_random_code_scores_zero(rng: np.random.Generator) -> None:
    a = _attributes(rng)
    z = rng.normal(size=(N, 8))
    r = ar.ar_vae_metrics(z, a, settings=SETTINGS)
    for key in ("interpretability", "mig", "sap", "scc"):
        assert r[key]["mean"] < 0.1, key
    # Modularity is scale-free per latent, so a random code does not score near 0.
    assert 0.0 <= r["modularity"]["mean"] <= 1.0


def test_latent_permutation_invariance(rng: np.random.Generator) -> None:
    a = _attributes(rng)
    z = _monotone_code(a, rng)
    perm = rng.permutation(z.shape[1])
    r1 = ar.ar_vae_metrics(z, a, settings=SETTINGS)
    r2 = ar.ar_vae_metrics(z[:, perm], a, settings=SETTINGS)
    for key in ("interpretability", "mig", "sap", "scc", "modularity"):
        assert r1[key]["mean"] == pytest.approx(r2[key]["mean"], abs=1e-6), key
    inverse = np.argsort(perm)
    assert [inverse[d] for d in r1["interpretability"]["dims"].values()] == list(
        r2["interpretability"]["dims"].values()
    )


def test_knn_estimator_is_seeded(rng: np.random.Generator) -> None:
    a = _attributes(rng, 3000)
    z = _monotone_code(a, rng)
    s = ar.MetricSettings(max_points=500, seed=3)
    m1, h1 = ar.knn_mi_matrix(z, a, s)
    m2, h2 = ar.knn_mi_matrix(z, a, s)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(h1, h2)
    assert not np.array_equal(m1, ar.knn_mi_matrix(z, a, ar.MetricSettings(max_points=500, seed=4))[0])


def test_scc_hand_computed() -> None:
    a = np.arange(10.0)
    # Neighbours swapped pairwise: sum d^2 = 10, rho = 1 - 6*10/(10*99).
    z = np.stack([a.reshape(5, 2)[:, ::-1].ravel(), np.zeros(10)], axis=1)
    per, mean = ar.scc(z, a)
    assert mean == pytest.approx(1 - 60 / 990)
    # n = 5, one swap of each pair but the last: rho = 0.8, p = 0.104 > 0.05 -> does not count.
    z5 = np.array([[2.0, 0.0], [1.0, 0.0], [4.0, 0.0], [3.0, 0.0], [5.0, 0.0]])
    a5 = np.arange(1.0, 6.0)
    rho, p = ar.spearman_matrix(z5, a5)
    ref = stats.spearmanr(z5[:, 0], a5)
    assert rho[0, 0] == pytest.approx(0.8) and p[0, 0] == pytest.approx(ref.pvalue)
    assert ar.scc(z5, a5)[1] == 0.0
    assert ar.scc(z5, a5, alpha=0.2)[1] == pytest.approx(0.8)


def test_spearman_matches_scipy_with_ties(rng: np.random.Generator) -> None:
    z = rng.integers(0, 4, size=(50, 3)).astype(float)
    a = z[:, :1] + rng.integers(0, 3, size=(50, 1))
    rho, p = ar.spearman_matrix(z, a)
    for i in range(3):
        ref = stats.spearmanr(z[:, i], a[:, 0])
        assert rho[i, 0] == pytest.approx(ref.statistic) and p[i, 0] == pytest.approx(ref.pvalue)


def test_sap_continuous_hand_computed() -> None:
    a = np.array([0.0, 1.0, 2.0, 3.0])
    # r^2 = 1, 0.64 (cov 4 / 5), 0 -> SAP = 1 - 0.64.
    z = np.array([[0, 0, 1], [1, 1, 0], [2, 3, 0], [3, 2, 1]], dtype=float)
    per, mean = ar.sap_continuous(z, a)
    assert mean == pytest.approx(0.36)
    # A constant dim scores 0 instead of dividing by zero.
    assert ar.sap_continuous(np.c_[z[:, :1], np.ones(4)], a)[1] == pytest.approx(1.0)


def test_modularity_hand_computed() -> None:
    mi = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # Latent 0: one factor -> 1; latent 1: theta 1, (2 - 1)/(1 * 2) -> 0.5; latent 2: all zero -> 0.
    per, mean = ar.modularity_from_mi(mi)
    np.testing.assert_allclose(per, [1.0, 0.5, 0.0])
    assert mean == pytest.approx(0.5)


def test_token_accuracy() -> None:
    assert ar.token_accuracy(np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 0]])) == 0.75
    with pytest.raises(ValueError):
        ar.token_accuracy(np.zeros((2, 3)), np.zeros((2, 4)))


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="disagree"):
        ar.sap_continuous(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="finite"):
        ar.scc(np.full((5, 2), np.nan), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="integer"):
        dl.mig_discrete(np.zeros((5, 2)), np.full((5, 1), 0.5))


# --- dMelodies / disentanglement_lib definitions -------------------------------------------


def _factors(rng: np.random.Generator, n: int = N) -> np.ndarray:
    return np.stack([rng.integers(0, 2, n), rng.integers(0, 5, n), rng.integers(0, 3, n)], axis=1)


def test_histogram_discretize() -> None:
    z = np.linspace(0.0, 1.0, 41)[:, None]
    b = dl.histogram_discretize(z, 20)
    assert b.min() == 1 and b.max() == 20
    assert np.bincount(b[:, 0])[1:].tolist() == [2] * 19 + [3]  # the top edge falls in the last bin


def test_dl_perfect_code(rng: np.random.Generator) -> None:
    y = _factors(rng)
    # Each factor on its own dim (monotone, jittered inside a bin), plus noise dims.
    code = np.stack([np.exp(y[:, 2] + 0.3 * rng.random(N)), -y[:, 0] - 0.3 * rng.random(N),
                     y[:, 1] + 0.3 * rng.random(N)], axis=1)  # fmt: skip
    z = np.concatenate([code, rng.normal(size=(N, 3))], axis=1)
    assert dl.mig_discrete(z, y)[1] > 0.95
    assert dl.modularity_discrete(code, y)[1] > 0.95
    sap_per, _ = dl.sap_discrete(z, y)
    # A binary factor: perfect accuracy vs chance (balanced) -> gap ~ 0.5 (1 - chance).
    assert sap_per[0] == pytest.approx(0.5, abs=0.08)
    # Multi-class: a 1-D one-vs-rest linear SVM cannot isolate middle classes, so < 1 - chance.
    assert sap_per[1] > 0.15 and sap_per[2] > 0.15
    ex = dl.explicitness(z, y)
    assert ex["train"] > 0.95 and ex["test"] > 0.95


def test_dl_random_code(rng: np.random.Generator) -> None:
    y = _factors(rng)
    r = dl.dmelodies_metrics(rng.normal(size=(N, 6)), y, names=["a", "b", "c"])
    assert r["mig"]["mean"] < 0.05
    assert r["sap"]["mean"] < 0.05
    assert abs(r["explicitness"]["test"] - 0.5) < 0.1
    assert set(r["mig"]["per_attribute"]) == {"a", "b", "c"}


def test_sap_discrete_hand_computed() -> None:
    y = np.tile([0, 1], 10)  # 20 points: train = first 12, test = last 8
    z0 = 10.0 * y - 5.0
    z1 = z0.copy()
    z1[12:14] *= -1  # two of the 8 test points on the wrong side -> accuracy 0.75
    per, mean = dl.sap_discrete(np.stack([z0, z1], axis=1), y)
    assert mean == pytest.approx(0.25)
    # One class in training: predicted everywhere, equal accuracy for every dim -> gap 0.
    y1 = np.r_[np.zeros(12, int), np.ones(8, int)]
    assert dl.sap_discrete(np.stack([z0, z1], axis=1), y1)[1] == 0.0


def test_dl_latent_permutation_invariance(rng: np.random.Generator) -> None:
    y = _factors(rng, 600)
    z = np.c_[y + 0.3 * rng.random(y.shape), rng.normal(size=(600, 2))]
    perm = rng.permutation(z.shape[1])
    r1 = dl.dmelodies_metrics(z, y, with_explicitness=False)
    r2 = dl.dmelodies_metrics(z[:, perm], y, with_explicitness=False)
    for key in ("mig", "sap", "modularity"):
        assert r1[key]["mean"] == pytest.approx(r2[key]["mean"]), key


def test_constant_labels_score_zero(rng: np.random.Generator) -> None:
    z = rng.normal(size=(200, 4))
    a = np.c_[z[:, 1], np.zeros(200)]  # a0 = z1 exactly, a1 constant
    r = ar.ar_vae_metrics(z, a, names=["a0", "a1"], settings=ar.MetricSettings(max_points=200))
    for key in ("interpretability", "mig", "sap", "scc"):
        assert r[key]["per_attribute"]["a1"] == 0.0, key
        assert r[key]["per_attribute"]["a0"] > 0.9, key
    f = np.c_[z[:, 1] > 0, np.zeros(200)].astype(int)
    d = dl.dmelodies_metrics(z, f, with_explicitness=False)
    assert d["mig"]["per_attribute"]["f1"] == 0.0 and d["sap"]["per_attribute"]["f1"] == 0.0
