"""Metadata document parsing and validation, and the knob calibration tables (no torch, no onnx)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from arvae_midi.core.tokens import TICK_POSITIONS, Vocabulary
from arvae_midi.engine.calibration import KNOB_STEPS, isotonic_fit, knob_attribute, knob_table, latent_grid
from arvae_midi.engine.metadata import FORMAT_VERSION, Calibration, parse_metadata
from arvae_midi.errors import ModelFileError


def _cal(dim: int, median: list[float]) -> dict[str, Any]:
    n = len(median)
    return {"dim": dim, "latent": list(np.linspace(-2, 2, n)), "median": median,
            "q25": [m - 0.1 for m in median], "q75": [m + 0.1 for m in median], "bars": 10}  # fmt: skip


def _doc(**changes: Any) -> dict[str, Any]:
    vocab = Vocabulary()
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "vocab": list(vocab.tokens),
        "pitch_range": [vocab.low, vocab.high],
        "grid": {"ticks_per_bar": 24, "beats_per_bar": 4, "tick_positions": TICK_POSITIONS.tolist()},
        "latent_dim": 8,
        "attribute_dims": {"note_density": 1, "contour": 3},
        "calibration": {"note_density": _cal(1, [0.1, 0.2, 0.4]), "contour": _cal(3, [0.3, 0.0, -0.3])},
        "recipe": {"name": "x"},
    }
    doc.update(changes)
    return doc


def test_parse_valid_document() -> None:
    meta = parse_metadata(json.dumps(_doc()))
    assert meta.vocab == Vocabulary() and meta.latent_dim == 8
    assert meta.attributes == ["note_density", "contour"]  # latent-dim order
    assert meta.free_dims == [0, 2, 4, 5, 6, 7]
    assert parse_metadata(meta.to_json()).document == meta.document  # round trip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no 'arvae_midi' metadata"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps(_doc(format_version=99)), "format version 99 is not supported"),
        (json.dumps({k: v for k, v in _doc().items() if k != "format_version"}), "format version None"),
        (json.dumps({k: v for k, v in _doc().items() if k != "calibration"}), "calibration"),
        (json.dumps(_doc(extra=1)), "unknown key"),
        (json.dumps(_doc(latent_dim="8")), "expected an integer"),
        (json.dumps(_doc(vocab=["__", "rest", "60", "62"])), "vocab"),
        (json.dumps(_doc(pitch_range=[50, 84])), "pitch_range"),
        (json.dumps(_doc(grid={"ticks_per_bar": 16, "beats_per_bar": 4, "tick_positions": [0.0] * 16})),
         "24-tick"),
        (json.dumps(_doc(attribute_dims={"note_density": 1, "contour": 9})), "distinct dims"),
        (json.dumps(_doc(attribute_dims={"note_density": 1})), "calibration covers"),
        (json.dumps(_doc(calibration={"note_density": _cal(2, [0.1, 0.2]), "contour": _cal(3, [0.0, 0.1])})),
         "is for dim 2"),
        (json.dumps(_doc(calibration={"note_density": _cal(1, [0.1]), "contour": _cal(3, [0.0, 0.1])})),
         "at least 2 grid points"),
    ],
)
def test_parse_rejects(text: str | None, message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        parse_metadata(text, "m.onnx")


def _calibration(latent: list[float], median: list[float]) -> Calibration:
    return Calibration(dim=0, latent=latent, median=median, q25=median, q75=median, bars=1)


def test_knob_table_rising_curve_maps_monotonically() -> None:
    cal = _calibration([-1.0, 0.0, 1.0, 2.0], [0.0, 0.1, 0.5, 0.6])
    table = knob_table(cal)
    assert table.shape == (KNOB_STEPS,)
    assert table[0] == pytest.approx(-1.0) and table[-1] == pytest.approx(2.0)
    assert np.all(np.diff(table) >= 0)
    expected = knob_attribute(cal)
    # The knob is linear in the attribute: equal knob steps give equal attribute steps.
    np.testing.assert_allclose(np.diff(expected), 0.6 / 127, atol=1e-5)


def test_knob_table_falling_and_non_monotone_curves() -> None:
    falling = knob_table(_calibration([-1.0, 0.0, 1.0], [0.9, 0.5, 0.1]))
    assert falling[0] == pytest.approx(1.0) and falling[-1] == pytest.approx(-1.0)  # knob up = attribute up
    assert np.all(np.diff(knob_attribute(_calibration([-1.0, 0.0, 1.0], [0.9, 0.5, 0.1]))) >= 0)
    # A dip in the middle: the latent value still moves one way and spans the whole grid.
    bumpy = knob_table(_calibration([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.4, 0.2, 0.5, 1.0]))
    assert np.all(np.diff(bumpy) >= 0) and bumpy[0] == 0.0 and bumpy[-1] == pytest.approx(4.0)


def test_isotonic_fit() -> None:
    np.testing.assert_allclose(isotonic_fit(np.array([0.0, 0.4, 0.2, 0.5, 1.0])), [0.0, 0.3, 0.3, 0.5, 1.0])
    np.testing.assert_allclose(isotonic_fit(np.array([3.0, 2.0, 1.0])), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(isotonic_fit(np.array([1.0, 2.0])), [1.0, 2.0])


def test_knob_table_flat_curve_spreads_over_latent_grid() -> None:
    table = knob_table(_calibration([-1.0, 0.0, 1.0], [0.3, 0.3, 0.3]))
    np.testing.assert_allclose(table, np.linspace(-1, 1, KNOB_STEPS), atol=1e-6)


def test_latent_grid() -> None:
    values = np.random.default_rng(0).normal(size=1000)
    grid = latent_grid(values, 33, (1.0, 99.0))
    assert grid.shape == (33,) and np.all(np.diff(grid) > 0)
    assert grid[0] == pytest.approx(np.percentile(values, 1)) and grid[-1] == pytest.approx(np.percentile(values, 99))
    collapsed = latent_grid(np.full(50, 0.25), 5, (1.0, 99.0))
    np.testing.assert_allclose(collapsed, [-0.25, 0.0, 0.25, 0.5, 0.75])
