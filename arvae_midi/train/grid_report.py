"""Read grid records (:mod:`arvae_midi.train.grid`) against the dMelodies paper: a table and findings.

:func:`markdown_table` renders one row per run. :func:`check_findings` tests each of the paper's
findings (dMelodies paper §5-6) on the records with an explicit criterion, and says whether it
holds (True / False) or cannot be tested on these records (None), with the numbers it used.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from arvae_midi.train.grid import HYPER_LABELS, METHOD_LABELS, METHODS

Record = dict[str, Any]
#: Method medians of Modularity within this range count as "similar" (paper Fig. 3: all ~0.8-0.9).
MODULARITY_SIMILAR = 0.05
#: |CNN - RNN| MIG / SAP below this (same method, same value) counts as "no difference".
ARCH_SAME = 0.05


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _by(records: Sequence[Record], method: str, arch: str | None = None) -> list[Record]:
    return [r for r in records if r["method"] == method and (arch is None or r["architecture"] == arch)]


def ordered(records: Sequence[Record]) -> list[Record]:
    """Records by method (paper order), architecture, hyper-parameter value, seed."""
    order = list(METHODS)
    return sorted(records, key=lambda r: (order.index(r["method"]), r["architecture"],
                                          float(r["hyperparameter"]["value"]), r["seed"]))  # fmt: skip


def markdown_table(records: Sequence[Record]) -> str:
    """A markdown table, one row per run: method, arch, value, seed, melodies, time, recon, MIG, Mod., SAP."""
    head = ("| method | arch | hyper-parameter | seed | melodies seen | train time | recon. acc. | MIG | "
            "Modularity | SAP |\n|---|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    rows = []
    for r in ordered(records):
        hyper = r["hyperparameter"]
        rows.append(
            f"| {METHOD_LABELS[r['method']]} | {r['architecture'].upper()} | "
            f"{HYPER_LABELS[hyper['name']]} = {hyper['value']:g} | {r['seed']} | {r['samples_seen']:,} | "
            f"{r['train_seconds']:.0f} s | {100 * r['reconstruction_accuracy']:.1f} % | {r['mig']:.3f} | "
            f"{r['modularity']:.3f} | {r['sap']:.3f} |"
        )
    return head + "\n".join(rows) + "\n"


def factor_table(records: Sequence[Record]) -> str:
    """A markdown table of per-factor MIG, one row per run."""
    if not records:
        return ""
    factors = list(records[0]["mig_per_factor"])
    head = "| run | " + " | ".join(factors) + " |\n|---|" + "---|" * len(factors) + "\n"
    rows = [f"| {r['run_id']} | " + " | ".join(f"{r['mig_per_factor'][f]:.3f}" for f in factors) + " |"
            for r in ordered(records)]  # fmt: skip
    return head + "\n".join(rows) + "\n"


def findings_markdown(findings: Sequence[dict[str, Any]]) -> str:
    """One bullet per finding: holds / does not hold / not testable, with its criterion."""
    verdict = {True: "holds", False: "does not hold", None: "not testable here"}
    return "".join(f"* **{f['finding']}**: {verdict[f['holds']]} ({f['criterion']}).\n" for f in findings)


def report_markdown(records: Sequence[Record]) -> str:
    """The run table, the per-factor MIG table and the findings, as one markdown fragment."""
    return (markdown_table(records) + "\nPer-factor MIG:\n\n" + factor_table(records) + "\n"
            + findings_markdown(check_findings(records)))  # fmt: skip


def check_findings(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Each paper finding as ``{"finding", "criterion", "holds" (bool | None), "evidence" {...}}``."""
    return [
        _recon_gap(records), _beta_tradeoff(records), _annealed_best(records), _modularity_similar(records),
        _architecture(records), _factors(records),
    ]  # fmt: skip


def _result(finding: str, criterion: str, holds: bool | None, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"finding": finding, "criterion": criterion, "holds": holds, "evidence": evidence}


def _recon_gap(records: Sequence[Record]) -> dict[str, Any]:
    best_beta = max((r["reconstruction_accuracy"] for r in _by(records, "betavae")), default=None)
    medians = {m: _median([r["reconstruction_accuracy"] for r in _by(records, m)]) for m in ("annealed", "factorvae")}
    testable = best_beta is not None and all(v is not None for v in medians.values())
    holds = best_beta is not None and best_beta >= 0.9 and all(v is not None and v < 0.4 for v in medians.values())
    return _result(
        "β-VAE reaches ≥ 90 % reconstruction for some β; Annealed-VAE and FactorVAE struggle",
        "max β-VAE recon ≥ 0.90 and median recon of Annealed-VAE and of FactorVAE < 0.40",
        holds if testable else None,
        {"best_betavae_recon": best_beta, **{f"median_{m}_recon": v for m, v in medians.items()}},
    )


def _beta_tradeoff(records: Sequence[Record]) -> dict[str, Any]:
    evidence: dict[str, Any] = {}
    verdicts = []
    for arch in ("cnn", "rnn"):
        runs = sorted(_by(records, "betavae", arch), key=lambda r: float(r["hyperparameter"]["value"]))
        if len({r["hyperparameter"]["value"] for r in runs}) < 2:
            continue
        lo, hi = runs[0], runs[-1]
        evidence[arch] = {
            f"beta={r['hyperparameter']['value']:g}": {"mig": r["mig"], "recon": r["reconstruction_accuracy"]}
            for r in runs
        }
        verdicts.append(hi["mig"] > lo["mig"] and hi["reconstruction_accuracy"] < lo["reconstruction_accuracy"])
    return _result(
        "Larger β raises MIG and lowers reconstruction",
        "per architecture, the largest β has a higher MIG and a lower recon than the smallest β",
        all(verdicts) if verdicts else None,
        evidence,
    )


def _method_medians(records: Sequence[Record], key: str) -> dict[str, float]:
    out = {}
    for m in METHODS:
        value = _median([r[key] for r in _by(records, m) if r.get(key) is not None])
        if value is not None:
            out[m] = value
    return out


def _annealed_best(records: Sequence[Record]) -> dict[str, Any]:
    mig, sap = _method_medians(records, "mig"), _method_medians(records, "sap")
    testable = len(mig) == len(METHODS)
    holds = testable and max(mig, key=mig.__getitem__) == "annealed" and max(sap, key=sap.__getitem__) == "annealed"
    return _result(
        "Annealed-VAE gives the best MIG and SAP",
        "Annealed-VAE has the highest median MIG and the highest median SAP of the three methods",
        holds if testable else None,
        {"median_mig": mig, "median_sap": sap},
    )


def _modularity_similar(records: Sequence[Record]) -> dict[str, Any]:
    mod = _method_medians(records, "modularity")
    spread = max(mod.values()) - min(mod.values()) if len(mod) > 1 else None
    return _result(
        "Modularity is similar across methods",
        f"the method medians of Modularity lie within {MODULARITY_SIMILAR}",
        spread < MODULARITY_SIMILAR if spread is not None else None,
        {"median_modularity": mod, "spread": spread},
    )


def _architecture(records: Sequence[Record]) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    same_budget = True
    for rnn in (r for r in records if r["architecture"] == "rnn"):
        cnn = [r for r in records if r["architecture"] == "cnn" and r["method"] == rnn["method"]
               and r["hyperparameter"] == rnn["hyperparameter"] and r["seed"] == rnn["seed"]]  # fmt: skip
        if not cnn:
            continue
        same_budget &= cnn[0]["samples_seen"] == rnn["samples_seen"]
        pairs[rnn["run_id"]] = {
            "mig_cnn_minus_rnn": cnn[0]["mig"] - rnn["mig"], "sap_cnn_minus_rnn": cnn[0]["sap"] - rnn["sap"],
            "recon_cnn_minus_rnn": cnn[0]["reconstruction_accuracy"] - rnn["reconstruction_accuracy"],
            "samples_cnn": cnn[0]["samples_seen"], "samples_rnn": rnn["samples_seen"],
        }  # fmt: skip
    close = all(abs(p["mig_cnn_minus_rnn"]) < ARCH_SAME and abs(p["sap_cnn_minus_rnn"]) < ARCH_SAME
                for p in pairs.values())  # fmt: skip
    # One seed gives no significance test; unequal budgets confound architecture with training length.
    testable = bool(pairs) and same_budget
    return _result(
        "Architecture (RNN vs CNN) makes no significant difference to disentanglement",
        f"matched CNN / RNN runs (same method, value, seed and melodies seen) differ by < {ARCH_SAME} "
        "in MIG and SAP; untestable when the budgets differ",
        close if testable else None,
        {"pairs": pairs, "same_budget": same_budget},
    )


def _factors(records: Sequence[Record]) -> dict[str, Any]:
    runs = _by(records, "betavae")
    if not runs:
        return _result("Octave and rhythm are the best-disentangled factors, arpeggiation direction the worst",
                       "", None, {})  # fmt: skip
    factors = list(runs[0]["mig_per_factor"])
    mean = {f: statistics.fmean(r["mig_per_factor"][f] for r in runs) for f in factors}
    ranking = sorted(factors, key=mean.__getitem__, reverse=True)
    top3, worst = ranking[:3], ranking[-1]
    holds = "octave" in top3 and any(f.startswith("rhythm") for f in top3) and worst.startswith("arp")
    return _result(
        "Octave and rhythm are the best-disentangled factors, arpeggiation direction the worst",
        "over the β-VAE runs' mean per-factor MIG: octave and a rhythm factor in the top 3, an arp_chord factor last",
        holds,
        {"mean_mig_per_factor": mean, "ranking": ranking},
    )
