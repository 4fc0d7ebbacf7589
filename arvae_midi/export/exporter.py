"""Export a trained VAE to one self-describing ``.onnx`` file, calibrated and parity-checked.

The steps, each in a module of its own:

1. :func:`arvae_midi.export.graph.build_graph`: encoder + greedy decoder as one ONNX graph;
2. calibration of each regularised attribute on held-out bars (:mod:`arvae_midi.engine.calibration`)
   through that graph, run by onnxruntime;
3. the metadata document (:mod:`arvae_midi.engine.metadata`) written into the file;
4. :func:`arvae_midi.export.parity.check_parity`: the file reloaded by the engine against torch on
   held-out bars: identical greedy tokens (with and without a key mask) and mu within ``mu_atol``.

Any failure raises ModelFileError and leaves no output file behind. :func:`export_run` does the
same for a run folder, taking the held-out bars from the run's dataset.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper

from arvae_midi import __version__
from arvae_midi.core.attributes import compute_attributes
from arvae_midi.core.constants import SPLITS
from arvae_midi.core.tokens import TICK_POSITIONS, TICKS_PER_BAR, TICKS_PER_BEAT, Vocabulary
from arvae_midi.engine.calibration import DEFAULT_POINTS, calibrate, target_ranges
from arvae_midi.engine.feeds import session_functions
from arvae_midi.engine.metadata import FORMAT_VERSION, METADATA_KEY, GridInfo, MetadataDocument, document_to_json
from arvae_midi.errors import ConfigError, DatasetError, ModelFileError
from arvae_midi.export.graph import build_graph
from arvae_midi.export.parity import check_parity
from arvae_midi.progress import Progress, ProgressFn, reporter
from arvae_midi.train.models import VAE


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



def _session_fns(model_bytes: bytes) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """encode / decode callables over the bare graph (no metadata yet), for calibration."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return session_functions(ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"]))


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
    report = reporter(progress)
    report(Progress("tracing the graph"))
    graph = build_graph(model, cfg.opset)
    encode, decode = _session_fns(graph.SerializeToString())
    calibration = calibrate(encode, decode, cal_bars, voc, dict(attribute_dims), cfg.calibration_points,
                            progress=report, targets=knob_ranges)

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
        report(Progress("checking parity"))
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
    from arvae_midi.train.run import load_run_data, read_eval

    cfg = config or ExportConfig()
    run = load_run(run_dir, device="cpu")
    token_data = load_run_data(run, data)
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
              "heldout_split": split, "heldout_rows": int((token_data.split == SPLITS[split]).sum())},
        config=cfg, progress=progress, knob_ranges=knob_ranges,
    )
