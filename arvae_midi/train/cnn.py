"""The dMelodies CNN VAE (``dmelodies_benchmarking``'s ``DMelodiesCNNVAE``, docs/reference.md §3.2).

Encoder: embedding (B, T, E) -> (B, E, T) -> n x [Conv1d(k 4, stride 2, pad 1) -> SELU -> Dropout]
with widths ``cnn_channels`` (16, 32, 64, 128: length 16 -> 8 -> 4 -> 2 -> 1) -> mean over time ->
Linear/SELU/Linear heads for mu and log sigma. Decoder (non-autoregressive): z as (B, Z, 1) ->
n x [ConvTranspose1d(k 4, stride 2, pad 1) -> SELU] with the widths reversed (length 1 -> ... -> T)
-> per-step Linear(cnn_channels[0] -> V) logits, no ReLU. ``generate`` is the argmax of the
(masked) logits per step; the reference's argmax over the time axis was a bug and is not copied.
"""

from __future__ import annotations

from torch import Tensor, nn

from arvae_midi.train.models import VAE, ModelConfig, _gaussian_heads, _mask_scores


class ConvVAE(VAE):
    """Convolutional VAE over token sequences of length T = 2**len(cnn_channels)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        widths = list(c.cnn_channels)
        self.enc_embedding = nn.Embedding(c.vocab_size, c.embed_dim)
        enc: list[nn.Module] = []
        for c_in, c_out in zip([c.embed_dim, *widths[:-1]], widths, strict=True):
            enc += [nn.Conv1d(c_in, c_out, 4, 2, 1), nn.SELU(), nn.Dropout(c.cnn_dropout)]
        self.enc_cnn = nn.Sequential(*enc)
        self.mu_head, self.log_std_head = _gaussian_heads(widths[-1], c.head_hidden, c.latent_dim)
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for c_in, c_out in zip([c.latent_dim, *rev[:-1]], rev, strict=True):
            dec += [nn.ConvTranspose1d(c_in, c_out, 4, 2, 1), nn.SELU()]
        self.dec_cnn = nn.Sequential(*dec)
        self.out = nn.Linear(widths[0], c.vocab_size)
        self._xavier_init()

    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) (B, Z) of tokens (B, T); logvar = 2 * predicted log sigma."""
        self._check_tokens(tokens)
        feats = self.enc_cnn(self.enc_embedding(tokens).transpose(1, 2))  # (B, C_last, 1)
        summary = feats.mean(dim=2)
        return self.mu_head(summary), 2.0 * self.log_std_head(summary)

    def decode_logits(self, z: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits (B, T, V); the decoder is not autoregressive, so ``targets`` is only shape-checked."""
        if targets is not None:
            self._check_tokens(targets)
        feats = self.dec_cnn(z.unsqueeze(-1))  # (B, C_0, T)
        return self.out(feats.transpose(1, 2))

    def generate(self, z: Tensor, logit_mask: Tensor | None = None) -> Tensor:
        """Argmax over the vocabulary of the (masked) logits at every step, (B, T) int64."""
        return _mask_scores(self.decode_logits(z), logit_mask).argmax(dim=-1)
