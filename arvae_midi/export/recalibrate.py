"""Re-calibrate an exported model file in place: knob ranges from a dataset, no training run needed.

``arvae-midi calibrate MODEL.onnx --data FILE.npz`` reads the model through the engine
(onnxruntime), takes the knob range of every regularised attribute from the dataset's training
bars (:func:`arvae_midi.engine.calibration.target_ranges`: 2nd..98th percentile), re-measures the
latent -> attribute curves on its held-out bars (validation split, else test) and rewrites the
``calibration`` of the file's metadata. Nothing else in the file changes. The new file is written
next to the old one, loaded and checked by the engine, then moved over it (``os.replace``), so an
error at any point leaves the user's file as it was.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arvae_midi.core.attributes import ATTRIBUTE_NAMES, compute_attributes
from arvae_midi.core.constants import SPLITS
from arvae_midi.engine.calibration import DEFAULT_EXTEND, DEFAULT_POINTS, calibrate, target_ranges
from arvae_midi.engine.dataset import dataset_bars
from arvae_midi.engine.engine import Engine
from arvae_midi.engine.metadata import METADATA_KEY, Calibration, document_to_json
from arvae_midi.errors import ConfigError, DatasetError, ModelFileError
from arvae_midi.progress import ProgressFn

TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = SPLITS["train"], SPLITS["val"], SPLITS["test"]


@dataclass
class RecalibrationReport:
    """What :func:`recalibrate` measured and wrote."""

    path: Path
    train_bars: int
    calibration_bars: int
    heldout_split: str
    target_ranges: dict[str, tuple[float, float]]
    calibration: dict[str, Calibration]



def recalibrate(
    model: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    calibration_bars: int = 512,
    points: int = DEFAULT_POINTS,
    extend: float = DEFAULT_EXTEND,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> RecalibrationReport:
    """Rewrite the calibration of ``model`` (in place, or to ``out``) from dataset ``data``.

    Knob ranges: the training split's attribute percentiles; curves: ``calibration_bars`` seeded
    held-out bars (validation split, else test), ``points`` grid values per attribute on a grid
    widened by ``extend`` (see :mod:`arvae_midi.engine.calibration`).
    """
    import onnx  # the [export] extra: rewriting metadata_props needs the protobuf model

    model = Path(model)
    target = Path(out) if out is not None else model
    if calibration_bars < 1 or points < 2 or extend < 0:
        raise ConfigError("calibration_bars must be >= 1, points >= 2 and extend >= 0")
    engine = Engine.load(model, device="cpu", threads=0)
    meta = engine.meta
    tokens, split, _ = dataset_bars(data, meta.vocab)
    train = tokens[split == TRAIN_SPLIT]
    if len(train) == 0:
        raise DatasetError(f"{data}: no training (split {TRAIN_SPLIT}) bars to take the knob ranges from")
    held_name, held = "val", np.flatnonzero(split == VAL_SPLIT)
    if len(held) == 0:
        held_name, held = "test", np.flatnonzero(split == TEST_SPLIT)
    if len(held) == 0:
        raise DatasetError(f"{data}: no held-out (validation or test) bars to calibrate on")
    bars = tokens[np.random.default_rng(seed).permutation(held)[:calibration_bars]]
    ranges = target_ranges(compute_attributes(train, meta.vocab))
    ranges = {a: r for a, r in ranges.items() if a in meta.attribute_dims and a in ATTRIBUTE_NAMES}
    calibration = calibrate(
        lambda t: engine.encode(t)[0], lambda z: engine.decode(z), bars, meta.vocab, meta.attribute_dims,
        points, progress=progress, targets=ranges, extend=extend,
    )
    doc = dataclasses.replace(
        meta.document,
        calibration=calibration,
        data={**meta.document.data, "calibration_bars": len(bars), "calibration_split": held_name,
              "knob_range_source": {"path": str(data), "split": "train", "bars": len(train),
                                    "percentiles": [2.0, 98.0]}},
        export={**meta.document.export,
                "recalibrated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    )
    try:
        proto = onnx.load(str(model))
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelFileError(f"{model}: cannot read the ONNX file ({e})") from e
    props = {p.key: p.value for p in proto.metadata_props}  # other keys are kept as they are
    onnx.helper.set_model_props(proto, {**props, METADATA_KEY: document_to_json(doc)})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        Engine.load(tmp, device="cpu")  # the engine must accept the new file before it replaces the old
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return RecalibrationReport(target, len(train), len(bars), held_name, ranges, calibration)
