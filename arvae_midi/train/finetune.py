"""Fine-tuning: start a training run from the shipped default model's weights or a run's.

``TrainConfig.init`` names the start point: ``"default"`` reads ``presets/default.safetensors``
(a run's ``model.safetensors``: weights + its config.json text in metadata["config"], see
:mod:`arvae_midi.train.checkpoint`), anything else is a run folder. The run then trains the start
point's architecture (its ``model`` config replaces the recipe's) on a dataset that must share
its vocabulary. :func:`finetune_recipe` turns a preset into the fine-tuning recipe: the preset's
objective and loss weights (so the AR loss stays on) with the optimisation of
``presets/finetune.toml`` (lower learning rate, short epochs, small batches).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from arvae_midi.errors import ArvaeError, ConfigError, ModelFileError
from arvae_midi.presets import PRESET_DIR
from arvae_midi.train import checkpoint as ckpt
from arvae_midi.train.recipe import TrainConfig, load_recipe

#: The shipped default model's torch weights (see bench/recover_default_weights.py).
DEFAULT_WEIGHTS = PRESET_DIR / "default.safetensors"
#: Recipe fields :func:`finetune_recipe` takes from ``presets/finetune.toml``.
FINETUNE_FIELDS = ("lr", "epochs", "batch_size", "max_train_batches", "max_val_batches", "teacher_forcing")


def init_weights_path(init: str) -> Path:
    """The safetensors file of an init spec ("default" or a run folder); ModelFileError if absent."""
    if init == "default":
        if not DEFAULT_WEIGHTS.is_file():
            raise ModelFileError(
                f"--init default needs the shipped model's weights at {DEFAULT_WEIGHTS}, which this installation "
                "lacks; pass a run folder (--init RUN_DIR) or reinstall arvae-midi"
            )
        return DEFAULT_WEIGHTS
    run = Path(init)
    if not run.is_dir():
        raise ModelFileError(f"--init {init}: not 'default' and no such run folder")
    for path in (run / ckpt.MODEL_FILE, run / ckpt.CHECKPOINT_DIR / "last.safetensors"):
        if path.is_file():
            return path
    raise ModelFileError(f"--init {init}: not a run folder (no {ckpt.MODEL_FILE} and no checkpoint)")


def read_init(init: str) -> tuple[TrainConfig, dict[str, Any], dict[str, torch.Tensor]]:
    """(recipe, config.json document, weights) of an init spec."""
    path = init_weights_path(init)
    info_path = path.parent / ckpt.CONFIG_FILE if path.name == ckpt.MODEL_FILE else path.with_name("last.json")
    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iteration
    except (OSError, SafetensorError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from e
    if "config" in meta:
        try:
            info = json.loads(meta["config"])
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{path}: metadata['config'] is not JSON ({e})") from e
    elif info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
    else:
        raise ModelFileError(f"{path}: no config in its metadata and no {info_path.name} next to it")
    if not isinstance(info, dict):
        raise ModelFileError(f"{path}: the config is not a JSON object")
    return ckpt.parse_info(info, path), info, weights


def load_init(config: TrainConfig, data_vocab: list[str]) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    """``config`` with the init's model config, and the init's weights (checked against the data)."""
    assert config.init is not None
    recipe, info, weights = read_init(config.init)
    init_vocab = [str(t) for t in info["vocab"]]
    if init_vocab != list(data_vocab):
        raise ConfigError(
            f"--init {config.init}: the start model's vocabulary ({init_vocab[2]}..{init_vocab[-1]}, "
            f"{len(init_vocab)} tokens) differs from the dataset's ({len(data_vocab)} tokens); build the "
            "dataset with the same pitch range"
        )
    if config.objective == "arvae" and len(config.reg_names) > recipe.model.latent_dim:
        raise ConfigError(
            f"--init {config.init}: {len(config.reg_names)} regularised labels, {recipe.model.latent_dim} latent dims"
        )
    try:
        return config.replace(model=replace(recipe.model)), weights
    except ArvaeError as e:
        raise ConfigError(f"--init {config.init}: {e}") from e


def finetune_recipe(base: TrainConfig, init: str) -> TrainConfig:
    """``base`` (its objective, loss weights, data) with the fine-tuning optimisation and ``init``."""
    tune = load_recipe("finetune")
    changes: dict[str, object] = {f: getattr(tune, f) for f in FINETUNE_FIELDS}
    name = base.name if base.name.endswith("finetune") else f"{base.name}-finetune"
    return base.replace(init=init, name=name, **changes)
