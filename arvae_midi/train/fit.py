"""``arvae-midi fit``: the user's MIDI files -> a fine-tuned, calibrated model file, in one call.

Stages, all inside one wall-clock budget (``minutes``, counted from the call):

1. **dataset**: :func:`~arvae_midi.train.midi_dataset.save_midi_dataset` into the run folder
   (``RUN_DIR/data.npz``; split by file);
2. **before**: the start model's figures on held-out bars (:func:`arvae_midi.engine.figures.model_figures`:
   reconstruction accuracy, knob Spearman) — bars of the test files, untransposed, with a note;
   the start model is the shipped ``default.onnx`` for ``init="default"``, else the init run
   exported to ``RUN_DIR/before.onnx``;
3. **fine-tune**: the ``finetune`` recipe (:func:`~arvae_midi.train.finetune.finetune_recipe`) from
   the init weights, its time limit = what the budget leaves after a reserve for the last two
   stages (estimated from how long stage 2 took);
4. **export + after**: :func:`~arvae_midi.export.exporter.export_run` (calibration on held-out
   bars, parity check) to ``out``, then the same figures on the same bars.

``RUN_DIR/fit.json`` keeps the figures. Progress goes to one :data:`~arvae_midi.progress.ProgressFn`:
each stage starts with a report whose ``message`` names it, then the stage's own reports
(files read, knob sweeps, training batches, calibration).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from arvae_midi.engine.engine import DEFAULT_MODEL, Engine
from arvae_midi.engine.figures import ModelFigures, model_figures
from arvae_midi.errors import ConfigError, DatasetError
from arvae_midi.progress import Progress, ProgressFn
from arvae_midi.train.midi_dataset import MidiDatasetConfig, MidiDatasetSummary, save_midi_dataset


@dataclass
class FitConfig:
    """Options of :func:`fit`."""

    minutes: float = 10.0  # wall-clock budget of the whole call
    init: str = "default"  # start point: "default" or a run folder
    preset: str = "default"  # recipe whose objective / loss weights are fine-tuned (finetune_recipe)
    run_dir: str | None = None  # None: runs/<out stem> next to the output file (made unique)
    figure_bars: int = 100  # held-out bars the knob sweeps of the before / after figures use
    recon_bars: int = 5000  # held-out bars the reconstruction figure uses
    calibration_bars: int = 512
    seed: int = 0
    threads: int = 1

    def validate(self) -> None:
        """ConfigError for values out of range."""
        if not self.minutes > 0:
            raise ConfigError(f"minutes must be > 0, got {self.minutes}")
        if self.figure_bars < 1 or self.calibration_bars < 1 or self.threads < 1:
            raise ConfigError("figure_bars, calibration_bars and threads must be >= 1")


#: A knob whose Spearman falls by more than this after fine-tuning is reported (FitReport.warnings).
KNOB_DROP = 0.05


@dataclass
class FitReport:
    """What :func:`fit` produced."""

    out: Path
    run_dir: Path
    dataset: MidiDatasetSummary
    before: ModelFigures
    after: ModelFigures
    steps: int
    train_seconds: float
    seconds: float
    init: str = "default"  # the start point: "default" or a run folder

    def warnings(self, knob_drop: float = KNOB_DROP) -> list[str]:
        """What got worse on the held-out bars: reconstruction, or a knob's Spearman by more than
        ``knob_drop``. Empty when fine-tuning did not make the model worse there."""
        out = []
        before, after = self.before, self.after
        if after.reconstruction < before.reconstruction:
            out.append(f"the fine-tuned model reconstructs your held-out bars less well than the start model "
                       f"({after.reconstruction:.1%} vs {before.reconstruction:.1%}): the start model "
                       f"({self.start_label}) may serve this music as well")
        for name, rho in after.spearman.items():
            old = before.spearman.get(name)
            if old is not None and old - rho > knob_drop:
                out.append(f"the {name} knob follows less well after fine-tuning (Spearman {old:.3f} -> {rho:.3f})")
        return out

    @property
    def start_label(self) -> str:
        """How to name the start model to the user."""
        return "the shipped default" if self.init == "default" else str(self.init)


def default_run_dir(out: Path) -> Path:
    """``runs/<stem>`` next to ``out``, with -2, -3 ... appended when that folder exists."""
    base = out.parent / "runs" / out.stem
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def heldout_bars(data_path: Path, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` bars (N, 24) of the test files, each with a note, every bar once, in its own key.

    A bar whose own key lies outside the vocabulary range (a bass line, a passage of a wide
    line) has no untransposed row; its row of the transposition nearest to 0 semitones stands in.
    """
    with np.load(data_path, allow_pickle=False) as data:
        tokens, split = data["tokens"].astype(np.int64), data["split"]
        transpose, tune, bar = data["transpose"].astype(np.int64), data["tune"], data["bar_index"]
    test = np.flatnonzero((split == 2) & (tokens >= 2).any(axis=1))
    # Sort by (file, bar, |shift|) and keep the first row of every (file, bar).
    order = test[np.lexsort((np.abs(transpose[test]), bar[test], tune[test]))]
    first = np.ones(len(order), bool)
    first[1:] = (tune[order][1:] != tune[order][:-1]) | (bar[order][1:] != bar[order][:-1])
    pool = order[first]
    if len(pool) == 0:
        raise DatasetError(f"{data_path}: no held-out bar with a note to measure the models on")
    chosen = np.sort(np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False))
    return tokens[chosen]


def _start_model(config: FitConfig, run_dir: Path, progress: ProgressFn | None) -> Path:
    """The start model's file: the shipped one, or the init run exported next to the run."""
    if config.init == "default":
        return DEFAULT_MODEL
    from arvae_midi.export.exporter import ExportConfig, export_run

    out = run_dir / "before.onnx"
    export_run(config.init, out, ExportConfig(calibration_bars=config.calibration_bars),
               data=run_dir / "data.npz", progress=progress)  # fmt: skip
    return out


def _figures(engine: Engine, bars: np.ndarray, config: FitConfig, progress: ProgressFn | None) -> ModelFigures:
    return model_figures(engine, bars, sweep_bars=config.figure_bars, seed=config.seed, progress=progress)


def _reserve_seconds(engine: Engine, bars: np.ndarray, calibration_bars: int, measure_s: float) -> float:
    """Seconds to keep after training: export (trace, calibration, parity) and the after figures.

    Calibration decodes ``calibration_bars`` bars at 33 latent points per attribute; one batch
    decode of that size is timed on the start model (the fine-tuned one has the same
    architecture). The after figures take about as long as the before figures did; tracing,
    the trainer's last validation and checkpoint and the file writes get a fixed 30 s, and the
    whole estimate a 1.5x margin for a shared machine.
    """
    mu, _ = engine.encode(bars)
    z = np.resize(mu, (calibration_bars, mu.shape[1]))
    started = time.perf_counter()
    engine.decode(z)
    decode_s = time.perf_counter() - started
    return 1.5 * (33 * len(engine.meta.attributes) * decode_s + measure_s + 30.0)


def fit(
    paths: Sequence[str | Path],
    out: str | Path,
    config: FitConfig | None = None,
    data_config: MidiDatasetConfig | None = None,
    progress: ProgressFn | None = None,
) -> FitReport:
    """Dataset -> fine-tune within the budget -> export -> figures (see the module docstring)."""
    from arvae_midi.export.exporter import ExportConfig, export_run
    from arvae_midi.train.finetune import finetune_recipe, init_weights_path
    from arvae_midi.train.recipe import load_recipe
    from arvae_midi.train.trainer import train

    config = config or FitConfig()
    config.validate()
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * config.minutes

    def stage(message: str) -> None:
        if progress is not None:
            progress(Progress("", message=message))

    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: the model file must end in .onnx")
    init_weights_path(config.init)  # fail before the dataset when the start point is missing
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(out)
    if (run_dir / "model.safetensors").exists() or (run_dir / "checkpoints").exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)

    stage("reading MIDI files")
    data_path = (run_dir / "data.npz").resolve()
    summary = save_midi_dataset(paths, data_path, data_config, progress=progress)
    bars = heldout_bars(data_path, config.recon_bars, config.seed)

    swept = min(len(bars), config.figure_bars)
    stage(f"measuring the start model on {len(bars)} held-out bars ({swept} swept)")
    t_before = time.perf_counter()
    start = _start_model(config, run_dir, progress)
    engine = Engine.load(start, device="cpu", threads=1)
    before = _figures(engine, bars, config, progress)
    measure_s = time.perf_counter() - t_before

    reserve = _reserve_seconds(engine, bars, config.calibration_bars, measure_s)
    limit = max(deadline - time.perf_counter() - reserve, 1.0)
    recipe = finetune_recipe(load_recipe(config.preset), config.init).replace(
        data=str(data_path),
        time_limit_s=limit,
        epochs=100_000,
        threads=config.threads,
        seed=config.seed,
        device="cpu",
        name=f"fit-{out.stem}",
    )
    stage(f"fine-tuning from {config.init} for up to {limit / 60:.1f} min")
    summary_train = train(recipe, run_dir, progress=progress)

    stage("exporting (calibration, parity check)")
    export_run(
        run_dir, out, ExportConfig(calibration_bars=config.calibration_bars, seed=config.seed), progress=progress
    )
    stage(f"measuring the fine-tuned model on {len(bars)} held-out bars ({swept} swept)")
    after = _figures(Engine.load(out, device="cpu", threads=1), bars, config, progress)
    report = FitReport(
        out, run_dir, summary, before, after, summary_train.step, summary_train.seconds, time.perf_counter() - t0,
        config.init,
    )
    (run_dir / "fit.json").write_text(json.dumps({
        "out": str(out), "start_model": str(start), "init": config.init, "minutes": config.minutes,
        "steps": report.steps, "train_seconds": round(report.train_seconds, 1), "seconds": round(report.seconds, 1),
        "heldout_bars": len(bars), "before": asdict(before), "after": asdict(after), "dataset": summary.to_dict(),
        "warnings": report.warnings(),
    }, indent=2) + "\n", encoding="utf-8")  # fmt: skip
    return report
