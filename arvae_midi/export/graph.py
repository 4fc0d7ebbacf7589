"""The model graph: the encoder and the greedy decoder of a trained VAE as one ONNX graph.

Shapes: B batch, T = 24 ticks, Z latent, V vocab::

    tokens (B, T) int64 --If(B > 0)--> encoder ------------------> mu, logvar (B, Z) float32
    z (B, Z) float32, pitch_mask (B, V) float32 --If(B > 0)--> greedy decoder --> out_tokens (B, T)

Each half is traced separately by torch's TorchScript-based ONNX exporter (the greedy decoder's
fixed-trip-count loop unrolls into 24 steps; nn.GRU becomes ONNX GRU nodes) and placed in the
``then`` branch of an ``If`` gated on its input's batch size; the ``else`` branch returns an
empty tensor. onnxruntime needs every graph input fed, so a caller feeds a zero-row dummy to the
half it does not want (:class:`arvae_midi.engine.feeds.GraphFeeds`), which then costs one ``If``
node instead of a whole encoder or decoder (and avoids running GRU kernels on empty batches).
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from onnx import TensorProto, helper

from arvae_midi import __version__
from arvae_midi.core.tokens import REST_ID, TICKS_PER_BAR
from arvae_midi.errors import ConfigError, ModelFileError
from arvae_midi.train.models import VAE, HierarchicalVAE


class _Encoder(torch.nn.Module):
    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(tokens)


class _Decoder(torch.nn.Module):
    """Generic greedy decoder: ``model.generate`` traced as written (any VAE architecture)."""

    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, pitch_mask: torch.Tensor) -> torch.Tensor:
        return self.model.generate(z, pitch_mask)


class _HierarchicalDecoder(torch.nn.Module):
    """``HierarchicalVAE.generate`` rewritten for a lean trace; same math, about 40% fewer nodes.

    The generic trace spends most of its nodes on glue around 48 one-step GRU calls: batch-first
    transposes, squeezes, and a slice + concat of the 2-layer hidden state at every tick. Here
    everything stays sequence-first (1, B, .), each tick-GRU layer is its own 1-layer GRU (same
    weights) whose final state h_n (1, B, H) is both its next hidden state and the next layer's
    input, and the ArgMax output (1, B) indexes the embedding directly. The per-tick work is
    Concat, 2 GRU, MatMul, Add, Relu, Add (mask), ArgMax, Gather. Parity with ``generate`` is
    checked after export like for any graph.
    """

    def __init__(self, model: HierarchicalVAE) -> None:
        super().__init__()
        self.model = model
        rnn = model.tick_rnn
        self.layers = torch.nn.ModuleList()
        for layer in range(model.config.dec_layers):
            gru = torch.nn.GRU(rnn.input_size if layer == 0 else rnn.hidden_size, rnn.hidden_size, 1)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(gru, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{layer}").data)
            self.layers.append(gru)

    def forward(self, z: torch.Tensor, pitch_mask: torch.Tensor) -> torch.Tensor:
        m, c = self.model, self.model.config
        batch, h, e = z.shape[0], c.dec_hidden, c.embed_dim
        beat_out = m.beat_outputs(z)  # (B, beats, H)
        hidden0 = m.beat_to_tick_hidden(beat_out).transpose(0, 1)  # (beats, B, layers*H)
        context = m.beat_to_tick_input(beat_out).transpose(0, 1)  # (beats, B, H)
        prev = m.start_embedding.view(1, 1, e).expand(1, batch, e)  # (1, B, E)
        mask = pitch_mask.unsqueeze(0)  # (1, B, V)
        tokens = []
        for b in range(c.num_beats):
            states = [hidden0[b : b + 1, :, i * h : (i + 1) * h] for i in range(c.dec_layers)]  # (1, B, H) each
            for _ in range(c.ticks_per_beat):
                x = torch.cat([prev, context[b : b + 1]], 2)  # (1, B, E + H)
                for i, gru in enumerate(self.layers):
                    _, states[i] = gru(x, states[i])
                    x = states[i]
                token = torch.argmax(m.project(x) + mask, dim=-1)  # (1, B)
                tokens.append(token)
                prev = m.dec_embedding(token)  # (1, B, E)
        return torch.cat(tokens, 0).transpose(0, 1)  # (B, T)


def _decoder_module(model: VAE) -> torch.nn.Module:
    """The lean decoder when ``model`` is the hierarchical GRU VAE, else the generic trace."""
    if isinstance(model, HierarchicalVAE):
        return _HierarchicalDecoder(model)
    return _Decoder(model)


def _trace(module: torch.nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
           batch: str, opset: int) -> onnx.ModelProto:
    """One half traced to ONNX in memory (weights inline), batch axis named ``batch``."""
    # The exporter restores the wrapper's train/eval flag afterwards, recursively: a wrapper left in
    # training mode would switch the model's dropout on for everything after the export.
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of torch.export, but it traces the
        # unrolled decoder in seconds (torch.export takes minutes) into fused GRU nodes.
        warnings.simplefilter("ignore")
        torch.onnx.export(  # the TorchScript exporter also writes to file objects (typed as paths only)
            module, args, buf, input_names=inputs, output_names=outputs, opset_version=opset,  # type: ignore[arg-type]
            dynamic_axes={name: {0: batch} for name in inputs + outputs}, dynamo=False,
        )
    return onnx.load_from_string(buf.getvalue())


def _as_branch(graph: onnx.GraphProto, prefix: str) -> onnx.GraphProto:
    """A traced graph as an ``If`` branch: no formal inputs (it reads the outer graph's inputs by
    name), internal names prefixed so the two halves cannot collide."""
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}

    def rename(name: str) -> str:
        return name if name in keep or not name else prefix + name

    branch = onnx.GraphProto()
    branch.CopyFrom(graph)
    branch.name = prefix.rstrip("/")
    for node in branch.node:
        node.name = prefix + node.name
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for init in branch.initializer:
        init.name = rename(init.name)
    for info in branch.value_info:
        info.name = rename(info.name)
    del branch.input[:]
    return branch


def _empty_branch(name: str, outputs: list[tuple[str, int, int]]) -> onnx.GraphProto:
    """``else`` branch returning empty (0, width) tensors of the given element types."""
    nodes = [
        helper.make_node("Constant", [], [f"{name}/{out}"],
                         value=helper.make_tensor(f"{name}/{out}_v", dtype, [0, w], []))
        for out, dtype, w in outputs
    ]
    infos = [helper.make_tensor_value_info(f"{name}/{out}", dtype, [0, w]) for out, dtype, w in outputs]
    return helper.make_graph(nodes, name, [], infos)


def build_graph(model: VAE, opset: int = 17) -> onnx.ModelProto:
    """The combined encoder + greedy-decoder graph of ``model`` (no metadata yet)."""
    cfg = model.config
    if cfg.seq_len != TICKS_PER_BAR:
        raise ConfigError(
            f"only measure models ({TICKS_PER_BAR} ticks) can be exported; this model has {cfg.seq_len} "
            "tokens per sequence (dMelodies models are for the disentanglement study only)"
        )
    model = model.eval().cpu()
    z_dim, v = cfg.latent_dim, cfg.vocab_size
    example_tokens = torch.full((2, TICKS_PER_BAR), REST_ID, dtype=torch.long)
    enc = _trace(_Encoder(model), (example_tokens,), ["tokens"], ["mu", "logvar"], "batch", opset)
    dec = _trace(_decoder_module(model), (torch.zeros(2, z_dim), torch.zeros(2, v)), ["z", "pitch_mask"],
                 ["out_tokens"], "batch_z", opset)

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    nodes = [
        # Batch size of each half's input (a 1-element int64 tensor) > 0 switches that half on.
        helper.make_node("Shape", ["tokens"], ["tokens_batch"], start=0, end=1),
        helper.make_node("Greater", ["tokens_batch", "zero"], ["run_encoder"]),
        helper.make_node("Shape", ["z"], ["z_batch"], start=0, end=1),
        helper.make_node("Greater", ["z_batch", "zero"], ["run_decoder"]),
        helper.make_node("If", ["run_encoder"], ["mu", "logvar"], name="encoder",
                         then_branch=_as_branch(enc.graph, "encoder/"),
                         else_branch=_empty_branch("no_encoder", [("mu", f32, z_dim), ("logvar", f32, z_dim)])),
        helper.make_node("If", ["run_decoder"], ["out_tokens"], name="decoder",
                         then_branch=_as_branch(dec.graph, "decoder/"),
                         else_branch=_empty_branch("no_decoder", [("out_tokens", i64, TICKS_PER_BAR)])),
    ]
    graph = helper.make_graph(
        nodes, "arvae_midi",
        inputs=[helper.make_tensor_value_info("tokens", i64, ["batch", TICKS_PER_BAR]),
                helper.make_tensor_value_info("z", f32, ["batch_z", z_dim]),
                helper.make_tensor_value_info("pitch_mask", f32, ["batch_z", v])],
        outputs=[helper.make_tensor_value_info("mu", f32, ["batch", z_dim]),
                 helper.make_tensor_value_info("logvar", f32, ["batch", z_dim]),
                 helper.make_tensor_value_info("out_tokens", i64, ["batch_z", TICKS_PER_BAR])],
        initializer=[helper.make_tensor("zero", i64, [], [0])],
    )
    combined = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                 producer_name="arvae-midi", producer_version=__version__)
    combined.ir_version = enc.ir_version
    try:
        onnx.checker.check_model(combined, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ModelFileError(f"the exported graph is invalid: {e}") from e
    return combined

