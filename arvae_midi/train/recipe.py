"""Training recipe: one dataclass (with the model config nested) loaded from a TOML preset.

Objectives and the loss each one trains (KL = KL(q(z|x) || N(0, I)) summed over latent dims,
averaged over the batch; t counts iterations after the warm-up):

* ``arvae``: recon + KL term + gamma * AR loss on the ``regularized`` labels (latent dims 0..k-1);
* ``betavae``: recon + KL term;
* ``annealed``: recon + beta * |KL - C_t|, C_t ramping to ``capacity`` (Burgess et al.);
* ``factorvae``: recon + beta * |KL - capacity| + factor_gamma * TC estimate from a discriminator
  trained with its own Adam (``disc_lr``, ``disc_betas``) on the second half of each batch.

"KL term" for ``arvae`` / ``betavae`` is ``beta_t * KL``, or ``max(0, beta_t * KL - kl_threshold)``
when a threshold is set (dMelodies). ``beta_t`` is 0 during ``warmup_epochs``, then ramps as
``(1 + beta)^(t / ramp_iterations) - 1`` when ``ramp_iterations`` > 0, else equals ``beta``
(docs/reference.md §1.4, §3.3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.config import from_dict, load_toml
from arvae_midi.errors import ConfigError
from arvae_midi.train.models import ModelConfig

OBJECTIVES = ("arvae", "betavae", "annealed", "factorvae")


@dataclass
class TrainConfig:
    """A training run: data, objective and its hyper-parameters, optimisation, runtime."""

    name: str = "custom"
    #: Dataset npz (relative paths are relative to the working directory).
    data: str = "data/folk-chorales.npz"
    objective: str = "arvae"
    model: ModelConfig = field(default_factory=ModelConfig)

    # --- loss weights and schedules -------------------------------------------------------------
    beta: float = 0.001  # KL weight (target of the ramp when ramp_iterations > 0)
    gamma: float = 1.0  # AR-loss weight (arvae)
    delta: float = 10.0  # AR-loss tanh sharpness
    capacity: float = 0.0  # C of |KL - C|: annealed target, factorvae fixed value
    kl_threshold: float = 0.0  # tau of max(0, beta*KL - tau) (arvae/betavae); 0 = plain beta*KL
    warmup_epochs: int = 0  # leading epochs with beta (annealed: the KL term) = 0
    ramp_iterations: int = 0  # exponential ramp length in iterations after warm-up; 0 = none
    factor_gamma: float = 10.0  # FactorVAE total-correlation weight
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.8, 0.9)
    #: Label names regularised by the AR loss, mapped in order to latent dims 0..k-1.
    regularized: list[str] = field(default_factory=lambda: list(ATTRIBUTE_NAMES))

    # --- optimisation ---------------------------------------------------------------------------
    batch_size: int = 256  # global batch (split across DDP processes)
    epochs: int = 30
    lr: float = 1e-4
    #: Step schedule: from each listed epoch on (0-based, ascending) the VAE's learning rate is
    #: multiplied once more by ``lr_decay`` (FactorVAE's discriminator keeps ``disc_lr``). Set at
    #: the start of every epoch from the epoch number alone, so a resumed run follows the schedule.
    lr_decay_epochs: list[int] = field(default_factory=list)
    lr_decay: float = 0.1
    #: Probability that a training mini-batch is decoded teacher-forced (else argmax feedback).
    teacher_forcing: float = 0.5
    #: Teacher-forced batches run the whole sequence through the GRUs in one call.
    fast_path: bool = True
    max_train_batches: int | None = None  # cap on batches per epoch (quick runs)
    max_val_batches: int | None = None  # cap on validation batches per epoch
    #: Start from these weights instead of a fresh init: "default" (the shipped model's
    #: presets/default.safetensors) or a run folder; the model config then comes from them
    #: (arvae_midi.train.finetune).
    init: str | None = None
    #: Stop training after this many seconds (checked every batch); None = run every epoch.
    time_limit_s: float | None = None

    # --- runtime --------------------------------------------------------------------------------
    seed: int = 0  # torch / numpy / python seeds and the dMelodies split
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"
    amp: bool = True  # mixed precision on CUDA (fp16 autocast + GradScaler); ignored on CPU
    #: bfloat16 autocast on CPU (weights, Adam and loss terms stay float32): matrix products run
    #: on AMX / AVX512-BF16 units where the CPU has them. Off in the paper-faithful presets.
    cpu_amp: bool = False
    num_workers: int = 0  # DataLoader workers
    #: torch CPU threads per process; None = torch's default (one per core). On a shared machine
    #: 1 is often faster than oversubscribed cores.
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if not self.device == "auto" and not self.device == "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device {self.device!r} must be auto, cpu, cuda or cuda:N")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ConfigError(f"teacher_forcing is a probability in [0, 1], got {self.teacher_forcing}")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "ramp_iterations", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ConfigError(f"time_limit_s must be > 0 when set, got {self.time_limit_s}")
        for name in ("max_train_batches", "max_val_batches", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 when set, got {value}")
        for name in ("beta", "gamma", "delta", "capacity", "kl_threshold", "factor_gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.disc_lr <= 0:
            raise ConfigError("lr and disc_lr must be > 0")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if any(e < 1 for e in self.lr_decay_epochs) or list(self.lr_decay_epochs) != sorted(set(self.lr_decay_epochs)):
            raise ConfigError(f"lr_decay_epochs must be ascending epochs >= 1, got {self.lr_decay_epochs}")
        if len(set(self.regularized)) != len(self.regularized):
            raise ConfigError(f"regularized lists a label twice: {self.regularized}")
        if self.objective == "arvae" and not self.regularized:
            raise ConfigError("objective arvae needs at least one label in `regularized`")
        if self.objective == "arvae" and len(self.regularized) > self.model.latent_dim:
            raise ConfigError(
                f"{len(self.regularized)} regularized labels but only {self.model.latent_dim} latent dims"
            )

    @property
    def reg_names(self) -> list[str]:
        """Labels actually regularised: ``regularized`` for arvae, none for the other objectives."""
        return list(self.regularized) if self.objective == "arvae" else []

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` under the step schedule."""
        return self.lr * self.lr_decay ** sum(1 for e in self.lr_decay_epochs if epoch >= e)

    def replace(self, **changes: object) -> TrainConfig:
        """Copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def load_recipe(preset: str | Path) -> TrainConfig:
    """A TrainConfig from a preset name (``arvae_midi/presets/NAME.toml``) or a TOML file path.

    Unknown keys and wrong types raise ConfigError naming the key; an unknown preset name
    raises ConfigError listing the available ones.
    """
    from arvae_midi.presets import preset_path

    path = Path(preset)
    if not (path.suffix == ".toml" or path.is_file()):
        path = preset_path(str(preset))
    table = load_toml(path)
    table.setdefault("name", path.stem)
    return from_dict(TrainConfig, table, where=path.name)
