"""The one progress-callback type: library calls report :class:`Progress`, they never draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.progress import Progress, reporter
from tests.fixtures.make_tiny_model import TINY_MODEL, synthetic_bars


def test_reporter_passes_a_callback_and_ignores_reports_without_one(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Progress] = []
    reporter(seen.append)(Progress("x", 1, 2))
    assert seen == [Progress("x", 1, 2)]
    reporter(None)(Progress("ignored"))  # no error, nothing drawn
    assert capsys.readouterr() == ("", "")


def test_export_reports_each_stage_and_calibration_to_its_total(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    from arvae_midi.export.exporter import ExportConfig, export_model
    from arvae_midi.train.build import build_model

    torch.manual_seed(0)
    seen: list[Progress] = []
    config = ExportConfig(calibration_points=3, calibration_bars=8, parity_bars=8)
    dims = {a: i for i, a in enumerate(ATTRIBUTE_NAMES)}
    export_model(build_model(TINY_MODEL), tmp_path / "m.onnx", list(Vocabulary().tokens), dims,
                 synthetic_bars(16, seed=1), config=config, progress=seen.append)  # fmt: skip
    tasks = [p.task for p in seen]
    assert tasks[0] == "tracing the graph" and tasks[-1] == "checking parity"
    calibrating = [p for p in seen if p.task == "calibrating"]
    assert calibrating and calibrating[-1].completed == calibrating[-1].total == 4 * 3 * 8
    assert np.all(np.diff([p.completed for p in calibrating]) > 0)
    assert capsys.readouterr() == ("", "")  # the library itself draws nothing
