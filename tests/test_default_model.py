"""The shipped default model: loads from an installed package, its knobs steer, ``demo`` works.

These run against ``arvae_midi/presets/default.onnx`` and are skipped while it is not shipped.
``ARVAE_TEST_MODEL=PATH`` runs them against another model file instead (e.g.
``tests/fixtures/tiny.onnx``): the install test then builds the package from a copy of the
sources holding that file as ``presets/default.onnx``, and the commands get ``--model PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from arvae_midi.cli import app
from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.midi import read_midi, write_midi
from arvae_midi.core.tokens import Note
from arvae_midi.engine.engine import DEFAULT_MODEL

MODEL_ENV = "ARVAE_TEST_MODEL"
REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _bar(offset: float, notes: list[tuple[int, float, float]]) -> list[Note]:
    return [Note(p, offset + s, offset + e, 90) for p, s, e in notes]


#: Four bars of a folk-like tune in G major: quarters, eighths, a dotted rhythm, a triplet.
MELODY: list[Note] = [
    *_bar(0, [(67, 0, 1), (71, 1, 1.5), (74, 1.5, 2), (72, 2, 3), (71, 3, 4)]),
    *_bar(4, [(69, 0, 0.75), (67, 0.75, 1), (66, 1, 1.5), (67, 1.5, 2), (69, 2, 2 + 1 / 3),
              (71, 2 + 1 / 3, 2 + 2 / 3), (72, 2 + 2 / 3, 3), (74, 3, 4)]),
    *_bar(8, [(76, 0, 0.5), (74, 0.5, 1), (72, 1, 1.5), (71, 1.5, 2), (69, 2, 2.5), (67, 2.5, 3), (66, 3, 4)]),
    *_bar(12, [(67, 0, 1.5), (62, 1.5, 2), (67, 2, 4)]),
]  # fmt: skip


@pytest.fixture(scope="module")
def model() -> Path:
    """The model under test: ``$ARVAE_TEST_MODEL`` or the shipped default (skip while missing)."""
    override = os.environ.get(MODEL_ENV)
    if override:
        return Path(override).resolve()
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped default model yet ({DEFAULT_MODEL.relative_to(REPO)} missing); "
                    f"{MODEL_ENV}=tests/fixtures/tiny.onnx runs these tests against the fixture")  # fmt: skip
    return DEFAULT_MODEL


def _model_args(model: Path) -> list[str]:
    """No ``--model`` for the shipped default: the commands must find it by themselves."""
    return [] if model == DEFAULT_MODEL else ["--model", str(model)]


@pytest.mark.slow
def test_installed_package_loads_the_default_model(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the package offline needs setuptools")
    # Build from a copy of the sources so the build leaves nothing in the working tree.
    src = tmp_path / "src"
    shutil.copytree(REPO / "arvae_midi", src / "arvae_midi", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src / name)
    if model != DEFAULT_MODEL:
        # The model under test stands in for the shipped one, in the sources, so the build's
        # package data must carry it either way.
        shutil.copy(model, src / "arvae_midi" / "presets" / "default.onnx")
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation", "--quiet",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    installed = target / "arvae_midi" / "presets" / "default.onnx"
    assert installed.is_file(), "the package does not install presets/default.onnx (package data)"
    assert installed.read_bytes() == model.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import json, arvae_midi\n"
        "from arvae_midi.engine.engine import Engine\n"
        "e = Engine.load(device='cpu')\n"
        "print(json.dumps([str(e.path), arvae_midi.__file__, e.meta.name]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    path, package, name = json.loads(run.stdout.splitlines()[-1])
    assert Path(package).resolve().is_relative_to(target.resolve())  # not the editable checkout
    assert Path(path).resolve() == installed.resolve()
    assert name


def test_vary_moves_each_attribute_with_its_knob(model: Path, tmp_path: Path) -> None:
    src = tmp_path / "melody.mid"
    write_midi(src, MELODY, bpm=110.0)
    assert len(read_midi(src).bars) == 4
    means: dict[tuple[str, int], float] = {}
    for name in ATTRIBUTE_NAMES:
        for knob in (0, 127):
            values = []
            for seed in (0, 1):  # bar i uses seed + i: 4 bars x 2 seeds per knob position
                res = runner.invoke(app, ["vary", str(src), "--out", str(tmp_path / "out.mid"), "--set",
                                          f"{name}={knob}", "--seed", str(seed), "--device", "cpu", "--json",
                                          *_model_args(model)])  # fmt: skip
                assert res.exit_code == 0, res.output
                values += [row["output"][name] for row in json.loads(res.output)["bars"]]
            means[name, knob] = float(np.mean(values))
        assert means[name, 0] < means[name, 127], (name, means)


def test_demo_writes_its_files(model: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out-dir", str(out_dir), *_model_args(model)])
    assert res.exit_code == 0, res.output
    midi, png = out_dir / "demo.mid", out_dir / "demo.png"
    assert f"wrote {midi}" in res.output and f"wrote {png}" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    song = read_midi(midi)
    assert len(song.notes) > 0 and len(song.bars) >= 2  # the input bar and its variations
