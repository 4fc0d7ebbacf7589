"""Shared fixtures and marker handling for the test suite."""

from __future__ import annotations

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
