"""The dMelodies benchmark grid: plan the runs, train and evaluate them (resumable), collect records.

The dMelodies paper (§5) trains β-VAE (β ∈ {0.2, 1, 4}), Annealed-VAE (C ∈ {25, 50, 75}) and
FactorVAE (γ ∈ {1, 10, 50}) with the RNN and the CNN VAE for 100 epochs of 512-melody batches,
seeds 0..2. A :class:`RunSpec` is one point of that grid: a preset (``dmelodies-<method>-<arch>``)
with one hyper-parameter overridden through :meth:`TrainConfig.replace`, and a seed. A
:class:`Budget` says how long each run trains; the warm-up and the KL ramp are scaled in proportion
to the paper's 100 epochs x 1,852 iterations, so a short run still passes through warm-up, ramp and
plateau in the paper's proportions (11 % warm-up epochs, ramp over 54 % of the iterations).

Each run lives in ``ROOT/<run id>``: the trainer's run folder (checkpoint after every epoch, so an
interrupted run resumes with the trainer's ``resume``) plus ``record.json``, the run's line of the
results file (:func:`evaluate_dmelodies`: greedy reconstruction accuracy and the dMelodies /
disentanglement_lib MIG, Modularity and SAP on sampled z of held-out test melodies).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arvae_midi.errors import ConfigError

if TYPE_CHECKING:  # keeps torch out of the module import
    from arvae_midi.train.recipe import TrainConfig

#: method -> (preset stem, overridden TrainConfig field, the paper's grid, middle value).
METHODS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "betavae": ("betavae", "beta", (0.2, 1.0, 4.0)),
    "annealed": ("annealed", "capacity", (25.0, 50.0, 75.0)),
    "factorvae": ("factorvae", "factor_gamma", (1.0, 10.0, 50.0)),
}
METHOD_LABELS = {"betavae": "β-VAE", "annealed": "Annealed-VAE", "factorvae": "FactorVAE"}
HYPER_LABELS = {"beta": "β", "capacity": "C", "factor_gamma": "γ"}
#: The hyper-parameter as it appears in run ids.
HYPER_IDS = {"beta": "beta", "capacity": "C", "factor_gamma": "gamma"}
ARCHS = ("cnn", "rnn")
#: The paper's budget: 100 epochs of the whole training split (70 % of 1,354,752 melodies).
PAPER_EPOCHS = 100
PAPER_ITERATIONS_PER_EPOCH = 1_852  # floor(948,326 / 512), the reference drops the last batch
RECORD_FILE = "record.json"
LOCK_FILE = ".lock"

#: progress(event, run id, details): events "start", "trained", "evaluated", "skip" (already
#: evaluated), "busy" (another process holds the run's lock).
GridProgress = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class RunSpec:
    """One grid point: method, architecture, hyper-parameter value, seed."""

    method: str
    arch: str
    value: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.arch not in ARCHS:
            raise ConfigError(f"arch {self.arch!r} is not one of {', '.join(ARCHS)}")

    @property
    def preset(self) -> str:
        return f"dmelodies-{METHODS[self.method][0]}-{self.arch}"

    @property
    def hyperparameter(self) -> str:
        return METHODS[self.method][1]

    @property
    def run_id(self) -> str:
        return f"{self.method}-{self.arch}-{HYPER_IDS[self.hyperparameter]}{self.value:g}-s{self.seed}"


@dataclass(frozen=True)
class Budget:
    """Training length of every run: ``epochs`` x ``batches`` (None = the whole split) of ``batch_size``."""

    epochs: int = 10
    batches: int | None = 200
    batch_size: int = 512
    lr: float = 1e-3
    eval_items: int = 10_000

    def __post_init__(self) -> None:
        if self.epochs < 1 or (self.batches is not None and self.batches < 1) or self.batch_size < 2:
            raise ConfigError(f"budget needs epochs >= 1, batches >= 1 (or None), batch_size >= 2: {self}")
        if self.lr <= 0 or self.eval_items < 10:
            raise ConfigError(f"budget needs lr > 0 and eval_items >= 10: {self}")

    @classmethod
    def parse(cls, text: str, **fields: Any) -> Budget:
        """``"EPOCHSxBATCHES"`` (e.g. ``10x200``) or ``paper`` (100 full epochs, lr 1e-4)."""
        if text == "paper":
            return cls(epochs=PAPER_EPOCHS, batches=None, **{"lr": 1e-4, **fields})
        try:
            epochs, batches = (int(part) for part in text.lower().split("x"))
        except ValueError as e:
            raise ConfigError(f"budget {text!r}: give EPOCHSxBATCHES (e.g. 10x200) or 'paper'") from e
        return cls(epochs=epochs, batches=batches, **fields)

    def iterations(self) -> int:
        """Optimizer steps of one run (the paper's 1,852 per epoch when ``batches`` is None)."""
        return self.epochs * (self.batches if self.batches is not None else PAPER_ITERATIONS_PER_EPOCH)


GRIDS = ("cnn", "rnn-middle", "default", "rnn", "full")


def plan_grid(grid: str = "default", seeds: Sequence[int] = (0,)) -> list[RunSpec]:
    """The runs of a named grid for each seed, cheapest first within a seed.

    ``cnn``: the paper's 9 CNN runs; ``rnn-middle``: β-VAE and Annealed-VAE at the middle value,
    RNN; ``default``: both; ``rnn``: the 9 RNN runs; ``full``: all 18. Within a seed the CNN runs
    come middle value first, so a grid cut short still covers every method.
    """
    if grid not in GRIDS:
        raise ConfigError(f"grid {grid!r} is not one of {', '.join(GRIDS)}")
    if not seeds:
        raise ConfigError("give at least one seed")

    def all_values(arch: str, seed: int) -> list[RunSpec]:
        # middle, low, high: the middle values of all methods first.
        order = (1, 0, 2)
        return [RunSpec(m, arch, METHODS[m][2][i], seed) for i in order for m in METHODS]

    runs: list[RunSpec] = []
    for seed in seeds:
        if grid in ("cnn", "default", "full"):
            runs += all_values("cnn", seed)
        if grid in ("rnn-middle", "default"):
            runs += [RunSpec(m, "rnn", METHODS[m][2][1], seed) for m in ("betavae", "annealed")]
        if grid in ("rnn", "full"):
            runs += all_values("rnn", seed)
    return runs


def run_config(spec: RunSpec, budget: Budget, data: str | Path) -> TrainConfig:
    """The preset of ``spec`` with its hyper-parameter, seed and ``budget`` applied.

    Warm-up epochs and ramp iterations scale with the budget's share of the paper's 100 x 1,852
    iterations (at least one of each where the preset has them), so ``Budget.parse("paper")``
    gives the preset's own 11 warm-up epochs and 100,000-iteration ramp.
    """
    from arvae_midi.train.recipe import load_recipe

    config = load_recipe(spec.preset)
    share = budget.iterations() / (PAPER_EPOCHS * PAPER_ITERATIONS_PER_EPOCH)
    warmup = max(1, round(config.warmup_epochs * budget.epochs / PAPER_EPOCHS)) if config.warmup_epochs else 0
    ramp = max(1, round(config.ramp_iterations * share)) if config.ramp_iterations else 0
    return config.replace(
        name=spec.run_id, data=str(data), seed=spec.seed, epochs=budget.epochs, max_train_batches=budget.batches,
        batch_size=budget.batch_size, lr=budget.lr, warmup_epochs=min(warmup, budget.epochs - 1),
        ramp_iterations=ramp, threads=1, **{spec.hyperparameter: float(spec.value)},
    )  # fmt: skip


def epochs_done(run_dir: Path) -> int:
    """Epochs in the run folder's last checkpoint (0 when there is none)."""
    path = run_dir / "checkpoints" / "last.json"
    if not path.is_file():
        return 0
    return int(json.loads(path.read_text(encoding="utf-8")).get("state", {}).get("epoch", 0))


def _check_same_run(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume a run folder trained with other settings (another budget or grid point)."""
    from arvae_midi.core.config import to_dict

    path = run_dir / "config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("recipe", {})
    planned = json.loads(json.dumps(to_dict(config)))
    # epochs may grow (a run trained in pieces); the model's vocab size comes from the data.
    ignore = {"epochs", "model", "threads", "device"}
    diff = sorted(k for k in planned if k not in ignore and saved.get(k) != planned[k])
    if diff:
        raise ConfigError(
            f"{run_dir} holds a run with other settings ({', '.join(diff)}); "
            "use another --out or the budget it was started with"
        )


def train_run(spec: RunSpec, budget: Budget, data: str | Path, run_dir: Path, max_epochs: int | None = None) -> int:
    """Train (or resume) one run up to the budget, or ``max_epochs`` more epochs; returns epochs done."""
    from arvae_midi.train.trainer import train

    config = run_config(spec, budget, data)
    _check_same_run(run_dir, config)
    done = epochs_done(run_dir)
    target = budget.epochs if max_epochs is None else min(budget.epochs, done + max_epochs)
    if done >= target:
        return done
    train(config.replace(epochs=target), run_dir, resume=True, progress=None)
    return epochs_done(run_dir)


def evaluate_dmelodies(run_dir: Path, data: str | Path, items: int, seed: int = 0) -> dict[str, Any]:
    """Greedy reconstruction accuracy and the dMelodies metrics of a run on ``items`` test melodies.

    As the reference (reference-impl.md §5.3): z is one seeded sample of q(z|x); reconstruction
    decodes that z with argmax feedback; MIG / Modularity / SAP use the disentanglement_lib
    definitions (:mod:`arvae_midi.train.metrics_dl`). Keys: ``reconstruction_accuracy``, ``mig``,
    ``modularity``, ``sap``, ``mig_per_factor`` / ``sap_per_factor`` {factor name: value}, ``n_items``.
    """
    import numpy as np
    import torch

    from arvae_midi.train import metrics_dl
    from arvae_midi.train.checkpoint import load_run
    from arvae_midi.train.data import load_npz

    run = load_run(run_dir, device="cpu")
    token_data = load_npz(data, split_seed=run.config.seed)
    names = list(run.label_names)
    idx = np.random.default_rng(seed).permutation(token_data.indices("test"))[:items]
    tokens = token_data.tokens[idx]
    factors = token_data.labels[idx][:, token_data.label_index(names)]
    gen = torch.Generator().manual_seed(seed)
    zs, decoded = [], []
    with torch.inference_mode():
        for start in range(0, len(idx), 1024):
            mu, logvar = run.model.encode(torch.as_tensor(tokens[start : start + 1024], dtype=torch.long))
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
            zs.append(z.numpy())
            decoded.append(run.model.generate(z).numpy())
    z_all = np.concatenate(zs).astype(np.float64)
    accuracy = float((np.concatenate(decoded) == tokens).mean())
    dm = metrics_dl.dmelodies_metrics(z_all, factors.astype(np.int64), names, with_explicitness=False)
    return {
        "reconstruction_accuracy": accuracy,
        "mig": dm["mig"]["mean"],
        "modularity": dm["modularity"]["mean"],
        "sap": dm["sap"]["mean"],
        "mig_per_factor": dm["mig"]["per_attribute"],
        "sap_per_factor": dm["sap"]["per_attribute"],
        "n_items": int(len(idx)),
    }


def _train_seconds(run_dir: Path) -> float:
    info = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return float(info.get("training", {}).get("seconds", 0.0))


def run_one(
    spec: RunSpec,
    budget: Budget,
    data: str | Path,
    root: Path,
    max_epochs: int | None = None,
    progress: GridProgress | None = None,
) -> dict[str, Any] | None:
    """Train (resuming) and evaluate one run; returns its record, or None while it is unfinished.

    The record is also written to ``ROOT/<run id>/record.json``; a run that has one is skipped.
    """
    import torch

    torch.set_num_threads(1)
    report = progress or (lambda event, run_id, details: None)
    run_dir = root / spec.run_id
    record_path = run_dir / RECORD_FILE
    if record_path.is_file():
        report("skip", spec.run_id, {})
        return dict(json.loads(record_path.read_text(encoding="utf-8")))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not _lock(run_dir):
        report("busy", spec.run_id, {})  # another process of this machine is training it
        return None
    try:
        return _train_and_evaluate(spec, budget, data, run_dir, max_epochs, report)
    finally:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)


def _lock(run_dir: Path) -> bool:
    """Take ``run_dir/.lock`` (holding this pid); a lock of a process that no longer runs is taken over."""
    path = run_dir / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text(encoding="utf-8").strip() or 0)
                os.kill(pid, 0)  # signal 0: only checks that the process exists
                return False
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale: its process was killed
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _train_and_evaluate(
    spec: RunSpec, budget: Budget, data: str | Path, run_dir: Path, max_epochs: int | None, report: GridProgress
) -> dict[str, Any] | None:
    record_path = run_dir / RECORD_FILE
    report("start", spec.run_id, {"epochs_done": epochs_done(run_dir)})
    done = train_run(spec, budget, data, run_dir, max_epochs)
    report("trained", spec.run_id, {"epochs_done": done})
    if done < budget.epochs:
        return None
    t0 = time.perf_counter()
    metrics = evaluate_dmelodies(run_dir, data, budget.eval_items, seed=0)
    eval_seconds = time.perf_counter() - t0
    state = json.loads((run_dir / "checkpoints" / "last.json").read_text(encoding="utf-8"))["state"]
    record = {
        "run_id": spec.run_id,
        "preset": spec.preset,
        "method": spec.method,
        "architecture": spec.arch,
        "hyperparameter": {"name": spec.hyperparameter, "value": spec.value},
        "seed": spec.seed,
        "budget": asdict(budget),
        "samples_seen": int(state["step"]) * budget.batch_size,
        "train_seconds": round(_train_seconds(run_dir), 1),
        "eval_seconds": round(eval_seconds, 1),
        "wall_seconds": round(_train_seconds(run_dir) + eval_seconds, 1),
        **metrics,
    }
    record_path.write_text(json.dumps(_finite(record), indent=2) + "\n", encoding="utf-8")
    report("evaluated", spec.run_id, record)
    return record


def _finite(obj: Any) -> Any:
    """NaN / inf -> None so the files are strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _run_one_args(args: tuple[Any, ...]) -> dict[str, Any] | None:
    return run_one(*args)


def run_grid(
    specs: Sequence[RunSpec],
    budget: Budget | Mapping[str, Budget],
    data: str | Path,
    root: str | Path,
    *,
    jobs: int = 1,
    max_epochs: int | None = None,
    progress: GridProgress | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate ``specs`` (``jobs`` runs at a time, one torch thread each); finished records.

    ``budget`` is one :class:`Budget` or one per architecture (``{"cnn": ..., "rnn": ...}``). Runs
    already evaluated are skipped and unfinished ones resume, so the grid can be run in pieces;
    ``max_epochs`` caps the epochs each run trains in this call. Records come back in ``specs`` order.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def budget_of(spec: RunSpec) -> Budget:
        if isinstance(budget, Budget):
            return budget
        if spec.arch not in budget:
            raise ConfigError(f"no budget for architecture {spec.arch!r}")
        return budget[spec.arch]

    if jobs <= 1:
        records = [run_one(s, budget_of(s), data, root, max_epochs, progress) for s in specs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Longest first (RNN runs cost ~10x a CNN run), so the workers finish together.
        order = sorted(range(len(specs)), key=lambda i: specs[i].arch != "rnn")
        # spawn: a fresh interpreter per worker (torch and fork do not mix); progress stays here.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {i: pool.submit(_run_one_args, (specs[i], budget_of(specs[i]), str(data), root, max_epochs))
                       for i in order}  # fmt: skip
            records = []
            for i, spec in enumerate(specs):
                record = futures[i].result()
                if progress is not None:
                    progress("evaluated" if record else "trained", spec.run_id, record or {})
                records.append(record)
    return [r for r in records if r is not None]


def collect(root: str | Path, specs: Sequence[RunSpec] | None = None) -> list[dict[str, Any]]:
    """The records under ``root`` (all of them, or those of ``specs``), in plan order / by run id."""
    root = Path(root)
    paths = ([root / s.run_id / RECORD_FILE for s in specs] if specs is not None
             else sorted(root.glob(f"*/{RECORD_FILE}")))  # fmt: skip
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]


def write_results(
    path: str | Path,
    records: Sequence[dict[str, Any]],
    note: str = "",
    findings: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """``{"note", "factor_names", "runs": [records], "findings"}`` as indented JSON at ``path``."""
    from arvae_midi.train.dmelodies import FACTOR_NAMES

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"note": note, "factor_names": list(FACTOR_NAMES), "runs": list(records), "findings": list(findings or [])}
    path.write_text(json.dumps(_finite(doc), indent=2) + "\n", encoding="utf-8")
    return path
