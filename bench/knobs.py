"""Benchmark: do the knobs do what they say? Knob sweeps over held-out bars, raw vs closed loop.

Usage: ``python bench/knobs.py [--model MODEL.onnx] [--data data/folk-chorales.npz] [--bars 300]
[--positions 9] [--candidates 8] [--seed 0] [--json-out FILE]``

Bars: ``--bars`` held-out test bars (split 2) of the dataset npz in their original key
(``transpose == 0`` when the file records transpositions) holding at least one note, drawn with
``--seed``. For every regularised attribute its knob is swept over ``--positions`` evenly spaced
positions 0..127, the other knobs unset, ``amount`` 0, one variation per bar and position, with
:meth:`Engine.vary` exactly as the CLI and the bridge call it, in four modes: the raw latent
traversal (``candidates=1``) and the closed loop (``--candidates``), each with and without the
key lock. Per mode and attribute:

* ``spearman``: Spearman correlation between knob position and the decoded attribute, per bar
  (a constant sequence counts as 0), mean (and median) over bars; the issue's goal is >= 0.9;
* ``response``: mean attribute at knob 127 minus at knob 0; ``target_error``: mean |attribute -
  calibrated target of the knob position| (``Engine.knob_to_attribute``);
* cross-talk on each other attribute: ``crosstalk``, the mean |attribute - the input bar's own|
  over bars and positions (attribute units), ``crosstalk_rel`` the same over the attribute's std
  across the bars, ``crosstalk_spearman``, the mean |Spearman| of that attribute with the knob;
* ``in_scale``: share of output note onsets whose pitch class is in the input bar's allowed set
  (:func:`arvae_midi.core.scales.allowed_pitch_classes`: estimated scale + its own pitch classes).

Also the model's reconstruction (encode the mean, greedy decode, no knobs): token accuracy and
the share of bars reproduced exactly. Mean milliseconds per ``vary`` call (one thread) are
informational (the lock modes exclude the scale estimate, done once per bar). The last stdout
line is JSON; a progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from arvae_midi.core.attributes import ATTRIBUTE_NAMES
from arvae_midi.core.constants import SPLITS
from arvae_midi.core.scales import allowed_pitch_classes, in_scale_share, token_mask
from arvae_midi.core.tokens import Vocabulary
from arvae_midi.engine.engine import DEFAULT_CANDIDATES, Engine
from arvae_midi.errors import DatasetError

GOAL_SPEARMAN = 0.9
TEST_SPLIT = SPLITS["test"]


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of ``x`` (P,) with every row of ``y`` (N, P); a constant row gives 0."""
    rx = _ranks(x)
    rx = rx - rx.mean()
    out = np.zeros(len(y), np.float64)
    for i, row in enumerate(np.asarray(y, dtype=np.float64)):
        ry = _ranks(row)
        ry = ry - ry.mean()
        denom = np.sqrt((rx**2).sum() * (ry**2).sum())
        out[i] = float((rx * ry).sum() / denom) if denom > 0 else 0.0
    return out


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks (1..P) with ties given their average rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v), np.float64)
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def load_bars(path: Path, vocab: Vocabulary, n: int, seed: int) -> np.ndarray:
    """``n`` held-out bars (n, 24) int64 in ``vocab``'s ids (see the module docstring)."""
    try:
        data = np.load(path, allow_pickle=False)
        tokens, split, file_vocab = data["tokens"], data["split"], [str(t) for t in data["vocab"]]
        transpose = data["transpose"] if "transpose" in data.files else np.zeros(len(tokens), np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"{path}: not a measure dataset npz with tokens, split and vocab ({e})") from e
    if tokens.ndim != 2 or tokens.shape[1] != 24:
        raise DatasetError(f"{path}: tokens have shape {tokens.shape}; the engine plays (N, 24) bars")
    index = {tok: i for i, tok in enumerate(vocab.tokens)}
    missing = [t for t in file_vocab if t not in index]
    if missing:
        raise DatasetError(f"{path}: tokens {missing[:5]} are outside the model's vocabulary {vocab.low}..{vocab.high}")
    remap = np.asarray([index[t] for t in file_vocab], np.int64)
    bars = remap[np.asarray(tokens, np.int64)]
    has_note = (vocab.pitch_table[bars] >= 0).any(axis=1)
    pool = np.flatnonzero((split == TEST_SPLIT) & (transpose == 0) & has_note)
    if len(pool) == 0:
        raise DatasetError(f"{path}: no held-out (split {TEST_SPLIT}) bar with a note")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
    result: np.ndarray = bars[chosen]
    return result


def sweep(engine: Engine, bars: np.ndarray, attribute: str, positions: np.ndarray, candidates: int,
          masks: list[np.ndarray] | None, advance: Any) -> tuple[np.ndarray, float]:  # fmt: skip
    """Outputs (N, P, 24) of one knob swept over ``positions`` for every bar; seconds per call.

    ``masks``: each bar's key-lock mask (V,), or None for no lock. Passing the mask the engine's
    ``key_lock=True`` would derive (a test checks they agree) estimates each bar's scale once,
    not once per call.
    """
    out = np.empty((len(bars), len(positions), bars.shape[1]), np.int64)
    started = time.perf_counter()
    for i, bar in enumerate(bars):
        mask = None if masks is None else masks[i]
        for j, pos in enumerate(positions):
            out[i, j] = engine.vary(bar, {attribute: int(pos)}, amount=0.0, seed=i, n=1, candidates=candidates,
                                    pitch_mask=mask)[0]  # fmt: skip
        advance(len(positions))
    return out, (time.perf_counter() - started) / (len(bars) * len(positions))


def mode_report(engine: Engine, bars: np.ndarray, outputs: dict[str, np.ndarray], positions: np.ndarray,
                allowed: list[frozenset[int] | None], seconds: float) -> dict[str, Any]:  # fmt: skip
    """Metrics of one mode from its sweeps ``outputs[attribute]`` (N, P, 24)."""
    vocab = engine.meta.vocab
    own = engine.attributes(bars)  # (N, 4)
    std = own.std(axis=0)
    per_attr: dict[str, Any] = {}
    inside = total = 0
    for attribute, out in outputs.items():
        n, p, _ = out.shape
        attrs = engine.attributes(out.reshape(n * p, -1)).reshape(n, p, -1)  # (N, P, 4)
        col = ATTRIBUTE_NAMES.index(attribute)
        rho = spearman_rows(positions, attrs[:, :, col])
        targets = np.asarray([engine.knob_to_attribute(attribute, int(k)) for k in positions])
        others: dict[str, Any] = {}
        for other in engine.meta.attributes:
            if other == attribute or other not in ATTRIBUTE_NAMES:
                continue
            c = ATTRIBUTE_NAMES.index(other)
            change = float(np.abs(attrs[:, :, c] - own[:, None, c]).mean())
            others[other] = {
                "crosstalk": round(change, 4),
                "crosstalk_rel": round(change / float(std[c]), 4) if std[c] > 0 else None,
                "crosstalk_spearman": round(float(np.abs(spearman_rows(positions, attrs[:, :, c])).mean()), 4),
            }
        per_attr[attribute] = {
            "spearman": round(float(rho.mean()), 4),
            "spearman_median": round(float(np.median(rho)), 4),
            "share_spearman_ge_goal": round(float((rho >= GOAL_SPEARMAN).mean()), 4),
            "response": round(float((attrs[:, -1, col] - attrs[:, 0, col]).mean()), 4),
            "target_span": round(float(targets[-1] - targets[0]), 4),
            "target_error": round(float(np.abs(attrs[:, :, col] - targets[None, :]).mean()), 4),
            "others": others,
            "crosstalk_mean": round(float(np.mean([o["crosstalk"] for o in others.values()])), 4) if others else 0.0,
            "crosstalk_rel_mean": round(float(np.mean([o["crosstalk_rel"] or 0.0 for o in others.values()])), 4)
            if others else 0.0,
        }  # fmt: skip
        for i, pcs in enumerate(allowed):
            if pcs is None:
                continue
            onsets = int((vocab.pitch_table[out[i]] >= 0).sum())
            inside += round(in_scale_share(out[i], vocab, pcs) * onsets)
            total += onsets
    spearmans = [a["spearman"] for a in per_attr.values()]
    return {
        "attributes": per_attr,
        "spearman_mean": round(float(np.mean(spearmans)), 4),
        "spearman_min": round(float(np.min(spearmans)), 4),
        "goal_met": bool(np.min(spearmans) >= GOAL_SPEARMAN),
        "crosstalk_rel_mean": round(float(np.mean([a["crosstalk_rel_mean"] for a in per_attr.values()])), 4),
        "in_scale": round(inside / total, 4) if total else None,
        "output_notes": total,
        "ms_per_vary": round(seconds * 1e3, 3),
    }


def main() -> None:
    from rich.console import Console
    from rich.progress import Progress

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    parser.add_argument("--data", default="data/folk-chorales.npz", help="measure dataset npz (test split used)")
    parser.add_argument("--bars", type=int, default=300, help="held-out bars to sweep")
    parser.add_argument("--positions", type=int, default=9, help="knob positions from 0 to 127")
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help="closed-loop candidates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bar draw")
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    engine = Engine.load(args.model, device="cpu", threads=1)
    vocab = engine.meta.vocab
    bars = load_bars(Path(args.data), vocab, args.bars, args.seed)
    positions = np.unique(np.round(np.linspace(0, 127, args.positions)).astype(np.int64))
    allowed = [allowed_pitch_classes(bar[None], vocab) for bar in bars]
    masks = [token_mask(pcs, vocab) for pcs in allowed]  # what vary(key_lock=True) derives

    mu, _ = engine.encode(bars)
    recon = engine.decode(mu)
    input_notes = int((vocab.pitch_table[bars] >= 0).sum())
    input_inside = sum(
        round(in_scale_share(b, vocab, pcs) * int((vocab.pitch_table[b] >= 0).sum()))
        for b, pcs in zip(bars, allowed, strict=True) if pcs is not None
    )  # fmt: skip

    modes = {"raw": (1, False), "raw_key_lock": (1, True),
             "closed_loop": (args.candidates, False), "closed_loop_key_lock": (args.candidates, True)}  # fmt: skip
    attributes = [a for a in engine.meta.attributes if a in ATTRIBUTE_NAMES]
    report: dict[str, Any] = {}
    calls = len(modes) * len(attributes) * len(bars) * len(positions)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("knob sweeps", total=calls)
        for mode, (k, lock) in modes.items():
            outputs: dict[str, np.ndarray] = {}
            seconds = []
            for attribute in attributes:
                progress.update(task, description=f"{mode}: {attribute}")
                outputs[attribute], s = sweep(engine, bars, attribute, positions, k, masks if lock else None,
                                              lambda a: progress.advance(task, a))  # fmt: skip
                seconds.append(s)
            report[mode] = mode_report(engine, bars, outputs, positions, allowed, float(np.mean(seconds)))

    result = {
        "model": str(engine.path),
        "model_name": engine.meta.name,
        "data": args.data,
        "bars": len(bars),
        "positions": positions.tolist(),
        "candidates": args.candidates,
        "loop": dataclasses.asdict(engine.loop),
        "reconstruction": {
            "token_accuracy": round(float((recon == bars).mean()), 4),
            "bar_accuracy": round(float((recon == bars).all(axis=1).mean()), 4),
        },
        "input_in_scale": round(input_inside / input_notes, 4) if input_notes else None,
        "modes": report,
        "summary": {
            mode: {"spearman": {a: r["attributes"][a]["spearman"] for a in attributes},
                   "crosstalk_rel_mean": r["crosstalk_rel_mean"], "in_scale": r["in_scale"]}
            for mode, r in report.items()
        },  # fmt: skip
        "goal_spearman": GOAL_SPEARMAN,
    }
    text = json.dumps(result)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
