"""Losses and KL schedules of AR-VAE and the dMelodies baselines (docs/reference.md §1.4, §3.3).

* :func:`reconstruction_loss`: token cross-entropy, mean over all B x T tokens.
* :func:`kl_divergence`: KL(q(z|x) || N(0, I)) per sample, (B,); the objectives use its batch mean.
* :func:`ar_loss`: the AR-VAE attribute regularisation, sum over regularised dims r of
  mean_{i,j} |tanh(delta * (z_i[r] - z_j[r])) - sign(a_i - a_j)| over the m x m matrix (diagonal
  included, as the reference's L1Loss over all m^2 entries).
* KL terms: plain / capacity ``beta * |KL - C|`` (AR-VAE music with C = 0, FactorVAE with C = 50),
  the dMelodies beta-VAE threshold ``max(0, beta_t * KL - C)`` (:class:`BetaSchedule`) and the
  Annealed-VAE ramped capacity (:class:`CapacitySchedule`).
* FactorVAE: :func:`permute_dims`, :func:`tc_loss`, :func:`discriminator_loss` with
  :class:`~arvae_midi.train.models.FactorDiscriminator` (re-exported here).

Schedules are functions of ``(epoch, iteration)``: ``epoch`` is 0-based and ``iteration`` counts
the training iterations (0-based) taken *after* the warm-up, i.e. the reference's
``anneal_iterations``; :meth:`BetaSchedule.ramp_iteration` derives it from a global iteration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arvae_midi.errors import ConfigError
from arvae_midi.train.models import FactorDiscriminator

__all__ = [
    "BetaSchedule",
    "CapacitySchedule",
    "FactorDiscriminator",
    "ar_loss",
    "ar_loss_per_dim",
    "capacity_kl_loss",
    "discriminator_loss",
    "kl_divergence",
    "permute_dims",
    "reconstruction_loss",
    "tc_loss",
    "token_accuracy",
]


def reconstruction_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of logits (B, T, V) against token ids (B, T), mean over all B x T tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def token_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Fraction of the B x T tokens whose argmax logit is the target (scalar float tensor)."""
    return (logits.argmax(dim=-1) == targets).float().mean()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims, one value per sample: (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def ar_loss_per_dim(z: Tensor, labels: Tensor, dims: Sequence[int], delta: float) -> Tensor:
    """AR loss of every regularised dim, (K,): column k of ``labels`` (B, K) regularises z[:, dims[k]].

    L_k = mean_{i,j} |tanh(delta * (z_i - z_j)) - sign(a_i - a_j)| over all m x m pairs of the batch.
    """
    if labels.dim() != 2 or len(dims) != labels.shape[1]:
        raise ConfigError(
            f"ar_loss: need one latent dim per attribute column, got {len(dims)} dims for labels of "
            f"shape {tuple(labels.shape)}"
        )
    if any(not 0 <= d < z.shape[1] for d in dims):
        raise ConfigError(f"ar_loss: latent dims {list(dims)} must lie in 0..{z.shape[1] - 1}")
    zr = z[:, list(dims)].float()  # (B, K)
    a = labels.float()
    dz = zr.unsqueeze(1) - zr.unsqueeze(0)  # (B, B, K): dz[i, j] = z_i - z_j
    da = a.unsqueeze(1) - a.unsqueeze(0)
    return (torch.tanh(delta * dz) - torch.sign(da)).abs().mean(dim=(0, 1))


def ar_loss(z: Tensor, labels: Tensor, dims: Sequence[int], delta: float) -> Tensor:
    """Sum over the regularised dims of :func:`ar_loss_per_dim` (scalar; multiply by gamma)."""
    return ar_loss_per_dim(z, labels, dims, delta).sum()


def capacity_kl_loss(kl: Tensor, beta: float, capacity: float = 0.0) -> Tensor:
    """``beta * |mean(kl) - capacity|``: plain beta * KL when capacity is 0 (KL >= 0)."""
    return beta * (kl.mean() - capacity).abs()


def _exp_ramp(target: float, iteration: int, ramp_iters: int) -> float:
    """(1 + target)^(iteration / ramp_iters) - 1, capped at ``target`` (reaches it at ramp_iters)."""
    if ramp_iters <= 0:
        return target
    return min(target, math.exp(math.log1p(target) * iteration / ramp_iters) - 1.0)


@dataclass
class BetaSchedule:
    """dMelodies beta-VAE (and dMelodies AR-VAE) KL term: ``max(0, beta_t * KL - threshold)``.

    beta_t = 0 for the first ``warmup_epochs`` epochs (the reference tests ``epoch > 10``, so 11
    warm-up epochs), then (1 + beta)^(t / ramp_iters) - 1 for the t-th iteration after the
    warm-up, capped at beta. ``warmup_epochs = 0, ramp_iters = 0`` gives a constant beta.
    """

    beta: float = 1.0
    threshold: float = 50.0  # "C", subtracted after scaling by beta_t
    warmup_epochs: int = 11
    ramp_iters: int = 100_000

    def __post_init__(self) -> None:
        if self.beta < 0 or self.threshold < 0 or self.warmup_epochs < 0 or self.ramp_iters < 0:
            raise ConfigError(f"BetaSchedule: beta, threshold, warmup_epochs, ramp_iters must be >= 0, got {self}")

    def in_warmup(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` is a warm-up epoch (beta_t = 0, pure auto-encoder)."""
        return epoch < self.warmup_epochs

    def ramp_iteration(self, global_iteration: int, iters_per_epoch: int) -> int:
        """Iterations after the warm-up given the 0-based global iteration (clipped at 0)."""
        return max(0, global_iteration - self.warmup_epochs * iters_per_epoch)

    def beta_at(self, epoch: int, iteration: int) -> float:
        """beta_t at ``epoch`` and ``iteration`` (counted after the warm-up)."""
        if self.in_warmup(epoch):
            return 0.0
        return _exp_ramp(self.beta, iteration, self.ramp_iters)

    def loss(self, kl: Tensor, epoch: int, iteration: int) -> Tensor:
        """``max(0, beta_t * mean(kl) - threshold)`` for per-sample ``kl`` (B,)."""
        return F.relu(self.beta_at(epoch, iteration) * kl.mean() - self.threshold)


@dataclass
class CapacitySchedule:
    """Annealed-VAE (Burgess et al.) KL term ``beta_t * |KL - C_t|``.

    During the ``warmup_epochs`` beta_t = 0 and C_t = 0 (the reference starts both at 0); then
    beta_t = beta and C_t = (1 + capacity)^(t / ramp_iters) - 1, capped at ``capacity``.
    """

    capacity: float = 50.0
    beta: float = 1.0
    warmup_epochs: int = 11
    ramp_iters: int = 100_000

    def __post_init__(self) -> None:
        if self.beta < 0 or self.capacity < 0 or self.warmup_epochs < 0 or self.ramp_iters < 0:
            raise ConfigError(
                f"CapacitySchedule: capacity, beta, warmup_epochs, ramp_iters must be >= 0, got {self}"
            )

    def in_warmup(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` is a warm-up epoch (no KL term)."""
        return epoch < self.warmup_epochs

    def ramp_iteration(self, global_iteration: int, iters_per_epoch: int) -> int:
        """Iterations after the warm-up given the 0-based global iteration (clipped at 0)."""
        return max(0, global_iteration - self.warmup_epochs * iters_per_epoch)

    def beta_at(self, epoch: int, iteration: int) -> float:
        """beta_t: 0 during the warm-up, then ``beta``."""
        return 0.0 if self.in_warmup(epoch) else self.beta

    def capacity_at(self, epoch: int, iteration: int) -> float:
        """C_t at ``epoch`` and ``iteration`` (counted after the warm-up)."""
        if self.in_warmup(epoch):
            return 0.0
        return _exp_ramp(self.capacity, iteration, self.ramp_iters)

    def loss(self, kl: Tensor, epoch: int, iteration: int) -> Tensor:
        """``beta_t * |mean(kl) - C_t|`` for per-sample ``kl`` (B,)."""
        return capacity_kl_loss(kl, self.beta_at(epoch, iteration), self.capacity_at(epoch, iteration))


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shuffle every latent dim of z (B, Z) independently across the batch (FactorVAE's q-bar(z)).

    Keeps each marginal, breaks the dependence between dims: a sample of the product of marginals.
    """
    device = z.device if generator is None else generator.device
    keys = torch.rand(z.shape, generator=generator, device=device).to(z.device)
    order = keys.argsort(dim=0)  # an independent random permutation of the rows per column
    return torch.gather(z, 0, order)


def tc_loss(discriminator: nn.Module, z: Tensor, gamma: float) -> Tensor:
    """FactorVAE total-correlation penalty ``gamma * mean(D(z)[:, 0] - D(z)[:, 1])`` (density ratio).

    Gradients flow into z (the VAE) and the critic; the VAE optimiser only steps the VAE, and the
    critic's gradients are recomputed by :func:`discriminator_loss`.
    """
    logits = discriminator(z)
    return gamma * (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(discriminator: nn.Module, z: Tensor, z_other: Tensor) -> Tensor:
    """``0.5 * [CE(D(z), 0) + CE(D(permute_dims(z_other)), 1)]``; both codes are detached.

    ``z`` are samples of q(z) (class 0); ``z_other`` an independent batch of samples whose dims are
    permuted here to give product-of-marginals samples (class 1).
    """
    joint = discriminator(z.detach())
    marginal = discriminator(permute_dims(z_other.detach()))
    zeros = torch.zeros(joint.shape[0], dtype=torch.long, device=joint.device)
    ones = torch.ones(marginal.shape[0], dtype=torch.long, device=marginal.device)
    return 0.5 * (F.cross_entropy(joint.float(), zeros) + F.cross_entropy(marginal.float(), ones))
