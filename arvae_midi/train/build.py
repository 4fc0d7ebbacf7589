"""Build a freshly initialised VAE from its :class:`~arvae_midi.train.models.ModelConfig`.

Kept apart from :mod:`arvae_midi.train.models` so that the architectures import the shared base
classes one way only: ``cnn`` -> ``models``, and this module -> both.
"""

from __future__ import annotations

from arvae_midi.errors import ConfigError
from arvae_midi.train.cnn import ConvVAE
from arvae_midi.train.models import ARCHS, VAE, HierarchicalVAE, ModelConfig


def build_model(cfg: ModelConfig) -> VAE:
    """The VAE of ``cfg.arch`` ("rnn" or "cnn"), freshly initialised."""
    if cfg.arch == "rnn":
        return HierarchicalVAE(cfg)
    if cfg.arch == "cnn":
        return ConvVAE(cfg)
    raise ConfigError(f"model.arch: unknown architecture {cfg.arch!r}; valid: {', '.join(ARCHS)}")
