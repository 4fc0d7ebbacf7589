"""Benchmark: build all 1,354,752 dMelodies melodies in memory (optionally write the npz).

Usage: ``python bench/dmelodies_build.py [--repeat 3] [--out data/dmelodies.npz]``

The last stdout line is JSON: melodies, seconds (best generation time over the repeats),
all generation times, the inverse check (factors_from_tokens) time, array sizes in bytes and, with
``--out``, the write time and file size. Goal: well under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from arvae_midi.train.dmelodies import NUM_MELODIES, factors_from_tokens, generate_dmelodies, save_dmelodies


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark, print its JSON line and return it as a dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="generation runs; the best one is reported")
    parser.add_argument("--out", default=None, help="also write the dataset npz here (timed separately)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        tokens, factors = generate_dmelodies()
        times.append(time.perf_counter() - t0)
    if tokens.shape[0] != NUM_MELODIES:
        raise SystemExit(f"expected {NUM_MELODIES} melodies, got {tokens.shape[0]}")

    # The inverse doubles as a sanity check of the whole build: every factor must come back.
    t0 = time.perf_counter()
    recovered = factors_from_tokens(tokens)
    inverse_s = time.perf_counter() - t0
    result: dict[str, object] = {
        "melodies": int(tokens.shape[0]),
        "seconds": round(min(times), 4),
        "runs_seconds": [round(t, 4) for t in times],
        "melodies_per_second": round(tokens.shape[0] / min(times)),
        "tokens_bytes": int(tokens.nbytes),
        "factors_bytes": int(factors.nbytes),
        "inverse_seconds": round(inverse_s, 4),
        "inverse_exact": bool(np.array_equal(recovered, factors)),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if args.out:
        summary = save_dmelodies(args.out)
        result["write_total_seconds"] = summary["seconds"]
        result["file_bytes"] = summary["bytes"]
        result["out"] = summary["path"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
