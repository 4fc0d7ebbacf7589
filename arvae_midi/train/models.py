"""VAE models: the hierarchical GRU VAE (MeasureVAE / dMelodies RNN VAE), the CNN VAE, FactorVAE's critic.

Every model is built from one :class:`ModelConfig` (saved with its weights) by :func:`build_model`
and implements the :class:`VAE` interface: ``encode`` -> (mu, logvar), ``forward`` -> logits and
the reparameterised sample, ``decode_logits`` (teacher-forced or greedy) and ``generate`` (greedy
argmax tokens, exportable to ONNX). Shapes: tokens (B, T) int64 with T = num_beats * ticks_per_beat
(24 for measures, 16 for dMelodies), z (B, Z), logits (B, T, V).

The hierarchical decoder follows ``ashispati/ar-vae`` (docs/reference.md §1.3): a beat GRU runs
``num_beats`` steps from h0 = SELU(Linear(z)); for every beat a tick GRU runs ``ticks_per_beat``
steps from h0 = SELU(Linear(beat output)), its input being the embedding of the previous token
concatenated with SELU(Linear(beat output)). The previous token crosses beat boundaries but the
tick hidden state restarts at every beat, so under teacher forcing the beats are independent given
the ground-truth tokens: the fast path folds the beats into the batch and runs one GRU call over
(B * num_beats, ticks_per_beat, in), which is exactly the step-by-step reference computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from arvae_midi.errors import ConfigError, DatasetError
from arvae_midi.train.encoders import ENCODERS, build_encoder

ARCHS = ("rnn", "cnn")


@dataclass
class ModelConfig:
    """Architecture of one VAE; the defaults are MeasureVAE as used for the AR-VAE paper plots.

    The dMelodies RNN VAE is ``num_beats=2, ticks_per_beat=8, enc_hidden=dec_hidden=64,
    enc_dropout=dec_dropout=0.2, head_hidden=128``; the dMelodies CNN VAE is ``arch="cnn",
    num_beats=2, ticks_per_beat=8, head_hidden=64`` (docs/reference.md §3.1-3.2).
    """

    arch: str = "rnn"  # "rnn" (hierarchical GRU VAE) | "cnn" (dMelodies CNN VAE)
    vocab_size: int = 32
    num_beats: int = 4  # beat-GRU steps: 4 beats per measure, 2 bars for dMelodies
    ticks_per_beat: int = 6  # tick-GRU steps per beat: 6 for measures, 8 for dMelodies
    embed_dim: int = 10  # note embedding (encoder and decoder each own a table)
    enc_hidden: int = 128
    enc_layers: int = 2
    enc_dropout: float = 0.5  # between encoder GRU layers (rnn only; the cnn uses cnn_dropout)
    head_hidden: int = 256  # hidden width of the mu and log-std heads
    latent_dim: int = 32
    dec_hidden: int = 128
    dec_layers: int = 2
    dec_dropout: float = 0.5
    # Reference quirk (docs/reference.md §5.2): the RNN decoder's logits go through a ReLU before
    # the cross-entropy, so logits are >= 0. The CNN decoder never had one and ignores this.
    relu_logits: bool = True
    cnn_channels: tuple[int, ...] = (16, 32, 64, 128)  # encoder conv widths; the decoder mirrors them
    cnn_dropout: float = 0.1
    # Token encoder of the rnn arch: "bigru" (MeasureVAE, paper Table 1) or a faster variant of
    # arvae_midi.train.encoders ("conv", "mlp"); enc_hidden / enc_layers / enc_dropout size it.
    encoder: str = "bigru"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"model.arch: unknown architecture {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"model.encoder: unknown encoder {self.encoder!r}; valid: {', '.join(ENCODERS)}")
        if self.arch != "rnn" and self.encoder != "bigru":
            raise ConfigError(f"model.encoder = {self.encoder!r} needs arch = \"rnn\" (the cnn has its own encoder)")
        for name in ("vocab_size", "num_beats", "ticks_per_beat", "embed_dim", "enc_hidden", "enc_layers",
                     "head_hidden", "latent_dim", "dec_hidden", "dec_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}: must be a positive integer, got {getattr(self, name)}")
        for name in ("enc_dropout", "dec_dropout", "cnn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name}: must be in [0, 1), got {getattr(self, name)}")
        self.cnn_channels = tuple(self.cnn_channels)
        if self.arch == "cnn":
            if not self.cnn_channels or min(self.cnn_channels) < 1:
                raise ConfigError(f"model.cnn_channels: need positive widths, got {list(self.cnn_channels)}")
            # Each stride-2 conv halves the length, each transposed conv doubles it: T = 2**layers.
            if self.seq_len != 2 ** len(self.cnn_channels):
                raise ConfigError(
                    f"model: the cnn needs num_beats*ticks_per_beat = 2**len(cnn_channels) "
                    f"(= {2 ** len(self.cnn_channels)}), got {self.seq_len}"
                )

    @property
    def seq_len(self) -> int:
        """Tokens per sequence T = num_beats * ticks_per_beat."""
        return self.num_beats * self.ticks_per_beat


class VAEOutput(NamedTuple):
    """Result of :meth:`VAE.forward`: logits (B, T, V), mu / logvar / sampled z (B, Z)."""

    logits: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor


class VAE(nn.Module):
    """Common interface of the token VAEs (see the module docstring for shapes)."""

    config: ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    # -- to implement ------------------------------------------------------------------------
    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters (mu, logvar), each (B, Z), of tokens (B, T)."""
        raise NotImplementedError

    def decode_logits(self, z: Tensor, targets: Tensor | None = None) -> Tensor:
        """Logits (B, T, V): teacher-forced on ``targets`` (B, T) when given, else greedy feedback."""
        raise NotImplementedError

    def generate(self, z: Tensor, logit_mask: Tensor | None = None) -> Tensor:
        """Greedy tokens (B, T) int64 from z (B, Z).

        ``logit_mask`` (B, V) or (V,) float is added to the logits before every argmax (0 =
        allowed, -1e9 = forbidden), so a masked token is never emitted.
        """
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def forward(self, tokens: Tensor, teacher_forcing: bool = False) -> VAEOutput:
        """Encode, sample z by reparameterisation (also in eval mode, as the reference) and decode.

        ``teacher_forcing=True`` decodes on the ground-truth tokens (fast path); False feeds the
        decoder's own argmax back, step by step.
        """
        mu, logvar = self.encode(tokens)
        z = self.reparameterize(mu, logvar)
        logits = self.decode_logits(z, tokens if teacher_forcing else None)
        return VAEOutput(logits, mu, logvar, z)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 2 or tokens.shape[1] != self.config.seq_len:
            raise DatasetError(
                f"model expects token sequences of shape (batch, {self.config.seq_len}), "
                f"got {tuple(tokens.shape)}"
            )

    def _xavier_init(self) -> None:
        # As both reference repos: Xavier-normal on every parameter named "weight" (GRU, linear,
        # conv and embedding matrices); biases keep PyTorch's default init.
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.xavier_normal_(param)


def _mask_scores(logits: Tensor, logit_mask: Tensor | None) -> Tensor:
    """Logits (..., V) + mask broadcast from (B, V) or (V,) onto the last axis, detached."""
    scores = logits.detach()
    if logit_mask is None:
        return scores
    if logits.dim() == 3 and logit_mask.dim() == 2:
        logit_mask = logit_mask.unsqueeze(1)  # (B, 1, V) for (B, T, V) logits
    return scores + logit_mask.to(scores.dtype)


def _gaussian_heads(in_dim: int, hidden: int, latent: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The mu and log-std heads: Linear -> SELU -> Linear, separate weights."""
    return (
        nn.Sequential(nn.Linear(in_dim, hidden), nn.SELU(), nn.Linear(hidden, latent)),
        nn.Sequential(nn.Linear(in_dim, hidden), nn.SELU(), nn.Linear(hidden, latent)),
    )


class HierarchicalVAE(VAE):
    """Bi-GRU encoder + beat/tick hierarchical GRU decoder (MeasureVAE, dMelodies RNN VAE)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        v, e, h, layers = c.vocab_size, c.embed_dim, c.dec_hidden, c.dec_layers
        # encoder
        summary_dim = 2 * c.enc_layers * c.enc_hidden
        if c.encoder == "bigru":
            self.enc_embedding = nn.Embedding(v, e)
            self.enc_rnn = nn.GRU(e, c.enc_hidden, c.enc_layers, batch_first=True, bidirectional=True,
                                  dropout=c.enc_dropout if c.enc_layers > 1 else 0.0)
            # summary = final hidden state of every layer and direction, concatenated
        else:
            self.token_encoder = build_encoder(c)
            summary_dim = self.token_encoder.out_dim
        self.mu_head, self.log_std_head = _gaussian_heads(summary_dim, c.head_hidden, c.latent_dim)
        # decoder
        dec_dropout = c.dec_dropout if layers > 1 else 0.0
        self.z_to_beat_hidden = nn.Sequential(nn.Linear(c.latent_dim, layers * h), nn.SELU())
        self.beat_input = nn.Parameter(torch.zeros(1))  # the learned scalar fed at every beat step
        self.beat_rnn = nn.GRU(1, h, layers, batch_first=True, dropout=dec_dropout)
        self.beat_to_tick_hidden = nn.Sequential(nn.Linear(h, layers * h), nn.SELU())
        self.beat_to_tick_input = nn.Sequential(nn.Linear(h, h), nn.SELU())
        self.dec_embedding = nn.Embedding(v, e)
        self.start_embedding = nn.Parameter(torch.zeros(e))  # "previous token" of the first tick
        self.tick_rnn = nn.GRU(e + h, h, layers, batch_first=True, dropout=dec_dropout)
        self.out = nn.Linear(h, v)
        self._xavier_init()

    # -- encoder -----------------------------------------------------------------------------
    def encode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) (B, Z); the head predicts log sigma as the reference, logvar = 2 log sigma."""
        self._check_tokens(tokens)
        batch = tokens.shape[0]
        if self.config.encoder != "bigru":
            summary = self.token_encoder(tokens)  # (B, out_dim)
            return self.mu_head(summary), 2.0 * self.log_std_head(summary)
        _, h_n = self.enc_rnn(self.enc_embedding(tokens))  # h_n (layers*2, B, H)
        summary = h_n.transpose(0, 1).reshape(batch, -1)  # (B, layers*2*H), layer-major per sample
        return self.mu_head(summary), 2.0 * self.log_std_head(summary)

    # -- decoder pieces ----------------------------------------------------------------------
    def _layer_hidden(self, x: Tensor) -> Tensor:
        """(N, layers*H) -> GRU initial state (layers, N, H), as the reference's view/transpose."""
        layers, h = self.config.dec_layers, self.config.dec_hidden
        return x.reshape(x.shape[0], layers, h).transpose(0, 1).contiguous()

    def beat_outputs(self, z: Tensor) -> Tensor:
        """Beat-GRU outputs (B, num_beats, H); its input is the learned scalar at every step."""
        batch = z.shape[0]
        h0 = self._layer_hidden(self.z_to_beat_hidden(z))
        inp = self.beat_input.view(1, 1, 1).expand(batch, self.config.num_beats, 1)
        out, _ = self.beat_rnn(inp, h0)
        return out

    def project(self, hidden: Tensor) -> Tensor:
        """Output logits (..., V) of decoder hidden states (..., H) (ReLU'd when ``relu_logits``)."""
        logits = self.out(hidden)
        return torch.relu(logits) if self.config.relu_logits else logits

    # -- paths -------------------------------------------------------------------------------
    def decode_logits(self, z: Tensor, targets: Tensor | None = None) -> Tensor:
        """Teacher-forced fast path when ``targets`` (B, T) are given, else greedy step loop."""
        if targets is not None:
            return self.decode_teacher_forced(z, targets)
        return self.decode_stepwise(z)[0]

    def decode_teacher_forced(self, z: Tensor, targets: Tensor) -> Tensor:
        """Fast teacher-forced logits (B, T, V): all beats in one tick-GRU call.

        Equal (to float rounding) to ``decode_stepwise(z, targets)[0]``: tick inputs under teacher
        forcing are known in advance and the tick state restarts at every beat, so the beats are
        folded into the batch, (B * num_beats, ticks_per_beat, E + H).
        """
        self._check_tokens(targets)
        c = self.config
        batch, nb, tpb, h, e = z.shape[0], c.num_beats, c.ticks_per_beat, c.dec_hidden, c.embed_dim
        beat_out = self.beat_outputs(z)  # (B, nb, H)
        h0 = self._layer_hidden(self.beat_to_tick_hidden(beat_out).reshape(batch * nb, -1))  # (L, B*nb, H)
        context = self.beat_to_tick_input(beat_out).unsqueeze(2).expand(batch, nb, tpb, h)
        # previous token of tick t: START for t = 0, else targets[t-1] (also across beat boundaries)
        prev = torch.cat([self.start_embedding.expand(batch, 1, e), self.dec_embedding(targets[:, :-1])], 1)
        inputs = torch.cat([prev.reshape(batch, nb, tpb, e), context], 3).reshape(batch * nb, tpb, e + h)
        out, _ = self.tick_rnn(inputs, h0)  # (B*nb, tpb, H)
        return self.project(out.reshape(batch, nb * tpb, h))

    def decode_stepwise(
        self, z: Tensor, targets: Tensor | None = None, logit_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Paper-faithful decoder loop, one tick-GRU step per tick -> (logits (B, T, V), tokens (B, T)).

        With ``targets`` the previous token is the ground truth (teacher forcing); without, it is the
        argmax of the previous logits (+ ``logit_mask``). The loop has a fixed trip count, so it
        unrolls when traced for ONNX.
        """
        if targets is not None:
            self._check_tokens(targets)
        c = self.config
        batch = z.shape[0]
        beat_out = self.beat_outputs(z)
        prev = self.start_embedding.expand(batch, 1, c.embed_dim)
        all_logits: list[Tensor] = []
        all_tokens: list[Tensor] = []
        for b in range(c.num_beats):
            hidden = self._layer_hidden(self.beat_to_tick_hidden(beat_out[:, b]))
            context = self.beat_to_tick_input(beat_out[:, b]).unsqueeze(1)  # (B, 1, H)
            for j in range(c.ticks_per_beat):
                out, hidden = self.tick_rnn(torch.cat([prev, context], 2), hidden)
                logits = self.project(out[:, 0])  # (B, V)
                if targets is not None:
                    token = targets[:, b * c.ticks_per_beat + j]
                else:
                    token = torch.argmax(_mask_scores(logits, logit_mask), dim=-1)
                prev = self.dec_embedding(token).unsqueeze(1)
                all_logits.append(logits)
                all_tokens.append(token)
        return torch.stack(all_logits, 1), torch.stack(all_tokens, 1)

    def generate(self, z: Tensor, logit_mask: Tensor | None = None) -> Tensor:
        """Greedy argmax tokens (B, T) through the step loop, masked logits fed back."""
        return self.decode_stepwise(z, None, logit_mask)[1]


class FactorDiscriminator(nn.Module):
    """FactorVAE critic: MLP Z -> hidden x layers (LeakyReLU 0.2) -> 2 logits.

    Class 0 = a sample of q(z) (joint), class 1 = a dimension-wise permuted sample (product of the
    marginals); docs/reference.md §3.3 uses 32 -> 64 -> 64 -> 64 -> 2.
    """

    def __init__(self, latent_dim: int = 32, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        if min(latent_dim, hidden, layers) < 1:
            raise ConfigError(f"discriminator sizes must be positive, got {latent_dim=}, {hidden=}, {layers=}")
        blocks: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        blocks.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*blocks)
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.xavier_normal_(param)

    def forward(self, z: Tensor) -> Tensor:
        """Logits (B, 2) of z (B, Z)."""
        return self.net(z)
