"""Run folders: final model + config, per-epoch checkpoints for ``--resume``, and :func:`load_run`.

Layout of a run folder::

    RUN_DIR/config.json                   recipe + model config, vocab, label names, reg dims, data
    RUN_DIR/model.safetensors             final weights; metadata["config"] = config.json's text
    RUN_DIR/checkpoints/last.safetensors  weights after the last finished epoch
    RUN_DIR/checkpoints/last.json         epoch / step / anneal step + the same run info
    RUN_DIR/checkpoints/disc.safetensors  FactorVAE critic weights (factorvae only)
    RUN_DIR/checkpoints/optim.pt          optimizer (+ grad scaler) state dicts (torch.save)
    RUN_DIR/metrics.jsonl                 one JSON object per epoch

Files are written to a temporary name and renamed, so a run killed mid-write keeps its previous
checkpoint. ``optim.pt`` is read back with ``weights_only=True`` (tensors and plain containers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from arvae_midi.core.config import from_dict, to_dict
from arvae_midi.errors import ArvaeError, ModelFileError
from arvae_midi.train.build import build_model
from arvae_midi.train.models import VAE
from arvae_midi.train.recipe import TrainConfig

#: Version of config.json / last.json; load_run refuses others.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_DIR = "checkpoints"


@dataclass
class LoadedRun:
    """A trained (or checkpointed) run ready for evaluation or export."""

    model: VAE  # in eval mode, on the requested device
    config: TrainConfig
    vocab: list[str]
    label_names: list[str]
    reg_dims: dict[str, int]  # regularised label -> latent dim (empty for non-AR objectives)
    data_path: str
    run_dir: Path
    weights: Path  # the file the weights came from
    info: dict[str, Any] = field(default_factory=dict)  # the whole config.json


def run_info(
    config: TrainConfig, vocab: list[str], label_names: list[str], reg_dims: dict[str, int], kind: str
) -> dict[str, Any]:
    """The content of config.json for a run."""
    return {
        "format_version": FORMAT_VERSION,
        "recipe": to_dict(config),
        "vocab": list(vocab),
        "label_names": list(label_names),
        "reg_dims": dict(reg_dims),
        "data_path": config.data,
        "data_kind": kind,
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``module``'s weights as safetensors at ``path`` (temporary name, then rename)."""
    # clone: safetensors refuses tensors sharing storage, and contiguous copies are what we load.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _load_weights(module: torch.nn.Module, path: Path, device: torch.device | str) -> None:
    try:
        tensors = load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ModelFileError(f"{path}: weights do not fit the model of its config ({first})") from e


def save_run(run_dir: str | Path, model: VAE, info: dict[str, Any]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (its metadata holds the same JSON)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(info, indent=2)
    save_weights(model, run_dir / MODEL_FILE, metadata={"config": text})
    _atomic_write_text(run_dir / CONFIG_FILE, text + "\n")
    return run_dir / MODEL_FILE


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelFileError(f"{path}: missing") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data


def parse_info(info: dict[str, Any], where: Path) -> TrainConfig:
    """Check a config.json / last.json document and rebuild its TrainConfig."""
    version = info.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{where}: format_version {version!r} is not the supported {FORMAT_VERSION}")
    missing = [k for k in ("recipe", "vocab", "label_names", "reg_dims", "data_path") if k not in info]
    if missing:
        raise ModelFileError(f"{where}: lacks {', '.join(missing)}")
    try:
        return from_dict(TrainConfig, info["recipe"], where="recipe")
    except ArvaeError as e:
        raise ModelFileError(f"{where}: invalid recipe ({e})") from e


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of a run folder from config.json and its weights, in eval mode.

    Uses ``model.safetensors`` when training finished, else the last epoch checkpoint, so an
    interrupted run can still be evaluated. ModelFileError when the folder is not a run or a
    file is missing or corrupt.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run folder")
    weights = run_dir / MODEL_FILE
    if weights.is_file():
        info_path = run_dir / CONFIG_FILE
    else:
        weights = run_dir / CHECKPOINT_DIR / "last.safetensors"
        info_path = run_dir / CHECKPOINT_DIR / "last.json"
        if not weights.is_file():
            raise ModelFileError(f"{run_dir}: not a run folder (no {MODEL_FILE} and no checkpoint); train one first")
    info = _read_json(info_path)
    config = parse_info(info, info_path)
    model = build_model(config.model)
    _load_weights(model, weights, device)
    model.to(device).eval()
    return LoadedRun(
        model=model,
        config=config,
        vocab=[str(t) for t in info["vocab"]],
        label_names=[str(n) for n in info["label_names"]],
        reg_dims={str(k): int(v) for k, v in info["reg_dims"].items()},
        data_path=str(info["data_path"]),
        run_dir=run_dir,
        weights=weights,
        info=info,
    )


# -- epoch checkpoints (resume) ----------------------------------------------------------------


def checkpoint_exists(run_dir: str | Path) -> bool:
    """True when ``run_dir`` holds an epoch checkpoint."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR
    return (ckpt / "last.json").is_file() and (ckpt / "last.safetensors").is_file()


def checkpoint_recipe(run_dir: str | Path) -> TrainConfig:
    """The recipe stored with a run's epoch checkpoint (what ``--resume`` continues)."""
    path = Path(run_dir) / CHECKPOINT_DIR / "last.json"
    if not checkpoint_exists(run_dir):
        raise ModelFileError(f"{run_dir}: no checkpoint to resume (no {path})")
    return parse_info(_read_json(path), path)


def save_checkpoint(
    run_dir: str | Path,
    model: torch.nn.Module,
    info: dict[str, Any],
    state: dict[str, int],
    optim_state: dict[str, Any],
    disc: torch.nn.Module | None = None,
) -> None:
    """Write the epoch checkpoint; ``state`` holds counters (epoch = epochs finished, step, ...)."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    save_weights(model, ckpt / "last.safetensors")
    if disc is not None:
        save_weights(disc, ckpt / "disc.safetensors")
    tmp = ckpt / "optim.pt.tmp"
    torch.save(optim_state, tmp)
    os.replace(tmp, ckpt / "optim.pt")
    # last.json goes last: its presence marks a complete checkpoint.
    _atomic_write_text(ckpt / "last.json", json.dumps({**info, "state": state}, indent=2) + "\n")


def load_checkpoint(
    run_dir: str | Path,
    model: torch.nn.Module,
    device: torch.device,
    disc: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, int], dict[str, Any]]:
    """Load the epoch checkpoint into ``model`` (and ``disc``) -> (info, state, optimizer states)."""
    ckpt = Path(run_dir) / CHECKPOINT_DIR
    info = _read_json(ckpt / "last.json")
    parse_info(info, ckpt / "last.json")
    state = info.pop("state", None)
    if not isinstance(state, dict) or "epoch" not in state or "step" not in state:
        raise ModelFileError(f"{ckpt / 'last.json'}: lacks the training state (epoch, step)")
    _load_weights(model, ckpt / "last.safetensors", device)
    if disc is not None:
        _load_weights(disc, ckpt / "disc.safetensors", device)
    try:
        optim_state = torch.load(ckpt / "optim.pt", map_location=device, weights_only=True)
    except FileNotFoundError as e:
        raise ModelFileError(f"{ckpt / 'optim.pt'}: missing") from e
    except Exception as e:  # torch raises several types for a corrupt pickle
        raise ModelFileError(f"{ckpt / 'optim.pt'}: unreadable optimizer state ({e})") from e
    return info, {str(k): int(v) for k, v in state.items()}, optim_state
