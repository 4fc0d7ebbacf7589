"""Training throughput: a recipe's training step against the paper-faithful step-by-step loop.

One process, one machine, the same token batches: every mode runs full training steps (encode,
reparameterise, decode, recon + beta*KL + AR loss on 4 dims, backward, Adam), interleaved in rounds
so that load from other processes hits every mode alike. Two sides:

* the **reference**, paper-faithful: ``folk-arvae``'s MeasureVAE (bi-GRU encoder, 2x128 GRUs,
  dropout 0.5, float32), batch 256. Modes ``stepwise`` (teacher-forced, one tick-GRU step per tick,
  as ashispati/ar-vae) and ``argmax`` (free-running step loop, the other half of its 50/50
  teacher-forcing mix);
* the **recipe** under test (``--recipe``, default ``default-fast``): its model (encoder, widths,
  dropout), batch size and ``cpu_amp`` (bf16 autocast). Modes ``fast`` (teacher-forced, beats
  folded into one tick-GRU call) and ``argmax``.

``ratio`` = recipe ``fast`` samples/s over reference ``stepwise`` samples/s (the issue's figure);
``mix_ratio`` compares whole training runs: each side's teacher-forced and argmax steps weighted by
its recipe's ``teacher_forcing`` probability. ``--recipe folk-arvae`` gives the old same-model
comparison (fast path vs step loop only). Threads are the same for both sides. The last stdout line
is one JSON object.

    python bench/train_throughput.py [--recipe default-fast] [--batch N] [--threads 1]
        [--steps 16] [--device auto] [--data data/folk-chorales.npz]
"""

from __future__ import annotations

import os

# On a machine shared with other busy processes, OpenMP's default spin-waiting makes 2-thread torch
# 5-20x slower (threads spin on barriers while their partner is descheduled); passive waiting keeps
# the comparison about the model. Must be set before torch (libgomp) starts; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from arvae_midi.core.config import to_dict  # noqa: E402
from arvae_midi.train.losses import ar_loss, kl_divergence, reconstruction_loss  # noqa: E402
from arvae_midi.train.models import HierarchicalVAE, ModelConfig  # noqa: E402
from arvae_midi.train.recipe import load_recipe  # noqa: E402

REFERENCE = "folk-arvae"  # the paper-faithful recipe


@dataclass
class Side:
    """One model under test: its modes, batch, autocast dtype and teacher-forcing probability."""

    name: str
    model: HierarchicalVAE
    opt: torch.optim.Optimizer
    batch: int
    amp: torch.dtype | None
    teacher_forcing: float
    modes: tuple[str, ...]


def _tokens(data: str | None, seq_len: int, vocab: int, seed: int) -> np.ndarray:
    """Token rows (N, T) of ``data`` (npz ``tokens``), else 100,000 uniform random rows."""
    if data:
        with np.load(Path(data), allow_pickle=False) as f:
            tokens = np.asarray(f["tokens"], dtype=np.int64)
        if tokens.shape[1] != seq_len or tokens.max() >= vocab:
            raise SystemExit(
                f"{data}: tokens {tokens.shape} (max id {tokens.max()}) do not fit the model (T={seq_len}, V={vocab})"
            )
        return tokens
    return np.random.default_rng(seed).integers(0, vocab, size=(100_000, seq_len))


def _step_fn(side: Side, mode: str) -> Callable[[torch.Tensor], float]:
    """One training step of ``mode`` on a batch; returns its loss."""
    model = side.model
    amp = side.amp

    def step(x: torch.Tensor) -> float:
        ctx = torch.autocast(x.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with ctx:
            mu, logvar = model.encode(x)
            z = model.reparameterize(mu, logvar)
            logits = None
            if mode == "fast":
                logits = model.decode_teacher_forced(z, x)
            elif mode == "stepwise":
                logits = model.decode_stepwise(z, x)[0]
            elif mode == "argmax":
                logits = model.decode_stepwise(z)[0]
        # loss terms in float32, as the trainer; attributes stand-in: the AR loss cost depends
        # only on the batch size
        mu, logvar, z = mu.float(), logvar.float(), z.float()
        loss = 1e-3 * kl_divergence(mu, logvar).mean() + ar_loss(z, x[:, :4].float(), [0, 1, 2, 3], 10.0)
        if logits is not None:
            loss = loss + reconstruction_loss(logits.float(), x)
        side.opt.zero_grad(set_to_none=True)
        loss.backward()
        side.opt.step()
        return float(loss.detach())

    return step


def _side(name: str, recipe: str, batch: int | None, vocab: int, device: torch.device, modes: tuple[str, ...]) -> Side:
    cfg = load_recipe(recipe)
    model_cfg: ModelConfig = replace(cfg.model, vocab_size=vocab)
    model = HierarchicalVAE(model_cfg).to(device).train()
    amp = torch.bfloat16 if (cfg.cpu_amp and device.type == "cpu") else None
    if device.type == "cuda" and cfg.amp:
        amp = torch.float16  # no GradScaler here: the bench times steps, it does not train
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return Side(name, model, opt, batch or cfg.batch_size, amp, cfg.teacher_forcing, modes)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every mode of both sides and return the result dict."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    vocab = 32
    if args.data:
        with np.load(Path(args.data), allow_pickle=False) as f:
            vocab = len(f["vocab"]) if "vocab" in f.files else int(f["tokens"].max()) + 1
    ref = _side("reference", REFERENCE, None, vocab, device, ("stepwise", "argmax", "encoder"))
    rec = _side("recipe", args.recipe, args.batch, vocab, device, ("fast", "argmax", "encoder"))
    tokens = _tokens(args.data, ref.model.config.seq_len, vocab, args.seed)
    rng = np.random.default_rng(args.seed)
    per_round = max(1, args.steps // args.rounds)
    jobs: list[tuple[str, Callable[[torch.Tensor], float], list[torch.Tensor], int]] = []
    for side in (ref, rec):
        batches = [
            torch.from_numpy(tokens[rng.integers(0, len(tokens), side.batch)]).to(device) for _ in range(per_round)
        ]
        jobs += [(f"{side.name}/{m}", _step_fn(side, m), batches, side.batch) for m in side.modes]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _, fn, batches, _ in jobs:  # warm-up: allocator, thread pools, autograd caches
        for x in batches[: args.warmup]:
            fn(x)
    times: dict[str, list[float]] = {key: [] for key, *_ in jobs}
    for _ in range(args.rounds):
        for key, fn, batches, _ in jobs:
            for x in batches:
                sync()
                t0 = time.perf_counter()
                fn(x)
                sync()
                times[key].append(time.perf_counter() - t0)

    mean = {k: statistics.fmean(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    sps = {key: batch / mean[key] for key, _, _, batch in jobs}

    def mix(side: Side, tf_mode: str) -> float:
        """Samples/s of a whole run: teacher-forced steps with p = teacher_forcing, else argmax."""
        t = side.teacher_forcing
        seconds = t * mean[f"{side.name}/{tf_mode}"] + (1 - t) * mean[f"{side.name}/argmax"]
        return side.batch / seconds

    fast, step = sps["recipe/fast"], sps["reference/stepwise"]
    rec_cfg = rec.model.config
    return {
        "recipe": args.recipe,
        "encoder": rec_cfg.encoder,
        "batch": rec.batch,
        "threads": args.threads,
        "cpu_amp": rec.amp == torch.bfloat16,
        "reference_recipe": REFERENCE,
        "reference_batch": ref.batch,
        "argmax_recipe_samples_per_s": round(sps["recipe/argmax"], 2),
        "argmax_reference_samples_per_s": round(sps["reference/argmax"], 2),
        "encoder_only_recipe_samples_per_s": round(sps["recipe/encoder"], 2),
        "encoder_only_reference_samples_per_s": round(sps["reference/encoder"], 2),
        "mix_recipe_samples_per_s": round(mix(rec, "fast"), 2),
        "mix_reference_samples_per_s": round(mix(ref, "stepwise"), 2),
        "mix_ratio": round(mix(rec, "fast") / mix(ref, "stepwise"), 3),
        "ratio_median": round((rec.batch / median["recipe/fast"]) / (ref.batch / median["reference/stepwise"]), 3),
        "step_ms_mean": {k: round(1e3 * v, 1) for k, v in mean.items()},
        "device": device.type if device.type != "cuda" else torch.cuda.get_device_name(device),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "timed_steps_per_mode": len(times["recipe/fast"]),
        "data": args.data or "random",
        "params": {
            "recipe": sum(p.numel() for p in rec.model.parameters()),
            "reference": sum(p.numel() for p in ref.model.parameters()),
        },
        "torch": torch.__version__,
        "model": to_dict(rec_cfg),
        "fast_samples_per_s": round(fast, 2),
        "stepwise_samples_per_s": round(step, 2),
        "ratio": round(fast / step, 3),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="default-fast", help="preset name or TOML path of the recipe under test")
    p.add_argument("--batch", type=int, default=None, help="the recipe's batch size (default: the recipe's own)")
    p.add_argument("--steps", type=int, default=16, help="timed steps per mode")
    p.add_argument("--rounds", type=int, default=4, help="interleaving rounds (steps split among them)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--data", default=None, help="npz with a tokens array (default: random tokens)")
    p.add_argument("--seed", type=int, default=0)
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
