"""Shared fixtures and marker handling for the test suite."""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on a busy 2-core CI machine that makes every torch call
# 5-20x slower. Must be set before torch (and its OpenMP runtime) is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import pytest

from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import Engine
from tests.fixtures.make_tiny_model import FIXTURE, synthetic_bars


@pytest.fixture
def vocab() -> Vocabulary:
    """The default measure vocabulary (MIDI 55..84)."""
    return Vocabulary()


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test is reproducible."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_path() -> Path:
    """``tests/fixtures/tiny.onnx``."""
    return FIXTURE


@pytest.fixture(scope="session")
def tiny_engine(tiny_path: Path) -> Engine:
    """The tiny fixture model on the CPU (shared: the engine is stateless between calls)."""
    return Engine.load(tiny_path, device="cpu")


@pytest.fixture(scope="session")
def heldout_bars() -> np.ndarray:
    """Synthetic bars (400, 24) from a seed the fixture model was not trained on."""
    return synthetic_bars(400, seed=12345)
