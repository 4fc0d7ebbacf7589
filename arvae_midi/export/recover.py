"""Recover a model's torch weights from its exported ``.onnx`` file (the inverse of the exporter).

Used once to ship ``presets/default.safetensors`` next to ``presets/default.onnx``, whose training
run is lost (``bench/recover_default_weights.py``); fine-tuning (``--init default``) starts from it.

How: the ONNX metadata holds the recipe (model config), so the torch model can be rebuilt; what
is missing is where each weight went. The TorchScript exporter renames, transposes and reorders
them (nn.GRU becomes ONNX GRU nodes with gates z, r, h instead of torch's r, z, n, both biases in
one ``B`` tensor; Linear on 3-D input becomes MatMul with the transposed weight; the decoder's
tick GRU is split into one GRU per layer). Rather than hard-code those rules, a *probe* model of
the same config is exported with every parameter element set to a distinct integer-valued float
(``_ID0 + k`` for the k-th element overall: exact in float32 below 2**24). Every float tensor of
the probe graph then names, element by element, the torch parameter element it holds; reading
the same tensors of the real file at the same positions gives every weight back. The probe and
the real graph come from the same exporter code and config, so their tensor names agree; the
recovery refuses (ModelFileError) when they do not, when a tensor holds something other than
copied weights, or when a parameter element is never found. Exactness is then proved by the
parity check of torch against the original file (identical greedy tokens, mu within 1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.config import from_dict
from arvae_midi.engine.metadata import METADATA_KEY
from arvae_midi.errors import ArvaeError, ModelFileError
from arvae_midi.train.build import build_model
from arvae_midi.train.models import VAE
from arvae_midi.train.recipe import TrainConfig

#: First probe id; far above any float constant the exporter writes (1.0, 2.0, SELU's scale ...).
_ID0 = 1_000_000


def _float_tensors(graph: onnx.GraphProto, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every float32 initializer and Constant tensor of ``graph`` and its subgraphs, by name."""
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            out[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                out[node.output[0]] = numpy_helper.to_array(attr.t)
            if attr.type == onnx.AttributeProto.GRAPH:
                _float_tensors(attr.g, out)
    return out


def file_recipe(model: onnx.ModelProto, where: str) -> tuple[TrainConfig, dict[str, Any]]:
    """(recipe, whole metadata document) of an exported model file."""
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelFileError(f"{where}: no {METADATA_KEY!r} metadata; not an arvae-midi model file")
    doc = json.loads(props[METADATA_KEY])
    try:
        return from_dict(TrainConfig, doc["recipe"], where="recipe"), doc
    except (KeyError, ArvaeError) as e:
        raise ModelFileError(f"{where}: the metadata's recipe cannot rebuild the model ({e})") from e


def _probe_ids(model: VAE) -> list[tuple[str, int]]:
    """Fill every parameter with distinct ids; returns (name, first id) per parameter."""
    starts: list[tuple[str, int]] = []
    next_id = _ID0
    with torch.no_grad():
        for name, param in model.named_parameters():
            n = param.numel()
            if next_id + n >= 2**24:
                raise ModelFileError("model too large for the float32 probe (more than ~15.7M weights)")
            param.copy_(torch.arange(next_id, next_id + n, dtype=torch.float64).reshape(param.shape))
            starts.append((name, next_id))
            next_id += n
    return starts


def recover_model(path: str | Path) -> tuple[VAE, TrainConfig, dict[str, Any]]:
    """Rebuild the torch model of an exported file with its weights -> (model in eval mode, recipe, metadata)."""
    from arvae_midi.export.graph import build_graph

    path = Path(path)
    try:
        real = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for a damaged file
        raise ModelFileError(f"{path}: not a readable ONNX file ({e})") from e
    recipe, doc = file_recipe(real, str(path))
    probe = build_model(recipe.model).eval()
    starts = _probe_ids(probe)
    total = sum(p.numel() for p in probe.parameters())
    probe_tensors = _float_tensors(build_graph(probe, int(doc.get("export", {}).get("opset", 17))).graph, {})
    real_tensors = _float_tensors(real.graph, {})

    flat = np.full(total, np.nan, dtype=np.float64)
    for name, ids in probe_tensors.items():
        is_id = (ids >= _ID0) & (ids < _ID0 + total) & (ids == np.round(ids))
        if not is_id.any():
            continue  # an exporter constant, no weight
        if not is_id.all():
            raise ModelFileError(f"{path}: tensor {name!r} mixes weights with computed values; cannot map it back")
        if name not in real_tensors or real_tensors[name].shape != ids.shape:
            raise ModelFileError(
                f"{path}: tensor {name!r} of the probe export is missing or shaped differently "
                "in the file; it was written by a different exporter version"
            )
        flat[(ids.astype(np.int64) - _ID0).ravel()] = real_tensors[name].astype(np.float64).ravel()
    model = build_model(recipe.model)
    offset = 0
    with torch.no_grad():
        for (name, _), param in zip(starts, model.parameters(), strict=True):
            values = flat[offset : offset + param.numel()]
            if np.isnan(values).any():
                raise ModelFileError(f"{path}: parameter {name} is not (entirely) in the file")
            param.copy_(torch.from_numpy(values.reshape(param.shape)).to(param.dtype))
            offset += param.numel()
    return model.eval(), recipe, doc


def run_info_of(recipe: TrainConfig, doc: dict[str, Any], source: str) -> dict[str, Any]:
    """The run folder's config.json document for a recovered model (what ``load_run`` reads)."""
    from arvae_midi.train.checkpoint import run_info

    data = doc.get("data", {})
    info = run_info(
        recipe, list(doc["vocab"]), list(ATTRIBUTE_NAMES), dict(doc["attribute_dims"]), str(data.get("kind", "measure"))
    )
    # Where the weights came from, and that file's figures (the metrics of its lost training run).
    info["recovered_from"] = {
        "file": source,
        "created": doc.get("export", {}).get("created"),
        "metrics": doc.get("metrics", {}),
    }
    return info
