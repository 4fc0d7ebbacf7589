"""The dMelodies grid: planning, per-run configs, resume of a half-finished run, records, figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arvae_midi.errors import ConfigError
from arvae_midi.train import grid
from arvae_midi.train.dmelodies import FACTOR_NAMES
from tests.synthetic import write_synthetic_npz

#: Two epochs of two batches of 32 CNN melodies: a run trains and evaluates in about a second.
TINY = grid.Budget(epochs=2, batches=2, batch_size=32, lr=1e-3, eval_items=60)


@pytest.fixture(scope="module")
def dm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_npz(tmp_path_factory.mktemp("dm") / "dm.npz", "dmelodies", n=600, seed=3)


def test_default_grid_is_the_papers_cnn_grid_plus_two_rnn_runs() -> None:
    runs = grid.plan_grid("default")
    cnn = [r for r in runs if r.arch == "cnn"]
    rnn = [r for r in runs if r.arch == "rnn"]
    assert len(cnn) == 9 and len(rnn) == 2
    assert {(r.method, r.value) for r in cnn} == {
        ("betavae", 0.2), ("betavae", 1.0), ("betavae", 4.0),
        ("annealed", 25.0), ("annealed", 50.0), ("annealed", 75.0),
        ("factorvae", 1.0), ("factorvae", 10.0), ("factorvae", 50.0),
    }  # fmt: skip
    assert {(r.method, r.value) for r in rnn} == {("betavae", 1.0), ("annealed", 50.0)}
    assert [r.method for r in cnn[:3]] == ["betavae", "annealed", "factorvae"]  # middle values first
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(r.seed == 0 for r in runs)


def test_seeds_multiply_the_grid_and_full_has_18_runs_per_seed() -> None:
    runs = grid.plan_grid("full", seeds=[0, 1, 2])
    assert len(runs) == 54
    assert {r.seed for r in runs} == {0, 1, 2}
    assert len({r.run_id for r in runs}) == 54
    assert len(grid.plan_grid("cnn", seeds=[4])) == 9
    with pytest.raises(ConfigError, match="grid"):
        grid.plan_grid("everything")
    with pytest.raises(ConfigError, match="seed"):
        grid.plan_grid("cnn", seeds=[])


def test_run_config_sets_the_hyperparameter_seed_and_scaled_schedule() -> None:
    budget = grid.Budget.parse("10x200")
    beta4 = grid.run_config(grid.RunSpec("betavae", "cnn", 4.0, seed=2), budget, "dm.npz")
    assert (beta4.beta, beta4.seed, beta4.epochs, beta4.max_train_batches) == (4.0, 2, 10, 200)
    assert beta4.objective == "betavae" and beta4.model.arch == "cnn" and beta4.data == "dm.npz"
    # 11 of 100 epochs warm up; the 100,000-iteration ramp keeps its share of 100 x 1,852 iterations.
    assert beta4.warmup_epochs == 1
    assert beta4.ramp_iterations == round(100_000 * 2_000 / (100 * 1_852))
    c75 = grid.run_config(grid.RunSpec("annealed", "rnn", 75.0), budget, "dm.npz")
    assert (c75.objective, c75.capacity, c75.model.arch) == ("annealed", 75.0, "rnn")
    g50 = grid.run_config(grid.RunSpec("factorvae", "cnn", 50.0), budget, "dm.npz")
    assert (g50.factor_gamma, g50.warmup_epochs, g50.ramp_iterations) == (50.0, 0, 0)
    paper = grid.run_config(grid.RunSpec("betavae", "cnn", 1.0), grid.Budget.parse("paper"), "dm.npz")
    assert (paper.epochs, paper.max_train_batches, paper.lr) == (100, None, 1e-4)
    assert (paper.warmup_epochs, paper.ramp_iterations) == (11, 100_000)  # the preset's own schedule


def test_budget_parse_rejects_nonsense() -> None:
    assert grid.Budget.parse("3x7", eval_items=50) == grid.Budget(epochs=3, batches=7, eval_items=50)
    for text in ("10", "ax3", "0x5", "10x0"):
        with pytest.raises(ConfigError):
            grid.Budget.parse(text)


def _spec() -> grid.RunSpec:
    return grid.RunSpec("betavae", "cnn", 1.0)


def test_half_finished_run_resumes_to_the_same_result(dm_data: Path, tmp_path: Path) -> None:
    spec = _spec()
    # Interrupted after one of two epochs: no record yet, a checkpoint at epoch 1.
    assert grid.run_grid([spec], TINY, dm_data, tmp_path / "pieces", max_epochs=1) == []
    run_dir = tmp_path / "pieces" / spec.run_id
    assert grid.epochs_done(run_dir) == 1 and not (run_dir / grid.RECORD_FILE).exists()
    events: list[tuple[str, str]] = []
    [resumed] = grid.run_grid([spec], TINY, dm_data, tmp_path / "pieces",
                              progress=lambda e, run_id, d: events.append((e, run_id)))  # fmt: skip
    assert events[0] == ("start", spec.run_id)
    assert grid.epochs_done(run_dir) == 2
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert resumed["samples_seen"] == 2 * 2 * 32
    # The trainer's resume is exact on CPU: the same metrics as one uninterrupted run.
    [straight] = grid.run_grid([spec], TINY, dm_data, tmp_path / "straight")
    for key in ("reconstruction_accuracy", "mig", "modularity", "sap", "mig_per_factor"):
        assert resumed[key] == straight[key], key
    # A finished run is skipped, its record read back.
    again = grid.run_grid([spec], TINY, dm_data, tmp_path / "pieces",
                          progress=lambda e, run_id, d: events.append((e, run_id)))  # fmt: skip
    assert again == [resumed] and events[-1] == ("skip", spec.run_id)


def test_record_fields_and_per_factor_mig_keys(dm_data: Path, tmp_path: Path) -> None:
    spec = grid.RunSpec("annealed", "cnn", 25.0)
    [record] = grid.run_grid([spec], TINY, dm_data, tmp_path)
    assert list(record["mig_per_factor"]) == list(FACTOR_NAMES)
    assert list(record["sap_per_factor"]) == list(FACTOR_NAMES)
    assert record["preset"] == "dmelodies-annealed-cnn" and record["architecture"] == "cnn"
    assert record["hyperparameter"] == {"name": "capacity", "value": 25.0}
    assert record["seed"] == 0 and record["n_items"] == 60
    assert 0.0 <= record["reconstruction_accuracy"] <= 1.0
    for key in ("mig", "modularity", "sap", "wall_seconds", "train_seconds"):
        assert isinstance(record[key], float)
    out = grid.write_results(tmp_path / "results.json", grid.collect(tmp_path))
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["factor_names"] == list(FACTOR_NAMES) and doc["runs"] == [record]


def test_a_run_of_another_budget_is_not_resumed(dm_data: Path, tmp_path: Path) -> None:
    spec = _spec()
    grid.run_grid([spec], TINY, dm_data, tmp_path, max_epochs=1)
    other = grid.Budget(epochs=2, batches=3, batch_size=32, eval_items=60)
    with pytest.raises(ConfigError, match="max_train_batches"):
        grid.run_grid([spec], other, dm_data, tmp_path)


def test_a_run_locked_by_a_live_process_is_left_alone(dm_data: Path, tmp_path: Path) -> None:
    spec = _spec()
    run_dir = tmp_path / spec.run_id
    run_dir.mkdir()
    (run_dir / grid.LOCK_FILE).write_text(str(os.getpid()), encoding="utf-8")
    events: list[str] = []
    assert grid.run_grid([spec], TINY, dm_data, tmp_path, progress=lambda e, r, d: events.append(e)) == []
    assert events == ["busy"] and grid.epochs_done(run_dir) == 0
    # The lock of a process that has exited is stale and taken over.
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / grid.LOCK_FILE).write_text(done.stdout.strip(), encoding="utf-8")
    assert len(grid.run_grid([spec], TINY, dm_data, tmp_path, max_epochs=1, progress=lambda *a: None)) == 0
    assert grid.epochs_done(run_dir) == 1 and not (run_dir / grid.LOCK_FILE).exists()


def test_figures_are_written(dm_data: Path, tmp_path: Path) -> None:
    from arvae_midi.train.plots_dmelodies import write_figures

    specs = [grid.RunSpec("betavae", "cnn", 0.2), grid.RunSpec("factorvae", "cnn", 1.0)]
    records = grid.run_grid(specs, TINY, dm_data, tmp_path / "runs")
    paths = write_figures(records, tmp_path / "img")
    assert [p.name for p in paths] == [
        "dmelodies_fig3_metrics.png",
        "dmelodies_fig4_reconstruction.png",
        "dmelodies_fig5_mig_vs_recon.png",
        "dmelodies_fig6_factor_mig.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _bench(*args: str) -> dict[str, object]:
    """Run bench/dmelodies_grid.py in a subprocess; its last stdout line as JSON."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "dmelodies_grid.py"), *args],
        capture_output=True, text=True, env=env, cwd=root, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_grid_command_plans_runs_and_resumes_them(dm_data: Path, tmp_path: Path) -> None:
    common = ["--budget", "2x2", "--batch-size", "32", "--eval-items", "60", "--data", str(dm_data),
              "--out", str(tmp_path / "runs")]  # fmt: skip
    planned = _bench("--grid", "default", "--seeds", "0", "1", "--collect", *common)
    assert (planned["planned"], planned["finished"]) == (22, 0)
    one = ["--only", "betavae-cnn-beta1-s0", "--results", str(tmp_path / "dm.json")]
    half = _bench(*common, *one, "--max-epochs", "1")  # interrupted after one of two epochs
    assert (half["planned"], half["finished"]) == (1, 0)
    full = _bench(*common, *one)
    assert (full["planned"], full["finished"]) == (1, 1)
    doc = json.loads((tmp_path / "dm.json").read_text(encoding="utf-8"))
    [record] = doc["runs"]
    assert record["run_id"] == "betavae-cnn-beta1-s0" and record["samples_seen"] == 2 * 2 * 32
    assert list(record["mig_per_factor"]) == doc["factor_names"] == list(FACTOR_NAMES)
