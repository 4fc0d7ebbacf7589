"""DistributedDataParallel: two CPU processes (gloo) started by torchrun train one tiny epoch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from arvae_midi.train.checkpoint import load_run
from tests.synthetic import write_synthetic_npz


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tmp_path: Path) -> None:
    data = write_synthetic_npz(tmp_path / "measure.npz", "measure", n=240, seed=0)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "arvae_midi.cli", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
        "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A hang guard, not a speed limit: three torch processes on a loaded 2-core machine took
    # 227 s here (load average 18), so the old 300 s limit made this test fail by timing. The
    # launcher and its workers share one session, so a hang is ended whole, none left behind.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung for 30 min: {stdout[-2000:]}{stderr[-4000:]}")
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    # Only rank 0 talks and writes.
    assert stdout.count("done: 1 epochs") == 1, stdout
    info = json.loads((out / "config.json").read_text())
    assert info["training"]["world_size"] == 2
    # 168 train rows, sharded 84 per process, batch 32 split 16 per process (tail dropped) -> 5 steps.
    assert info["training"]["step"] == 84 // 16
    (line,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert line["step"] == 5 and 0.0 <= line["val_accuracy"] <= 1.0
    assert load_run(out).config.name == "tiny"
