"""Dataclass configs from TOML: unknown keys and wrong types are rejected with a clear message."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from arvae_midi.core.config import from_dict, load_dataclass, to_dict
from arvae_midi.errors import ConfigError


@dataclass
class Inner:
    width: int = 4
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    dims: list[int] = field(default_factory=lambda: [0, 1])
    cap: float | None = None


def test_round_trip_through_dict() -> None:
    cfg = Outer(name="y", inner=Inner(8, 1.0), dims=[3], cap=2.0)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_ints_widen_to_floats_but_not_the_reverse() -> None:
    assert from_dict(Inner, {"rate": 1}).rate == 1.0
    with pytest.raises(ConfigError, match="width"):
        from_dict(Inner, {"width": 1.5})
    with pytest.raises(ConfigError, match="width"):
        from_dict(Inner, {"width": True})


def test_unknown_key_names_the_key_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"inner": {"widht": 3}})
    assert "widht" in str(e.value) and "width" in str(e.value) and "inner" in str(e.value)


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "z"\ncap = 1.5\n[inner]\nwidth = 2\n')
    assert load_dataclass(Outer, path) == Outer(name="z", inner=Inner(2, 0.5), cap=1.5)
    path.write_text("name = [unclosed\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_dataclass(Outer, path)
    with pytest.raises(ConfigError, match="no such file"):
        load_dataclass(Outer, tmp_path / "missing.toml")
