"""The training loop: one function, :func:`train`, for every objective, CPU or CUDA, 1..N processes.

Per mini-batch the decoder is teacher-forced with probability ``teacher_forcing`` (decided once per
batch, as the reference), through the model's fast path when ``fast_path`` is set and through the
paper-faithful step loop otherwise; other batches feed back the decoder's own argmax. Loss terms
are computed in float32 even under autocast. After every epoch the run is validated (loss terms
with greedy decoding, and token accuracy of the greedy reconstruction on the val split), one line
is appended to ``metrics.jsonl`` and a checkpoint is written; ``resume=True`` continues from it.

Reproducibility: the shuffle order is a function of (seed, epoch), the teacher-forcing draw of
(seed, step) and the torch RNG is reseeded from (seed, epoch, rank) at every epoch start, so on CPU
"2 epochs" and "1 epoch + resume + 1 epoch" give bit-identical weights.

metrics.jsonl keys: epoch (epochs finished), step, beta, capacity, train_{loss,recon,kl,ar,tc,disc}
(means over the epoch's batches; ar only for arvae, tc/disc only for factorvae), val_{loss,recon,
kl,ar} and val_accuracy (greedy token accuracy), seconds (this epoch), samples_per_s (training).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from arvae_midi.errors import ConfigError
from arvae_midi.progress import Progress, ProgressFn, reporter
from arvae_midi.train import checkpoint as ckpt
from arvae_midi.train import losses
from arvae_midi.train.build import build_model
from arvae_midi.train.data import TokenData, TokenDataset, load_npz, make_loader
from arvae_midi.train.distributed import (
    DistInfo,
    all_reduce_sum,
    average_gradients,
    barrier,
    broadcast_module,
    resolve_device,
    setup_distributed,
    teardown_distributed,
)
from arvae_midi.train.models import VAE, FactorDiscriminator, VAEOutput
from arvae_midi.train.recipe import TrainConfig

#: Batches between refreshes of the loss terms shown in the progress bar (each costs a sync).
_DISPLAY_EVERY = 10


@dataclass
class TrainSummary:
    """What a finished :func:`train` call reports."""

    run_dir: Path
    epochs: int  # epochs finished in total (including resumed ones)
    step: int  # optimizer steps in total
    seconds: float  # training wall time in total
    last: dict[str, Any]  # the last metrics.jsonl line ({} when no epoch ran in this call)


class _Forward(nn.Module):
    """The VAE behind one ``forward`` so DistributedDataParallel sees every training path."""

    def __init__(self, model: VAE, fast_path: bool) -> None:
        super().__init__()
        self.model = model
        self.fast_path = fast_path

    def forward(self, tokens: Tensor, teacher_forcing: bool) -> VAEOutput:
        stepwise = getattr(self.model, "decode_stepwise", None)
        if teacher_forcing and not self.fast_path and stepwise is not None:
            # Paper-faithful teacher forcing: one tick-GRU call per tick.
            mu, logvar = self.model.encode(tokens)
            z = self.model.reparameterize(mu, logvar)
            return VAEOutput(stepwise(z, tokens)[0], mu, logvar, z)
        out: VAEOutput = self.model(tokens, teacher_forcing=teacher_forcing)
        return out


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


KLSchedule = losses.BetaSchedule | losses.CapacitySchedule


def kl_schedule(config: TrainConfig) -> KLSchedule:
    """The KL term of the objective (docs/reference.md §1.4, §3.3).

    arvae / betavae: ``max(0, beta_t * KL - kl_threshold)`` (plain beta*KL without a threshold),
    beta_t ramping to ``beta``; annealed: ``beta * |KL - C_t|``, C_t ramping to ``capacity``;
    factorvae: ``beta * |KL - capacity|`` (no ramp in its presets). Every KL term is 0 during the
    ``warmup_epochs``.
    """
    if config.objective in ("arvae", "betavae"):
        return losses.BetaSchedule(config.beta, config.kl_threshold, config.warmup_epochs, config.ramp_iterations)
    return losses.CapacitySchedule(config.capacity, config.beta, config.warmup_epochs, config.ramp_iterations)


def schedule_values(schedule: KLSchedule, epoch: int, anneal_step: int) -> tuple[float, float]:
    """(beta_t, capacity_t) of ``schedule`` for logging."""
    beta = schedule.beta_at(epoch, anneal_step)
    if isinstance(schedule, losses.CapacitySchedule):
        return beta, schedule.capacity_at(epoch, anneal_step)
    return beta, 0.0


class _Run:
    """State of one training call (model, optimizers, loaders, counters)."""

    def __init__(self, config: TrainConfig, run_dir: Path, dist: DistInfo, device: torch.device) -> None:
        self.dist, self.device, self.run_dir = dist, device, run_dir
        seed_everything(config.seed)
        data = load_npz(config.data, split_seed=config.seed)
        init_weights = None
        if config.init:  # fine-tuning: the model (config and weights) of the start point
            from arvae_midi.train.finetune import load_init

            config, init_weights = load_init(config, data.vocab)
        self.config = config = self._fit_to_data(config, data)
        self.reg_index = data.label_index(config.reg_names)
        self.reg_dims = {name: i for i, name in enumerate(config.reg_names)}
        self.info = ckpt.run_info(config, data.vocab, data.label_names, self.reg_dims, data.kind)
        self.schedule = kl_schedule(config)

        self.model = build_model(config.model)
        if init_weights is not None:
            self.model.load_state_dict(init_weights, strict=True)
        self.model.to(device)
        broadcast_module(self.model, dist)
        self.forward: nn.Module = _Forward(self.model, config.fast_path)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=ids)
        self.optim = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
        self.disc: FactorDiscriminator | None = None
        self.disc_optim: torch.optim.Optimizer | None = None
        if config.objective == "factorvae":
            self.disc = FactorDiscriminator(config.model.latent_dim).to(device)
            broadcast_module(self.disc, dist)
            self.disc_optim = torch.optim.Adam(self.disc.parameters(), lr=config.disc_lr, betas=config.disc_betas,
                                               eps=1e-8)

        # Mixed precision on CUDA only, fp16 + loss scaling: cuDNN GRUs accept bf16 only from
        # cuDNN 9.13 on, fp16 everywhere.
        self.amp_dtype: torch.dtype | None = None
        if device.type == "cuda" and config.amp:
            self.amp_dtype = torch.float16
        elif device.type == "cpu" and config.cpu_amp:
            self.amp_dtype = torch.bfloat16  # no loss scaling needed: bf16 has float32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        per_rank = config.batch_size // dist.world_size
        if per_rank < (2 if config.objective == "factorvae" else 1):
            raise ConfigError(f"batch_size {config.batch_size} is too small for {dist.world_size} processes")
        self.batch = per_rank
        self.train_set = TokenDataset(data, "train")
        self.val_set = TokenDataset(data, "val")
        if len(self.train_set) == 0:
            raise ConfigError(f"{config.data}: the train split is empty")
        self.loader = make_loader(
            self.train_set, per_rank, shuffle=True, seed=config.seed,
            drop_last=len(self.train_set) // dist.world_size >= per_rank,  # the reference drops the tail
            world_size=dist.world_size, rank=dist.rank, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        self.epoch = self.step = self.anneal_step = 0
        self.seconds = 0.0
        self.deadline: float | None = None  # perf_counter() value at which time_limit_s runs out

    @staticmethod
    def _fit_to_data(config: TrainConfig, data: TokenData) -> TrainConfig:
        """The recipe with the model's vocab size taken from the data; sequence lengths must agree."""
        if config.model.seq_len != data.seq_len:
            raise ConfigError(
                f"model.num_beats * model.ticks_per_beat = {config.model.seq_len} but {config.data} holds "
                f"{data.kind} sequences of {data.seq_len} tokens"
            )
        return config.replace(model=replace(config.model, vocab_size=len(data.vocab)))

    # -- counters and checkpoints ----------------------------------------------------------------
    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step, "anneal_step": self.anneal_step,
                "milliseconds": int(self.seconds * 1000)}

    def save(self) -> None:
        optim = {"vae": self.optim.state_dict(), "scaler": self.scaler.state_dict()}
        if self.disc_optim is not None:
            optim["disc"] = self.disc_optim.state_dict()
        ckpt.save_checkpoint(self.run_dir, self.model, self.info, self.state(), optim, self.disc)

    def restore(self) -> None:
        info, state, optim = ckpt.load_checkpoint(self.run_dir, self.model, self.device, self.disc)
        if info["recipe"]["model"] != json.loads(json.dumps(self.info["recipe"]["model"])):
            raise ConfigError(f"{self.run_dir}: the checkpoint's model config differs from the recipe's")
        self.optim.load_state_dict(optim["vae"])
        if optim.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(optim["scaler"])
        if self.disc_optim is not None:
            self.disc_optim.load_state_dict(optim["disc"])
        self.epoch, self.step, self.anneal_step = state["epoch"], state["step"], state["anneal_step"]
        self.seconds = state.get("milliseconds", 0) / 1000.0

    # -- one batch -------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _terms(self, out: VAEOutput, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Loss terms in float32; ``loss`` is the objective minimised by the VAE optimizer."""
        recon = losses.reconstruction_loss(out.logits.float(), tokens)
        kl = losses.kl_divergence(out.mu.float(), out.logvar.float())  # (B,)
        kl_loss = self.schedule.loss(kl, self.epoch, self.anneal_step)
        terms = {"recon": recon, "kl": kl.mean(), "loss": recon + kl_loss}
        if self.reg_index:
            ar = losses.ar_loss(out.z.float(), labels[:, self.reg_index], list(range(len(self.reg_index))),
                                self.config.delta)
            terms["ar"] = ar
            terms["loss"] = terms["loss"] + self.config.gamma * ar
        return terms

    def _backward_step(self, loss: Tensor, optim: torch.optim.Optimizer) -> None:
        optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optim)
        self.scaler.update()

    def train_batch(self, tokens: Tensor, labels: Tensor, teacher_forced: bool) -> dict[str, Tensor]:
        if self.disc is None:
            with self._autocast():
                out = self.forward(tokens, teacher_forcing=teacher_forced)
            terms = self._terms(out, tokens, labels)
            self._backward_step(terms["loss"], self.optim)
            return terms
        # FactorVAE (docs/reference.md §3.3): half 1 trains the VAE with the critic's density-ratio
        # estimate of the total correlation; half 2, permuted per latent dim, is the critic's
        # "product of marginals" class.
        assert self.disc_optim is not None
        half = tokens.shape[0] // 2
        x1, x2 = tokens[:half], tokens[half : 2 * half]
        with self._autocast():
            out = self.forward(x1, teacher_forcing=teacher_forced)
        terms = self._terms(out, x1, labels[:half])
        terms["tc"] = losses.tc_loss(self.disc, out.z.float(), 1.0)
        terms["loss"] = terms["loss"] + self.config.factor_gamma * terms["tc"]
        self._backward_step(terms["loss"], self.optim)
        with torch.no_grad(), self._autocast():
            mu2, logvar2 = self.model.encode(x2)
            z2 = self.model.reparameterize(mu2, logvar2).float()
        d_loss = losses.discriminator_loss(self.disc, out.z.float(), z2)
        self.disc_optim.zero_grad(set_to_none=True)  # also drops the grads the VAE loss left in D
        d_loss.backward()
        average_gradients(self.disc, self.dist)
        self.disc_optim.step()
        terms["disc"] = d_loss
        return terms

    # -- validation ------------------------------------------------------------------------------
    def _val_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Contiguous shards of the val split, one per rank, no padding (exact totals after the sum).
        n = len(self.val_set)
        lo, hi = n * self.dist.rank // self.dist.world_size, n * (self.dist.rank + 1) // self.dist.world_size
        for i, start in enumerate(range(lo, hi, self.batch)):
            if self.config.max_val_batches is not None and i >= self.config.max_val_batches:
                return
            end = min(start + self.batch, hi)
            yield self.val_set.tokens[start:end], self.val_set.labels[start:end]

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Val loss terms (greedy decoding) and greedy token accuracy, summed over ranks."""
        self.model.eval()
        names = ["loss", "recon", "kl", *(["ar"] if self.reg_index else [])]
        sums = [0.0] * (len(names) + 3)  # + rows, correct tokens, tokens
        for tokens, labels in self._val_batches():
            tokens = tokens.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with self._autocast():
                out = self.model(tokens, teacher_forcing=False)
            terms = self._terms(out, tokens, labels)
            n = tokens.shape[0]
            for i, name in enumerate(names):
                sums[i] += float(terms[name]) * n
            sums[-3] += n
            sums[-2] += float((out.logits.argmax(-1) == tokens).sum())
            sums[-1] += tokens.numel()
        self.model.train()
        total = all_reduce_sum(sums, self.dist, self.device)
        rows, correct, count = total[-3:]
        if rows == 0:
            return {}
        result = {f"val_{name}": total[i] / rows for i, name in enumerate(names)}
        result["val_accuracy"] = correct / count
        return result

    # -- one epoch -------------------------------------------------------------------------------
    def run_epoch(self, progress: ProgressFn) -> dict[str, Any]:
        cfg = self.config
        # RNG streams are functions of (seed, epoch, rank): a resumed run draws what it would have.
        torch.manual_seed(cfg.seed * 1_000_003 + self.epoch * 7_919 + self.dist.rank)
        self.loader.sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
        for group in self.optim.param_groups:  # after a resume too: the checkpoint holds the old lr
            group["lr"] = cfg.lr_at(self.epoch)
        n_batches = len(self.loader)
        if cfg.max_train_batches is not None:
            n_batches = min(n_batches, cfg.max_train_batches)
        of = f"/{cfg.epochs}" if cfg.time_limit_s is None else ""  # a time-limited run ends when time is up
        task, shown = f"epoch {self.epoch + 1}{of}", ""
        self.model.train()
        if self.disc is not None:
            self.disc.train()
        sums: dict[str, Tensor] = {}
        batches = samples = 0
        start = time.perf_counter()
        for i, (tokens, labels) in enumerate(self.loader):
            # The time limit ends an epoch early, after at least one batch.
            if i >= n_batches or (i > 0 and self.deadline is not None and time.perf_counter() >= self.deadline):
                break
            if self.disc is not None and tokens.shape[0] < 2:
                continue  # a FactorVAE step needs two halves
            tokens = tokens.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            teacher_forced = random.Random(cfg.seed * 1_000_003 + self.step).random() < cfg.teacher_forcing
            terms = self.train_batch(tokens, labels, teacher_forced)
            for name, value in terms.items():
                sums[name] = sums.get(name, torch.zeros((), device=self.device)) + value.detach()
            batches += 1
            samples += tokens.shape[0]
            self.step += 1
            if self.epoch >= cfg.warmup_epochs:
                self.anneal_step += 1
            if i % _DISPLAY_EVERY == 0 or i == n_batches - 1:
                shown = " ".join(f"{k} {float(v) / batches:.4f}" for k, v in sums.items())
            progress(Progress(task, i + 1, n_batches, detail=shown))
        names = sorted(sums)
        totals = all_reduce_sum([float(sums[k]) for k in names] + [batches, samples], self.dist, self.device)
        all_batches, all_samples = max(totals[-2], 1.0), totals[-1]
        seconds = time.perf_counter() - start
        # Values of the epoch's last iteration; validation uses them too.
        beta, cap = schedule_values(self.schedule, self.epoch, max(self.anneal_step - 1, 0))
        line: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.step, "beta": beta, "capacity": cap}
        line.update({f"train_{k}": totals[i] / all_batches for i, k in enumerate(names)})
        line.update(self.validate())
        self.epoch += 1
        seconds_total = time.perf_counter() - start
        self.seconds += seconds_total
        line.update({"seconds": round(seconds_total, 3), "samples_per_s": round(all_samples / max(seconds, 1e-9), 1)})
        return line


def _trim_metrics(path: Path, epochs: int) -> None:
    """Keep the metrics lines of the first ``epochs`` epochs (a resumed run rewrites the rest)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()
            and json.loads(ln).get("epoch", 0) <= epochs]  # fmt: skip
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


def train(
    config: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: ProgressFn | None = None
) -> TrainSummary:
    """Train ``config`` into ``run_dir`` (see the module docstring); returns a :class:`TrainSummary`.

    ``resume=True`` continues from ``run_dir/checkpoints`` (starting fresh when there is none);
    without it an existing run in ``run_dir`` is refused rather than overwritten. Under torchrun
    every rank calls this; only rank 0 writes files and reports to ``progress`` (per batch, and
    a summary ``message`` per epoch).
    """
    run_dir = Path(run_dir)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dist = setup_distributed(config.device)
    try:
        device = resolve_device(config.device, dist.local_rank)
        if config.time_limit_s is not None and dist.enabled:  # ranks would stop at different batches
            raise ConfigError("time_limit_s works in single-process runs only, not under torchrun")
        has_run = ckpt.checkpoint_exists(run_dir) or (run_dir / ckpt.MODEL_FILE).exists()
        if has_run and not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        run = _Run(config, run_dir, dist, device)
        if resume and ckpt.checkpoint_exists(run_dir):
            run.restore()
        metrics_path = run_dir / "metrics.jsonl"
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _trim_metrics(metrics_path, run.epoch)
        barrier(dist)
        last: dict[str, Any] = {}
        report = reporter(progress if dist.is_main else None)
        if config.time_limit_s is not None:
            run.deadline = time.perf_counter() + config.time_limit_s - run.seconds
        while run.epoch < run.config.epochs and not (run.deadline and time.perf_counter() >= run.deadline):
            last = run.run_epoch(report)
            if dist.is_main:
                with metrics_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(last) + "\n")
                run.save()
                epochs = run.config.epochs if run.config.time_limit_s is None else None
                report(Progress("", message=_epoch_line(last, epochs)))
            barrier(dist)
        if dist.is_main:
            info = {**run.info, "training": {**run.state(), "seconds": round(run.seconds, 3),
                                             "world_size": dist.world_size, "device": device.type}}
            ckpt.save_run(run_dir, run.model, info)
        barrier(dist)
        return TrainSummary(run_dir, run.epoch, run.step, run.seconds, last)
    finally:
        teardown_distributed(dist)


def _epoch_line(line: dict[str, Any], epochs: int | None) -> str:
    """One console line per epoch: train / val terms, accuracy, speed."""

    def terms(prefix: str) -> str:
        names = [n for n in ("loss", "recon", "kl", "ar", "tc") if f"{prefix}_{n}" in line]
        return " ".join(f"{n} {line[f'{prefix}_{n}']:.4f}" for n in names)

    of = "" if epochs is None else f"/{epochs}"
    text = f"epoch {line['epoch']}{of}  train: {terms('train')}  val: {terms('val')}"
    if "val_accuracy" in line:
        text += f" acc {line['val_accuracy']:.4f}"
    return text + f"  ({line['samples_per_s']:.0f} samples/s)"
