"""Training throughput: fast teacher-forced decoder vs the paper-faithful step-by-step loop.

One process, one model, one machine: every mode runs full training steps (encode, reparameterise,
decode, recon + beta*KL + AR loss on 4 dims, backward, Adam) on the same batches, interleaved in
rounds so that load from other processes hits every mode alike. Modes:

* ``fast``: teacher-forced, all beats folded into one tick-GRU call (``decode_teacher_forced``);
* ``stepwise``: teacher-forced, one tick-GRU step per tick (the reference loop);
* ``argmax``: free-running step loop feeding back the argmax (the other half of the reference's
  50/50 teacher-forcing mix; no fast path exists for it);
* ``encoder``: encoder + KL + AR loss only, the cost shared by every mode (for the breakdown).

The 50/50 mixes (reference: stepwise-TF or argmax per batch; ours: fast-TF or argmax) are derived
from the measured step times. The last stdout line is one JSON object.

Both teacher-forced paths do the same GEMM work (the fast path only saves per-tick framework
overhead and kernel launches), and the bidirectional encoder is shared, so on a CPU, where batch
256 is GEMM-bound, the gain is modest; per-tick overhead dominates on a GPU and at small batches.

    python bench/train_throughput.py [--batch 256] [--steps 24] [--threads 2] [--device auto]
        [--preset measure|dmelodies-rnn] [--data data/folk.npz]
"""

from __future__ import annotations

import os

# On a machine shared with other busy processes, OpenMP's default spin-waiting makes 2-thread torch
# 5-20x slower (threads spin on barriers while their partner is descheduled); passive waiting keeps
# the comparison about the model. Must be set before torch (libgomp) starts; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from arvae_midi.core.config import to_dict  # noqa: E402
from arvae_midi.train.losses import ar_loss, kl_divergence, reconstruction_loss  # noqa: E402
from arvae_midi.train.models import HierarchicalVAE, ModelConfig  # noqa: E402

PRESETS = {
    "measure": ModelConfig(),
    "dmelodies-rnn": ModelConfig(num_beats=2, ticks_per_beat=8, enc_hidden=64, dec_hidden=64, enc_dropout=0.2,
                                 dec_dropout=0.2, head_hidden=128, vocab_size=52),
}
MODES = ("fast", "stepwise", "argmax", "encoder")


def _batches(cfg: ModelConfig, batch: int, count: int, data: str | None, seed: int) -> list[torch.Tensor]:
    """``count`` token batches (B, T): rows of ``data`` (npz ``tokens``) or uniform random ids."""
    rng = np.random.default_rng(seed)
    if data:
        with np.load(Path(data), allow_pickle=False) as f:
            tokens = np.asarray(f["tokens"], dtype=np.int64)
        if tokens.shape[1] != cfg.seq_len or tokens.max() >= cfg.vocab_size:
            raise SystemExit(f"{data}: tokens {tokens.shape} (max id {tokens.max()}) do not fit the model "
                             f"(T={cfg.seq_len}, V={cfg.vocab_size})")
        rows = rng.integers(0, len(tokens), size=(count, batch))
        return [torch.from_numpy(tokens[r]) for r in rows]
    return [torch.from_numpy(rng.integers(0, cfg.vocab_size, size=(batch, cfg.seq_len))) for _ in range(count)]


def _step_fn(model: HierarchicalVAE, opt: torch.optim.Optimizer, mode: str) -> Callable[[torch.Tensor], float]:
    """One training step of ``mode`` on a batch; returns its loss."""

    def step(x: torch.Tensor) -> float:
        mu, logvar = model.encode(x)
        z = model.reparameterize(mu, logvar)
        # attributes stand-in: the AR loss cost depends only on the batch size
        labels = x[:, :4].float()
        loss = 1e-3 * kl_divergence(mu, logvar).mean() + ar_loss(z, labels, [0, 1, 2, 3], 10.0)
        if mode == "fast":
            loss = loss + reconstruction_loss(model.decode_teacher_forced(z, x), x)
        elif mode == "stepwise":
            loss = loss + reconstruction_loss(model.decode_stepwise(z, x)[0], x)
        elif mode == "argmax":
            loss = loss + reconstruction_loss(model.decode_stepwise(z)[0], x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def run(args: argparse.Namespace) -> dict[str, object]:
    """Measure every mode and return the result dict."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cfg = PRESETS[args.preset]
    model = HierarchicalVAE(cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    per_round = max(1, args.steps // args.rounds)
    batches = [b.to(device) for b in _batches(cfg, args.batch, per_round, args.data, args.seed)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {m: _step_fn(model, opt, m) for m in MODES}
    for m in MODES:  # warm-up: allocator, thread pools, autograd caches
        for x in batches[: args.warmup]:
            steps[m](x)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for m in MODES:
            for x in batches:
                sync()
                t0 = time.perf_counter()
                steps[m](x)
                sync()
                times[m].append(time.perf_counter() - t0)

    mean = {m: statistics.fmean(times[m]) for m in MODES}
    median = {m: statistics.median(times[m]) for m in MODES}
    sps = {m: args.batch / mean[m] for m in MODES}
    mix_ref = (mean["stepwise"] + mean["argmax"]) / 2  # reference 50/50 teacher forcing, per batch
    mix_fast = (mean["fast"] + mean["argmax"]) / 2
    enc = mean["encoder"]
    return {
        "fast_samples_per_s": round(sps["fast"], 2),
        "stepwise_samples_per_s": round(sps["stepwise"], 2),
        "ratio": round(mean["stepwise"] / mean["fast"], 3),
        "ratio_median": round(median["stepwise"] / median["fast"], 3),
        "argmax_stepwise_samples_per_s": round(sps["argmax"], 2),
        "mix50_reference_samples_per_s": round(args.batch / mix_ref, 2),
        "mix50_fast_tf_samples_per_s": round(args.batch / mix_fast, 2),
        "encoder_only_samples_per_s": round(sps["encoder"], 2),
        # decoder cost alone (mode minus the shared encoder/KL/AR/Adam-free part), stepwise / fast
        "decoder_ratio": round((mean["stepwise"] - enc) / max(mean["fast"] - enc, 1e-9), 3),
        "step_ms_mean": {m: round(1e3 * mean[m], 1) for m in MODES},
        "device": device.type if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "batch": args.batch,
        "timed_steps_per_mode": len(times["fast"]),
        "preset": args.preset,
        "data": args.data or "random",
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "model": to_dict(cfg),
    }


def main() -> None:
    """Parse arguments, run, print the JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=24, help="timed steps per mode")
    p.add_argument("--rounds", type=int, default=4, help="interleaving rounds (steps split among them)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--preset", choices=sorted(PRESETS), default="measure")
    p.add_argument("--data", default=None, help="npz with a tokens array (default: random tokens)")
    p.add_argument("--seed", type=int, default=0)
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
