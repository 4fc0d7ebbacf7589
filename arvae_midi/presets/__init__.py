"""Presets: TOML training recipes, CC maps and the shipped default model.

Training recipes are the ``*.toml`` files here with an ``objective`` key; :func:`preset_path`
finds one by name and :func:`list_presets` lists them (CC maps living next to them are skipped).
"""

from __future__ import annotations

from pathlib import Path

from arvae_midi.errors import ConfigError

#: Folder holding the shipped presets.
PRESET_DIR = Path(__file__).resolve().parent
#: The shipped default model: what ``vary``, ``serve``, ``demo`` and ``info`` load without ``--model``.
DEFAULT_MODEL = PRESET_DIR / "default.onnx"


def _is_recipe(path: Path) -> bool:
    from arvae_midi.core.config import load_toml

    try:
        return "objective" in load_toml(path)
    except ConfigError:
        return False


def list_presets() -> list[str]:
    """Names of the shipped training presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if _is_recipe(p))


def preset_path(name: str) -> Path:
    """Path of the training preset ``name``; ConfigError listing the valid names otherwise."""
    path = PRESET_DIR / f"{name}.toml"
    if "/" in name or "\\" in name or not path.is_file() or not _is_recipe(path):
        raise ConfigError(
            f"unknown preset {name!r}; available: {', '.join(list_presets())} (or a path to a .toml file)"
        )
    return path
