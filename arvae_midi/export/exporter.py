"""Export a trained VAE to one self-describing ``.onnx`` file, calibrated and parity-checked.

The file holds one graph with two halves (shapes: B batch, T = 24 ticks, Z latent, V vocab)::

    tokens (B, T) int64 --If(B > 0)--> encoder ------------------> mu, logvar (B, Z) float32
    z (B, Z) float32, pitch_mask (B, V) float32 --If(B > 0)--> greedy decoder --> out_tokens (B, T)

Each half is traced separately by torch's TorchScript-based ONNX exporter (the greedy decoder's
fixed-trip-count loop unrolls into 24 steps; nn.GRU becomes ONNX GRU nodes) and placed in the
``then`` branch of an ``If`` gated on its input's batch size; the ``else`` branch returns an
empty tensor. onnxruntime needs every graph input fed, so the engine feeds a zero-row dummy to
the half it does not want, which then costs one ``If`` node instead of a whole encoder or
decoder (and avoids running GRU kernels on empty batches).

After tracing, the exporter calibrates each regularised attribute on held-out bars
(:mod:`arvae_midi.engine.calibration`) through the exported graph, writes the metadata
(:mod:`arvae_midi.engine.metadata`), reloads the file with the engine and checks parity with
torch on held-out bars: identical greedy tokens (with and without a key mask) and mu within
``mu_atol``. Any failure raises ModelFileError and leaves no output file behind.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from arvae_midi import __version__
from arvae_midi.core.attributes import compute_attributes
from arvae_midi.core.tokens import HOLD_ID, REST_ID, TICK_POSITIONS, TICKS_PER_BAR, TICKS_PER_BEAT, Vocabulary
from arvae_midi.engine.calibration import DEFAULT_POINTS, calibrate, target_ranges
from arvae_midi.engine.metadata import (
    FORMAT_VERSION,
    MASK_FORBIDDEN,
    METADATA_KEY,
    GridInfo,
    MetadataDocument,
    document_to_json,
)
from arvae_midi.errors import ConfigError, DatasetError, ModelFileError
from arvae_midi.train.models import VAE, HierarchicalVAE

#: progress(completed, total, description), in decoded bars.
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ExportConfig:
    """How a model is exported, calibrated and checked."""

    opset: int = 17
    calibration_points: int = DEFAULT_POINTS  # latent grid points per regularised dim
    calibration_bars: int = 512  # held-out bars decoded at every grid point
    parity_bars: int = 256  # held-out bars compared between torch and onnxruntime
    mu_atol: float = 1e-4  # max |mu_torch - mu_onnx| (and logvar) accepted
    split: str = "test"  # held-out split of the run's dataset (falls back to "val")
    seed: int = 0  # held-out subset and parity key masks

    def __post_init__(self) -> None:
        if self.calibration_points < 2 or self.calibration_bars < 1 or self.parity_bars < 1:
            raise ConfigError("calibration_points must be >= 2, calibration_bars and parity_bars >= 1")
        if self.split not in ("val", "test"):
            raise ConfigError(f"split must be val or test (held-out data), got {self.split!r}")


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and measured."""

    path: Path
    size_bytes: int
    parity_bars: int
    max_mu_diff: float
    max_logvar_diff: float
    calibration_bars: int
    attributes: list[str]


# -- graph -------------------------------------------------------------------------------------


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
        beat_out = m._beat_outputs(z)  # (B, beats, H)
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
                token = torch.argmax(m._project(x) + mask, dim=-1)  # (1, B)
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


# -- held-out data and parity --------------------------------------------------------------------


def key_masks(n: int, vocab: Vocabulary, seed: int) -> np.ndarray:
    """(n, V) additive masks: every other row unmasked, the rest a random 7-pitch-class key lock.

    HOLD and REST always stay allowed, as the bridge's key lock keeps them.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, len(vocab)), np.float32)
    pitch_class = np.where(vocab.pitch_table >= 0, vocab.pitch_table % 12, -1)
    for i in range(1, n, 2):
        allowed = rng.choice(12, size=7, replace=False)
        masks[i] = np.where(np.isin(pitch_class, allowed), 0.0, MASK_FORBIDDEN)
        masks[i, [HOLD_ID, REST_ID]] = 0.0
    return masks


def _torch_reference(model: VAE, tokens: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, ...]:
    with torch.inference_mode():
        mu, logvar = model.encode(torch.as_tensor(tokens, dtype=torch.long))
        out = model.generate(mu, torch.as_tensor(masks))
    return mu.numpy(), logvar.numpy(), out.numpy()


def check_parity(model: VAE, path: Path, tokens: np.ndarray, vocab: Vocabulary, mu_atol: float,
                 seed: int = 0) -> tuple[float, float]:
    """Compare torch and the exported file on ``tokens`` (N, 24); returns max |d mu|, |d logvar|.

    The decoder halves are compared on the same z (torch's mu) so an encoder difference cannot
    hide or cause a decoder one. ModelFileError on any mismatch.
    """
    from arvae_midi.engine.engine import Engine

    engine = Engine.load(path, device="cpu", threads=0)
    masks = key_masks(len(tokens), vocab, seed)
    mu_t, logvar_t, out_t = _torch_reference(model, tokens, masks)
    mu_o, logvar_o = engine.encode(tokens)
    out_o = engine.decode(mu_t, masks)
    d_mu = float(np.abs(mu_t - mu_o).max())
    d_lv = float(np.abs(logvar_t - logvar_o).max())
    if not (d_mu <= mu_atol and d_lv <= mu_atol):
        raise ModelFileError(f"export parity failed: onnxruntime mu/logvar differ from torch by up to "
                             f"{max(d_mu, d_lv):.2e} (tolerance {mu_atol:.0e})")
    rows = np.flatnonzero((out_t != out_o).any(axis=1))
    if len(rows):
        i = int(rows[0])
        raise ModelFileError(
            f"export parity failed: greedy tokens differ on {len(rows)} of {len(tokens)} held-out bars "
            f"(first: bar {i}, torch {out_t[i].tolist()} vs onnxruntime {out_o[i].tolist()})"
        )
    return d_mu, d_lv


# -- the file --------------------------------------------------------------------------------------


def _session_fns(model_bytes: bytes) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """encode / decode callables over the bare graph (no metadata yet), for calibration."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    z_dim, v = int(shapes["z"][1]), int(shapes["pitch_mask"][1])
    no_tokens = np.zeros((0, TICKS_PER_BAR), np.int64)

    def encode(tokens: np.ndarray) -> np.ndarray:
        feeds = {"tokens": tokens.astype(np.int64), "z": np.zeros((0, z_dim), np.float32),
                 "pitch_mask": np.zeros((0, v), np.float32)}
        return np.asarray(sess.run(["mu"], feeds)[0])

    def decode(z: np.ndarray) -> np.ndarray:
        feeds = {"tokens": no_tokens, "z": z.astype(np.float32), "pitch_mask": np.zeros((len(z), v), np.float32)}
        return np.asarray(sess.run(["out_tokens"], feeds)[0])

    return encode, decode


def export_model(
    model: VAE,
    out: str | Path,
    vocab: list[str],
    attribute_dims: Mapping[str, int],
    heldout: np.ndarray,
    *,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    config: ExportConfig | None = None,
    progress: ProgressFn | None = None,
    knob_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> ExportReport:
    """Export ``model`` to ``out``: graph, calibration on ``heldout`` bars (N, 24), metadata, parity.

    ``knob_ranges``: attribute -> (knob 0, knob 127) values, the training bars' 2nd..98th
    percentile (:func:`arvae_midi.engine.calibration.target_ranges`); None spans the median curves.

    ``heldout`` rows are used in order: the first ``calibration_bars`` for calibration, the
    first ``parity_bars`` for the parity check (pass them shuffled). Writes ``out`` only when
    every check passed (atomically, through a temporary file next to it). The model is put in
    eval mode on the CPU.
    """
    cfg = config or ExportConfig()
    try:
        voc = Vocabulary.from_tokens(vocab)
    except ValueError as e:
        raise ModelFileError(f"cannot export: invalid vocabulary ({e})") from e
    if len(voc) != model.config.vocab_size:
        raise ModelFileError(f"cannot export: vocabulary of {len(voc)} tokens, model of {model.config.vocab_size}")
    heldout = np.asarray(heldout, dtype=np.int64)
    if heldout.ndim != 2 or heldout.shape[1] != TICKS_PER_BAR or len(heldout) == 0:
        raise DatasetError(f"held-out bars must have shape (N>0, {TICKS_PER_BAR}), got {heldout.shape}")
    model = model.eval().cpu()
    cal_bars = heldout[: cfg.calibration_bars]
    total = len(attribute_dims) * cfg.calibration_points * len(cal_bars)
    done = 0

    def report(advance: int, description: str) -> None:
        nonlocal done
        done += advance
        if progress is not None:
            progress(done, total, description)

    report(0, "tracing the graph")
    graph = build_graph(model, cfg.opset)
    encode, decode = _session_fns(graph.SerializeToString())
    report(0, "calibrating")
    calibration = calibrate(encode, decode, cal_bars, voc, dict(attribute_dims), cfg.calibration_points,
                            progress=lambda n: report(n, "calibrating"), targets=knob_ranges)

    doc = MetadataDocument(
        format_version=FORMAT_VERSION,
        vocab=list(voc.tokens),
        pitch_range=[voc.low, voc.high],
        grid=GridInfo(TICKS_PER_BAR, TICKS_PER_BAR // TICKS_PER_BEAT, [float(p) for p in TICK_POSITIONS]),
        latent_dim=model.config.latent_dim,
        attribute_dims={str(k): int(d) for k, d in attribute_dims.items()},
        calibration=calibration,
        recipe=dict(recipe or {}),
        metrics=dict(metrics or {}),
        data={**(data or {}), "calibration_bars": len(cal_bars), "parity_bars": min(len(heldout), cfg.parity_bars)},
        export={
            "arvae_midi": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "opset": cfg.opset,
            "exporter": "torch.onnx (TorchScript)", "mu_atol": cfg.mu_atol,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    helper.set_model_props(graph, {METADATA_KEY: document_to_json(doc)})

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        onnx.save_model(graph, str(tmp), save_as_external_data=False)
        report(0, "checking parity")
        d_mu, d_lv = check_parity(model, tmp, heldout[: cfg.parity_bars], voc, cfg.mu_atol, cfg.seed)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out, out.stat().st_size, min(len(heldout), cfg.parity_bars), d_mu, d_lv,
                        len(cal_bars), list(attribute_dims))


def export_run(
    run_dir: str | Path,
    out: str | Path,
    config: ExportConfig | None = None,
    data: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> ExportReport:
    """Export a run folder (``arvae-midi train`` output) to one model file.

    Held-out bars come from the run's dataset (or ``data``): a seeded shuffle of the ``split``
    rows (the validation rows when the dataset has no test rows). The recipe and, when
    ``RUN_DIR/eval.json`` exists, the evaluation results go into the metadata.
    """
    from arvae_midi.train.checkpoint import load_run
    from arvae_midi.train.evaluate import load_eval_data, read_eval

    cfg = config or ExportConfig()
    run = load_run(run_dir, device="cpu")
    token_data = load_eval_data(run, data)
    if token_data.kind != "measure":
        raise ConfigError(f"{run_dir}: a {token_data.kind} model cannot be exported; only measure models "
                          f"({TICKS_PER_BAR}-tick bars) drive the engine")
    split = cfg.split
    idx = token_data.indices(split)
    if len(idx) == 0 and split == "test":
        split, idx = "val", token_data.indices("val")
    if len(idx) == 0:
        raise DatasetError(f"{token_data.path}: no held-out (test or val) rows to calibrate and check the export on")
    idx = np.random.default_rng(cfg.seed).permutation(idx)[: max(cfg.calibration_bars, cfg.parity_bars)]
    train = token_data.indices("train")
    knob_ranges = target_ranges(compute_attributes(token_data.tokens[train], Vocabulary.from_tokens(run.vocab))) \
        if len(train) else None  # fmt: skip
    return export_model(
        run.model, out, run.vocab, dict(run.reg_dims), token_data.tokens[idx],
        recipe=run.info.get("recipe", {}),
        metrics=read_eval(run.run_dir) or {},
        data={"path": str(token_data.path), "kind": token_data.kind, "rows": len(token_data),
              "heldout_split": split, "heldout_rows": int((token_data.split == {"val": 1, "test": 2}[split]).sum())},
        config=cfg, progress=progress, knob_ranges=knob_ranges,
    )
