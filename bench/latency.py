"""Benchmark: one-bar encode + greedy decode latency, torch eager vs onnxruntime, in the same run.

Usage: ``python bench/latency.py [--iters 300] [--warmup 30] [--run RUN_DIR] [--json-out FILE]``

The model is the full-size MeasureVAE (untrained, seeded) or the trained run given by ``--run``;
it is exported to a temporary ONNX file with the real exporter (parity-checked), then timed:

* torch eager (``model.encode`` + ``model.generate``, inference mode) and onnxruntime
  (:class:`~arvae_midi.engine.engine.Engine` ``encode`` + ``decode``, two session runs);
* batch 1 and batch 8 random bars, each with an all-zero key mask;
* 1 intra-op thread and each library's default thread count.

Within one thread setting the four (backend, batch) cases run round-robin, one call each per
iteration, so load spikes on a shared machine hit them alike. With a CUDA GPU and
onnxruntime-gpu, CUDA figures are added. The last stdout line is JSON: p50/p99/mean in ms per
case (plus the calling thread's CPU time on one thread: the latency without preemption when the
machine is shared), speed-ups (torch / onnxruntime at equal threads and batch) and the goals (the performance
budgets in docs/architecture.md): onnxruntime p99 <= 2 ms at batch 1 on one thread, and >= 3x faster than torch eager.

``vary_default`` section (``--model``, default the shipped model; bars from ``--data``'s test split
when the file exists, else the same random bars): on one intra-op thread, round-robin in the same
loop, per call

* ``raw``: one encode + one decode of a new bar (batch 1), the budget's unit;
* ``vary_default``: ``Engine.vary`` exactly as ``serve`` calls it while a phrase is played or a
  knob turns: key lock on with the 3 bars before it as context, the default closed loop, all four
  knobs set (each call a new knob setting), the bar itself unchanged since the previous call
  (the encoding is cached);
* ``vary_default_new_bar``: the same with a new bar every call (no cache hit);
* ``torch_eager``: the torch model of the same width (the model file's recipe, seeded weights),
  encode + greedy decode, batch 1, one thread.

Goals: ``vary_default`` p99 <= 2 ms and <= 1.5x the ``raw`` p99 of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import Engine
from arvae_midi.export.exporter import ExportConfig, export_model
from arvae_midi.train.build import build_model
from arvae_midi.train.models import VAE, ModelConfig

BATCHES = (1, 8)
GOAL_P99_MS = 2.0
GOAL_SPEEDUP = 3.0
GOAL_VARY_RATIO = 1.5


def _load_model(run: str | None) -> tuple[VAE, list[str], dict[str, int], str]:
    if run:
        from arvae_midi.train.checkpoint import load_run

        loaded = load_run(run)
        return loaded.model, loaded.vocab, loaded.reg_dims, f"run {run}"
    torch.manual_seed(0)
    model = build_model(ModelConfig()).eval()
    names = ("rhythmic_complexity", "note_density", "pitch_range", "contour")
    return model, list(Vocabulary().tokens), {n: i for i, n in enumerate(names)}, "MeasureVAE (untrained, seed 0)"


def _percentiles(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "n": len(ms)}  # fmt: skip


def _torch_case(model: VAE, tokens: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            mu, _ = model.encode(tokens)
            return model.generate(mu, mask)

    return run


def _ort_case(engine: Engine, tokens: np.ndarray) -> Callable[[], object]:
    def run() -> object:
        mu, _ = engine.encode(tokens)
        return engine.decode(mu)

    return run


def _time_round_robin(cases: dict[str, Callable[[], object]], iters: int, warmup: int,
                      sync: Callable[[], None] | None = None) -> dict[str, tuple[list[float], list[float]]]:
    """Wall-clock and calling-thread CPU seconds of every call, per case."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for _ in range(iters):
        for name, fn in cases.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            if sync is not None:
                sync()
            times[name][0].append(time.perf_counter() - t0)
            times[name][1].append(time.thread_time() - c0)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its JSON line and return it as a dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per case first")
    parser.add_argument("--run", default=None, help="a trained run folder (default: untrained full-size model)")
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    parser.add_argument("--model", default=None, help="model file for vary_default (default: the shipped one)")
    parser.add_argument("--data", default="data/folk-chorales.npz", help="dataset npz: vary_default's bars")
    args = parser.parse_args(argv)
    if args.iters < 10 or args.warmup < 0:
        parser.error("--iters must be >= 10 and --warmup >= 0")

    default_torch_threads = torch.get_num_threads()
    model, vocab, reg_dims, model_name = _load_model(args.run)
    model = model.eval().cpu()
    rng = np.random.default_rng(0)
    bars = {b: rng.integers(0, len(vocab), (b, 24)).astype(np.int64) for b in BATCHES}
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.onnx"
        t0 = time.perf_counter()
        # Calibration is irrelevant for timing: the smallest allowed, still parity-checked.
        export_model(model, path, vocab, reg_dims, rng.integers(0, len(vocab), (64, 24)),
                     config=ExportConfig(calibration_points=2, calibration_bars=8, parity_bars=64))  # fmt: skip
        export_s = time.perf_counter() - t0
        onnx_bytes = path.stat().st_size
        results: list[dict[str, Any]] = []
        for threads, torch_threads, ort_threads in (("1", 1, 1), ("default", default_torch_threads, 0)):
            torch.set_num_threads(torch_threads)
            engine = Engine.load(path, device="cpu", threads=ort_threads)
            cases: dict[str, Callable[[], object]] = {}
            for b in BATCHES:
                cases[f"torch/{b}"] = _torch_case(model, torch.as_tensor(bars[b]), torch.zeros(b, len(vocab)))
                cases[f"onnxruntime/{b}"] = _ort_case(engine, bars[b])
            times = _time_round_robin(cases, args.iters, args.warmup)
            for name, (wall, cpu) in times.items():
                backend, batch = name.split("/")
                row: dict[str, Any] = {"backend": backend, "device": "cpu", "threads": threads,
                       "torch_threads" if backend == "torch" else "ort_threads":
                           torch_threads if backend == "torch" else ort_threads,
                       "batch": int(batch), **_percentiles(wall)}  # fmt: skip
                if threads == "1":
                    # On one thread, the thread's CPU time is the latency without preemption by
                    # other processes: the figure that matters on a loaded machine.
                    cpu_stats = _percentiles(cpu)
                    row |= {"cpu_p50_ms": cpu_stats["p50_ms"], "cpu_p99_ms": cpu_stats["p99_ms"]}
                results.append(row)
        torch.set_num_threads(default_torch_threads)
        if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
            results += _cuda_results(model, path, bars, len(vocab), args.iters, args.warmup)

    def find(backend: str, threads: str, b: int, device: str = "cpu") -> dict[str, Any]:
        return next(r for r in results if (r["backend"], r["threads"], r["batch"], r["device"]) ==
                    (backend, threads, b, device))  # fmt: skip

    speedups = []
    for threads in ("1", "default"):
        for b in BATCHES:
            t, o = find("torch", threads, b), find("onnxruntime", threads, b)
            speedups.append({"threads": threads, "batch": b, "p50": round(t["p50_ms"] / o["p50_ms"], 2),
                             "p99": round(t["p99_ms"] / o["p99_ms"], 2)})  # fmt: skip
    ort1, torch1 = find("onnxruntime", "1", 1), find("torch", "1", 1)
    speed1 = next(s for s in speedups if (s["threads"], s["batch"]) == ("1", 1))
    report: dict[str, Any] = {
        "benchmark": "one-bar encode + greedy decode latency",
        "model": model_name,
        "params": sum(p.numel() for p in model.parameters()),
        "onnx_bytes": onnx_bytes,
        "export_seconds": round(export_s, 2),
        "iters": args.iters,
        "results": results,
        "speedup_torch_over_onnxruntime": speedups,
        "goals": {
            "onnxruntime_p99_batch1_1thread_ms": ort1["p99_ms"],
            "p99_le_2ms": ort1["p99_ms"] <= GOAL_P99_MS,
            "speedup_batch1_1thread_p99": speed1["p99"],
            "speedup_ge_3x": speed1["p99"] >= GOAL_SPEEDUP,
            "onnxruntime_cpu_p99_batch1_1thread_ms": ort1["cpu_p99_ms"],
            "cpu_p99_le_2ms": ort1["cpu_p99_ms"] <= GOAL_P99_MS,
            "speedup_batch1_1thread_cpu_p99": round(torch1["cpu_p99_ms"] / ort1["cpu_p99_ms"], 2),
        },
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},  # fmt: skip
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": ort.__version__, "numpy": np.__version__},  # fmt: skip
    }
    report["vary_default"] = vary_section(args.model, args.data, args.iters, args.warmup)
    report["goals"] |= {k: v for k, v in report["vary_default"]["goals"].items()}
    line = json.dumps(report)
    print(line)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _bench_bars(engine: Engine, data: str, n: int) -> np.ndarray:
    """``n`` test-split bars with notes from ``data`` in the model's ids, or random bars."""
    vocab = engine.meta.vocab
    if Path(data).is_file():
        with np.load(data, allow_pickle=False) as d:
            index = {t: i for i, t in enumerate(vocab.tokens)}
            remap = np.asarray([index.get(str(t), 1) for t in d["vocab"]], np.int64)
            pool = remap[d["tokens"][d["split"] == 2]]
        pool = pool[(vocab.pitch_table[pool] >= 0).any(axis=1)]
        return pool[np.random.default_rng(1).choice(len(pool), n, replace=False)]
    return np.random.default_rng(1).integers(0, len(vocab), (n, 24)).astype(np.int64)


def vary_section(model_path: str | None, data: str, iters: int, warmup: int) -> dict[str, Any]:
    """The ``vary_default`` cases (module docstring) on one thread, round-robin."""
    from arvae_midi.core.config import from_dict
    from arvae_midi.engine.policy import DEFAULT_CANDIDATES, DEFAULT_ROUNDS

    engine = Engine.load(model_path, device="cpu", threads=1)
    torch.set_num_threads(1)
    bars = _bench_bars(engine, data, iters + warmup + 8)
    names = list(engine.meta.attributes)
    knob_rng = np.random.default_rng(2)
    settings = [{a: int(v) for a, v in zip(names, knob_rng.integers(0, 128, len(names)), strict=True)}
                for _ in range(iters + warmup)]  # fmt: skip
    torch.manual_seed(0)
    tmodel = build_model(from_dict(ModelConfig, dict(engine.meta.recipe.get("model", {})))).eval()
    step = {"i": 0}
    held = bars[0]

    def raw() -> object:
        mu, _ = engine.encode(bars[4 + step["i"]][None])
        return engine.decode(mu)

    def vary_same() -> object:
        return engine.vary(held, settings[step["i"]], context=bars[1:4])

    def vary_new() -> object:
        i = 4 + step["i"]
        return engine.vary(bars[i], settings[step["i"]], context=bars[i - 3 : i])

    t_bar = torch.as_tensor(bars[:1])
    t_mask = torch.zeros(1, len(engine.meta.vocab))

    def torch_eager() -> object:
        with torch.inference_mode():
            mu, _ = tmodel.encode(t_bar)
            return tmodel.generate(mu, t_mask)

    cases = {"raw": raw, "vary_default": vary_same, "vary_default_new_bar": vary_new, "torch_eager": torch_eager}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for k in range(warmup + iters):
        step["i"] = k
        for name, fn in cases.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            if k >= warmup:
                times[name][0].append(time.perf_counter() - t0)
                times[name][1].append(time.thread_time() - c0)
    rows = {}
    for name, (wall, cpu) in times.items():
        c = _percentiles(cpu)
        rows[name] = {**_percentiles(wall), "cpu_p50_ms": c["p50_ms"], "cpu_p99_ms": c["p99_ms"]}
    ratio = round(rows["vary_default"]["p99_ms"] / rows["raw"]["p99_ms"], 3)
    ratio_new = round(rows["vary_default_new_bar"]["p99_ms"] / rows["raw"]["p99_ms"], 3)
    cpu_ratio = round(rows["vary_default"]["cpu_p99_ms"] / rows["raw"]["cpu_p99_ms"], 3)
    return {
        "model": str(engine.path), "bars": "test split of " + data if Path(data).is_file() else "random",
        "threads": 1, "candidates": DEFAULT_CANDIDATES, "rounds": DEFAULT_ROUNDS, "knobs_set": names,
        "key_lock": True, "context_bars": 3, "cases": rows,
        "goals": {
            "vary_default_p99_ms": rows["vary_default"]["p99_ms"],
            "vary_default_p99_le_2ms": rows["vary_default"]["p99_ms"] <= GOAL_P99_MS,
            "vary_default_over_raw_p99": ratio,
            "vary_default_le_1_5x_raw": ratio <= GOAL_VARY_RATIO,
            "vary_default_over_raw_cpu_p99": cpu_ratio,
            "vary_default_new_bar_over_raw_p99": ratio_new,
            "torch_eager_over_vary_default_p50":
                round(rows["torch_eager"]["p50_ms"] / rows["vary_default"]["p50_ms"], 2),
        },
    }


def _cuda_results(model: VAE, path: Path, bars: dict[int, np.ndarray], vocab_size: int, iters: int,
                  warmup: int) -> list[dict[str, Any]]:
    """The same cases on the GPU: torch eager on cuda and the onnxruntime CUDA provider."""
    cuda_model = model.to("cuda")
    engine = Engine.load(path, device="cuda")
    cases: dict[str, Callable[[], object]] = {}
    for b in BATCHES:
        tokens = torch.as_tensor(bars[b], device="cuda")
        cases[f"torch/{b}"] = _torch_case(cuda_model, tokens, torch.zeros(b, vocab_size, device="cuda"))
        cases[f"onnxruntime/{b}"] = _ort_case(engine, bars[b])
    times = _time_round_robin(cases, iters, warmup, sync=torch.cuda.synchronize)
    model.to("cpu")
    out: list[dict[str, Any]] = []
    for name, (wall, _) in times.items():
        backend, batch = name.split("/")
        out.append({"backend": backend, "device": "cuda", "provider": engine.provider if backend != "torch" else "",
                    "threads": "-", "batch": int(batch), **_percentiles(wall)})  # fmt: skip
    return out


if __name__ == "__main__":
    main()
