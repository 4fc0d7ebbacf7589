"""Feeding the model graph: one place that knows how to run only the half of the graph asked for.

The exported graph (:mod:`arvae_midi.engine.metadata` describes the contract) has three inputs
and puts the encoder and the greedy decoder behind ``If`` nodes gated on the batch size of their
input. onnxruntime needs every input fed, so a call for one half feeds a zero-row dummy to the
other half's inputs, which then costs one ``If`` node instead of a whole encoder or decoder.
:class:`GraphFeeds` builds those feeds; the :class:`~arvae_midi.engine.engine.Engine` and the
exporter's calibration session (a bare graph with no metadata yet) both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class GraphFeeds:
    """Input dicts for the encoder-only and decoder-only runs of one model graph.

    ``ticks`` T, ``latent_dim`` Z and ``vocab_size`` V fix the widths of the zero-row dummies,
    which are allocated once (a one-bar call must not pay for them).
    """

    def __init__(self, ticks: int, latent_dim: int, vocab_size: int) -> None:
        self.ticks, self.latent_dim, self.vocab_size = ticks, latent_dim, vocab_size
        self._no_tokens = np.zeros((0, ticks), np.int64)
        self._no_z = np.zeros((0, latent_dim), np.float32)
        self._no_mask = np.zeros((0, vocab_size), np.float32)

    def encoder(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds that run the encoder alone on ``tokens`` (B, T) int64 (outputs ``mu``, ``logvar``)."""
        return {"tokens": tokens, "z": self._no_z, "pitch_mask": self._no_mask}

    def decoder(self, z: np.ndarray, pitch_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds that run the decoder alone on ``z`` (B, Z) float32 under the additive ``pitch_mask``
        (B, V) float32 (output ``out_tokens``)."""
        return {"tokens": self._no_tokens, "z": z, "pitch_mask": pitch_mask}


def session_functions(
    session: Any,
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """``encode(tokens (B, T)) -> mu (B, Z)`` and ``decode(z (B, Z)) -> tokens (B, T)`` (no mask)
    over an onnxruntime session of a model graph; the widths come from the session's inputs."""
    shapes = {i.name: i.shape for i in session.get_inputs()}
    feeds = GraphFeeds(int(shapes["tokens"][1]), int(shapes["z"][1]), int(shapes["pitch_mask"][1]))

    def encode(tokens: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["mu"], feeds.encoder(np.asarray(tokens, np.int64)))[0])

    def decode(z: np.ndarray) -> np.ndarray:
        no_mask = np.zeros((len(z), feeds.vocab_size), np.float32)
        return np.asarray(session.run(["out_tokens"], feeds.decoder(np.asarray(z, np.float32), no_mask))[0])

    return encode, decode
