"""Shared fixtures and marker handling for the test suite."""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on a busy 2-core CI machine that makes every torch call
# 5-20x slower. Must be set before torch (and its OpenMP runtime) is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from arvae_midi.core.tokens import Vocabulary


@pytest.fixture
def vocab() -> Vocabulary:
    """The default measure vocabulary (MIDI 55..84)."""
    return Vocabulary()


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test is reproducible."""
    return np.random.default_rng(0)
