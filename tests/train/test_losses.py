"""Losses: reconstruction, KL, the AR loss against a hand computation, schedules, FactorVAE pieces."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")
import torch  # noqa: E402

from arvae_midi.errors import ConfigError  # noqa: E402
from arvae_midi.train.losses import (  # noqa: E402
    BetaSchedule,
    CapacitySchedule,
    FactorDiscriminator,
    ar_loss,
    ar_loss_per_dim,
    capacity_kl_loss,
    discriminator_loss,
    kl_divergence,
    permute_dims,
    reconstruction_loss,
    tc_loss,
    token_accuracy,
)


def test_reconstruction_loss_is_mean_token_cross_entropy() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3)
    targets = torch.tensor([[0, 2]])
    expected = 0.5 * (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(1 / (2 + math.e)))
    assert reconstruction_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert token_accuracy(logits, targets).item() == pytest.approx(0.5)


def test_kl_divergence_per_sample() -> None:
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    kl = kl_divergence(mu, logvar)
    assert kl.shape == (2,)
    # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) per dim
    assert kl[0].item() == pytest.approx(0.0, abs=1e-7)
    assert kl[1].item() == pytest.approx(0.5 * (1 + 4 - 1 - math.log(4)) + 0.5 * 4, rel=1e-6)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(1))


def test_ar_loss_matches_hand_computation() -> None:
    # 3 samples, latent dim 2 regularised by attribute column 0, dim 0 by column 1
    z = torch.tensor([[0.3, 9.0, 0.0], [-0.1, 9.0, 0.1], [0.3, 9.0, -0.2]])
    labels = torch.tensor([[5.0, 1.0], [5.0, 2.0], [7.0, 0.0]])
    delta = 10.0

    def hand(zs: list[float], attrs: list[float]) -> float:
        total = 0.0
        for i in range(3):
            for j in range(3):
                d_a = attrs[i] - attrs[j]
                sign = 0.0 if d_a == 0 else math.copysign(1.0, d_a)
                total += abs(math.tanh(delta * (zs[i] - zs[j])) - sign)
        return total / 9  # mean over the 3 x 3 matrix, diagonal included

    col0 = hand([0.0, 0.1, -0.2], [5.0, 5.0, 7.0])
    col1 = hand([0.3, -0.1, 0.3], [1.0, 2.0, 0.0])
    # column 0 spelled out: (0,1),(1,0): |tanh(-+1) - 0|; (0,2),(2,0): |tanh(+-2) - (-+1)| = 1 + tanh 2;
    # (1,2),(2,1): 1 + tanh 3; the diagonal contributes 0 but counts in the mean
    t1, t2, t3 = math.tanh(1.0), math.tanh(2.0), math.tanh(3.0)
    assert col0 == pytest.approx((2 * t1 + 2 * (1 + t2) + 2 * (1 + t3)) / 9)
    per_dim = ar_loss_per_dim(z, labels, [2, 0], delta)
    torch.testing.assert_close(per_dim, torch.tensor([col0, col1]))
    assert ar_loss(z, labels, [2, 0], delta).item() == pytest.approx(col0 + col1, rel=1e-6)
    # a code ordered like the attribute with a large delta scores ~0 except on tied attributes
    ordered = torch.tensor([[0.0], [1.0], [2.0]])
    assert ar_loss(ordered, torch.tensor([[1.0], [2.0], [3.0]]), [0], 100.0).item() < 1e-6


def test_ar_loss_rejects_mismatched_dims() -> None:
    z, labels = torch.zeros(4, 8), torch.zeros(4, 2)
    with pytest.raises(ConfigError, match="one latent dim per attribute"):
        ar_loss(z, labels, [0], 10.0)
    with pytest.raises(ConfigError, match="0..7"):
        ar_loss(z, labels, [0, 8], 10.0)


def test_ar_loss_gradient_pushes_codes_into_attribute_order() -> None:
    z = torch.tensor([[0.5], [0.0], [-0.5]], requires_grad=True)
    ar_loss(z, torch.tensor([[0.0], [1.0], [2.0]]), [0], 1.0).backward()
    assert z.grad is not None
    assert z.grad[0, 0] > 0 > z.grad[2, 0]  # descent lowers z_0 and raises z_2


def test_beta_schedule_warmup_ramp_and_threshold() -> None:
    s = BetaSchedule(beta=4.0, threshold=50.0, warmup_epochs=11, ramp_iters=100_000)
    assert all(s.beta_at(e, 5_000) == 0.0 for e in range(11))  # reference: epoch index <= 10
    assert s.beta_at(11, 0) == 0.0
    assert s.beta_at(11, 50_000) == pytest.approx(math.sqrt(5.0) - 1.0)
    assert s.beta_at(40, 100_000) == pytest.approx(4.0)
    assert s.beta_at(90, 10**7) == 4.0
    kl = torch.full((8,), 20.0)
    assert s.loss(kl, 3, 0).item() == 0.0
    assert s.loss(kl, 90, 10**7).item() == pytest.approx(30.0)  # max(0, 4 * 20 - 50)
    assert s.loss(torch.full((8,), 10.0), 90, 10**7).item() == 0.0
    assert s.ramp_iteration(global_iteration=11 * 1853 + 7, iters_per_epoch=1853) == 7
    assert s.ramp_iteration(global_iteration=5, iters_per_epoch=1853) == 0
    constant = BetaSchedule(beta=0.2, threshold=0.0, warmup_epochs=0, ramp_iters=0)
    assert constant.beta_at(0, 0) == 0.2
    with pytest.raises(ConfigError):
        BetaSchedule(beta=-1.0)


def test_capacity_schedule() -> None:
    s = CapacitySchedule(capacity=50.0, beta=1.0, warmup_epochs=11, ramp_iters=100_000)
    kl = torch.full((4,), 12.0)
    assert s.loss(kl, 0, 0).item() == 0.0  # warm-up: beta = 0
    assert s.capacity_at(11, 0) == 0.0
    half = math.sqrt(51.0) - 1.0
    assert s.capacity_at(11, 50_000) == pytest.approx(half)
    assert s.loss(kl, 11, 50_000).item() == pytest.approx(abs(12.0 - half), rel=1e-6)
    assert s.capacity_at(50, 200_000) == 50.0
    assert s.loss(kl, 50, 200_000).item() == pytest.approx(38.0)  # two-sided |KL - C|


def test_capacity_kl_loss() -> None:
    kl = torch.tensor([40.0, 80.0])
    assert capacity_kl_loss(kl, 1.0, 50.0).item() == pytest.approx(10.0)
    assert capacity_kl_loss(kl, 0.001).item() == pytest.approx(0.06)


def test_permute_dims_shuffles_each_dim_independently() -> None:
    z = torch.arange(64 * 3, dtype=torch.float32).reshape(64, 3)
    g = torch.Generator().manual_seed(0)
    p = permute_dims(z, g)
    rows = (p - torch.arange(3)) / 3  # z[r, d] = 3 r + d: the source row of every entry
    for d in range(3):
        assert torch.equal(rows[:, d].sort().values, torch.arange(64.0))  # a permutation: same marginal
    assert not torch.equal(rows[:, 0], rows[:, 1])  # a different permutation per dim
    assert not torch.equal(rows[:, 0], torch.arange(64.0))
    assert torch.equal(permute_dims(z, torch.Generator().manual_seed(0)), p)


def test_tc_and_discriminator_losses() -> None:
    d = FactorDiscriminator(latent_dim=2, hidden=4, layers=1)
    with torch.no_grad():
        for m in d.net:
            if isinstance(m, torch.nn.Linear):
                m.weight.fill_(0.0)
                m.bias.fill_(0.0)
        last = d.net[-1]
        assert isinstance(last, torch.nn.Linear)
        last.bias.copy_(torch.tensor([1.0, -1.0]))
    z = torch.randn(6, 2, requires_grad=True)
    assert tc_loss(d, z, gamma=10.0).item() == pytest.approx(20.0)  # 10 * mean(1 - (-1))
    loss = discriminator_loss(d, z, z)
    expected = 0.5 * (-math.log(torch.softmax(torch.tensor([1.0, -1.0]), 0)[0].item())
                      - math.log(torch.softmax(torch.tensor([1.0, -1.0]), 0)[1].item()))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert z.grad is None  # the critic's loss does not reach the encoder


def test_discriminator_learns_to_spot_correlated_codes() -> None:
    torch.manual_seed(0)
    d = FactorDiscriminator(latent_dim=2, hidden=16, layers=2)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(150):
        base = torch.randn(128, 1)
        z = torch.cat([base, base], 1)  # fully dependent dims: far from the product of marginals
        other = torch.cat([(b := torch.randn(128, 1)), b], 1)
        loss = discriminator_loss(d, z, other)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.4 < math.log(2)  # chance level is log 2
    base = torch.randn(256, 1)
    assert tc_loss(d, torch.cat([base, base], 1), gamma=1.0).item() > 1.0
