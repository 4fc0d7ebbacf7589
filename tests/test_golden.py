"""The shipped default model's outputs on the committed example melody, and the README made of them.

Regenerate after a deliberate change (a new default model, a new knob policy, a new table):
``python -m tests.golden --write`` (see :mod:`tests.golden`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import golden
from tests.golden import COMMANDS, MELODY, README, load, readme_block, readme_blocks, same_text, write_melody

REGENERATE = "if the change is deliberate, regenerate with `python -m tests.golden --write`"


@pytest.fixture(scope="module")
def stored() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def fresh(stored: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("golden outputs are pinned on the CPU provider")
    if not golden.DEFAULT_MODEL.is_file():
        pytest.skip("no shipped default model")
    assert golden.model_sha256() == stored["model_sha256"], f"the shipped model changed; {REGENERATE}"
    return {c.name: golden.run(c) for c in COMMANDS}


def test_the_example_melody_is_the_documented_one(tmp_path: Path) -> None:
    assert write_melody(tmp_path / "melody.mid").read_bytes() == MELODY.read_bytes(), REGENERATE


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_tokens_are_pinned_exactly(name: str, stored: dict[str, Any], fresh: dict[str, Any]) -> None:
    assert fresh[name]["tokens"] == stored["commands"][name]["tokens"], f"{name}: tokens differ; {REGENERATE}"


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_printed_output_matches_within_tolerance(name: str, stored: dict[str, Any], fresh: dict[str, Any]) -> None:
    diff = same_text(fresh[name]["output"], stored["commands"][name]["output"])
    assert diff is None, f"{name}: {diff}; {REGENERATE}"


def test_readme_examples_are_the_golden_outputs(stored: dict[str, Any]) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert set(blocks) == {c.name for c in COMMANDS if c.readme}
    for name, body in blocks.items():
        assert body == readme_block(name, stored), f"README block {name!r} drifted; {REGENERATE}"


def test_same_text_is_tolerant_to_noise_only() -> None:
    assert same_text("a 0.2443 b", "a 0.2445 b") is None
    assert same_text("a 0.2443 b", "a 0.2843 b") is not None
    assert same_text("a 0.2443 c", "a 0.2443 b") is not None
    assert same_text("one\ntwo", "one") is not None
