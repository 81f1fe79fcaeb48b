"""Statistics of outcome labels (``fsgen-eval label``): how many handoffs change the task's outcome, and how well
System 1's signals pick them out. Torch-free: numpy, scikit-learn, the label side file and ``runs.json``.

Per run (records of one ``run_id``; a run's population comes from its ``runs.json`` entry):

* **weights** — a sample stratified by position (:func:`fsgen_eval.experiments.label.sample_handoffs`) is
  weighted back to the run: a labelled handoff of stratum ``s`` stands for ``N_s / n_s`` handoffs (``N_s`` the
  run's handoffs in that stratum, ``n_s`` those labelled). Every handoff labelled: every weight is 1.
* **necessary_rate** (per token) — estimated necessary handoffs / generated tokens, beside
  ``collaboration_rate`` (handoffs / generated tokens); **per request** — estimated necessary handoffs per
  request; **necessary share** — necessary / handoffs. Each with a 95 % interval of a ratio of sums treating
  requests (documents) as clusters (:func:`fsgen_eval.analysis.gate.ratio_ci`, the delta method over every
  request of the run, those without a labelled handoff included).
* **directions** — counts of labelled necessary handoffs: ``correct->wrong``, ``wrong->correct``,
  ``wrong->other wrong`` (unweighted: what was observed).
* **AUROC** — of each System 1 signal oriented so that larger means "call System 2" (``s1_entropy``,
  ``1 - s1_top1_prob``, ``-s1_margin``) separating necessary from neutral labelled handoffs
  (``sklearn.metrics.roc_auc_score`` with the weights), with a percentile interval from ``n_boot`` bootstrap
  resamples of documents (clusters); records are sorted first, so the result does not depend on row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fsgen_eval.analysis.gate import ratio_ci

SIGNALS = {"entropy": ("s1_entropy", 1.0, 0.0), "1 - top-1": ("s1_top1_prob", -1.0, 1.0),
           "-margin": ("s1_margin", -1.0, 0.0)}  # name -> (field, sign, offset): score = offset + sign * field
DIRECTIONS = ("correct->wrong", "wrong->correct", "wrong->other wrong")
STRATA = 10


def weights(records: Sequence[dict[str, Any]], population: Sequence[int]) -> np.ndarray:
    """``[n]`` weights ``N_s / n_s`` of labelled records (their ``stratum``) against the run's per-stratum
    handoff counts ``population`` ``[STRATA]``."""
    s = np.array([int(r["stratum"]) for r in records], dtype=int)
    n_s = np.bincount(s, minlength=len(population)) if len(s) else np.zeros(len(population), int)
    pop = np.asarray(population, float)
    return pop[s] / np.maximum(n_s[s], 1) if len(s) else np.zeros(0)


def _sorted(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r.get("task", ""), r["doc_id"], r["position"]))


def signal_scores(records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per signal name, ``[n]`` scores (larger: more likely to call System 2)."""
    return {name: off + sign * np.array([float(r[f]) for r in records]) for name, (f, sign, off) in SIGNALS.items()}


def auroc(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> float | None:
    """Weighted AUROC (scikit-learn); ``None`` when a class is empty."""
    from sklearn.metrics import roc_auc_score

    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, scores, sample_weight=w))


def pair_matrix(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[P, N]``: 1 where a positive outscores a negative, 1/2 on a tie, 0 otherwise (Mann-Whitney's kernel)."""
    pos, neg = scores[y], scores[~y]
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def weighted_aurocs(kernel: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC under each row of weights ``w`` ``[B, n]`` (the records' own weights times their bootstrap
    multiplicities): ``w_pos^T K w_neg / (sum w_pos * sum w_neg)``; NaN where a class has no weight. With one
    row of the records' weights this is ``roc_auc_score(y, scores, sample_weight=w)`` (tested)."""
    wp, wn = w[:, y], w[:, ~y]
    den = wp.sum(1) * wn.sum(1)
    num = np.einsum("bp,pn,bn->b", wp, kernel, wn)
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auroc_ci(scores: np.ndarray, y: np.ndarray, w: np.ndarray, cluster: np.ndarray, n_boot: int, seed: int
             ) -> tuple[float, float] | None:
    """95 % percentile interval of the weighted AUROC over ``n_boot`` resamples of the clusters ``[n]`` (a
    resample draws clusters with replacement: each record's weight times its cluster's multiplicity; resamples
    where a class is empty are skipped; ``None`` when more than half are)."""
    if y.all() or not y.any():
        return None
    ids, inv = np.unique(cluster, return_inverse=True)
    rng = np.random.default_rng(seed)
    mult = np.stack([np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids)) for _ in range(n_boot)])
    vals = weighted_aurocs(pair_matrix(scores, y), y, mult[:, inv] * w[None, :])
    vals = vals[~np.isnan(vals)]
    if len(vals) < n_boot / 2:
        return None
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def run_statistics(run: dict[str, Any], records: Sequence[dict[str, Any]], n_boot: int = 2000, seed: int = 0
                   ) -> dict[str, Any]:
    """The statistics of one run (module doc); ``run`` is its ``runs.json`` entry, ``records`` its labels."""
    recs = _sorted(records)
    w = weights(recs, run["strata"])
    y = np.array([r["label"] == "necessary" for r in recs], bool)
    docs = sorted(run["tokens"])
    index = {d: i for i, d in enumerate(docs)}
    tokens = np.array([run["tokens"][d] for d in docs], float)
    hand = np.array([run["handoffs_per_request"].get(d, 0) for d in docs], float)
    num, den = np.zeros(len(docs)), np.zeros(len(docs))
    cl = np.array([index[f"{r.get('task', '')}|{r['doc_id']}"] for r in recs], int)
    np.add.at(num, cl, w * y)
    np.add.at(den, cl, w)
    ones = np.ones(len(docs))
    out: dict[str, Any] = {
        "run_id": run["run_id"], "small": run["small"], "large": run["large"], "requests": len(docs),
        "generated_tokens": int(tokens.sum()), "handoffs": int(hand.sum()), "labelled": len(recs),
        "necessary_labelled": int(y.sum()), "collaboration_rate": float(hand.sum() / tokens.sum()),
        "necessary_handoffs_estimated": float(num.sum()),
        "necessary_rate": float(num.sum() / tokens.sum()), "necessary_rate_ci": ratio_ci(num, tokens),
        "necessary_per_request": float(num.sum() / len(docs)), "necessary_per_request_ci": ratio_ci(num, ones),
        "necessary_share": float(num.sum() / den.sum()) if den.sum() else None,
        "necessary_share_ci": ratio_ci(num, den) if den.sum() else None,
        "strata_unsampled": int(sum(1 for p, s in zip(run["strata"], np.bincount(
            [int(r["stratum"]) for r in recs], minlength=STRATA)) if p and not s)),
        "directions": {d: sum(1 for r in recs if r.get("direction") == d) for d in DIRECTIONS},
        "auroc": {}, "n_boot": n_boot, "sample": run.get("sample"), "seed": run.get("seed"),
    }
    for name, sc in signal_scores(recs).items():
        out["auroc"][name] = {"value": auroc(sc, y, w), "ci": auroc_ci(sc, y, w, cl, n_boot, seed) if len(recs) else None}
    out["cost"] = cost(run, len(recs))
    return out


def cost(run: dict[str, Any], labelled: int) -> dict[str, Any]:
    """What labelling cost: System 2 tokens decoded per labelled handoff, seconds per labelled handoff, and
    those seconds scaled to every handoff of the run against the System 2 run's own wall time."""
    c = run["cost"]
    n = max(int(c.get("labelled", 0)), 1)
    secs = float(c.get("continuation_seconds", 0.0)) + float(c.get("system1_seconds", 0.0))
    s2 = c.get("system2_run_seconds")
    s2 = float(s2) if s2 not in (None, "") else None  # lm-eval writes it as a string
    per = secs / n
    return {"s2_tokens_per_label": c.get("s2_tokens_decoded", 0) / n, "seconds": secs, "seconds_per_label": per,
            "system2_run_seconds": s2, "all_handoffs_seconds": per * run["handoffs"],
            "all_handoffs_vs_system2_run": per * run["handoffs"] / s2 if s2 else None,
            "labelled_in_timed_runs": int(c.get("labelled", 0))}


def _pct(x: float | None, ci: Any = None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    s = f"{100 * x:.{digits}f} %"
    return s + (f" [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]" if ci else "")


def _num(x: float | None, ci: Any = None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def format_markdown(stats: Sequence[dict[str, Any]]) -> str:
    """``labels.md``: one row per run in three tables (rates, directions and AUROC, cost)."""
    boot = stats[0]["n_boot"] if stats else 0
    lines = ["# Outcome labels of handoffs", "",
             "A handoff is **necessary** when emitting System 1's token there instead of System 2's, and letting "
             "System 2 finish greedily, changes the task's outcome (its first filter and metric); neutral otherwise. "
             "Rates are weighted back from the position-stratified sample; 95 % intervals treat requests as "
             "clusters (delta method); AUROC intervals: "
             f"{boot} bootstrap resamples of requests.", "",
             "| pair | requests | tokens | handoffs | labelled | necessary (labelled) | necessary share of handoffs | "
             "collaboration_rate | necessary_rate | necessary per request |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in stats:
        lines.append(f"| {_pair(s)} | {s['requests']} | {s['generated_tokens']} | {s['handoffs']} | {s['labelled']} | "
                     f"{s['necessary_labelled']} | {_pct(s['necessary_share'], s['necessary_share_ci'], 1)} | "
                     f"{_pct(s['collaboration_rate'])} | {_pct(s['necessary_rate'], s['necessary_rate_ci'])} | "
                     f"{_num(s['necessary_per_request'], s['necessary_per_request_ci'])} |")
    lines += ["", "| pair | " + " | ".join(DIRECTIONS) + " | " + " | ".join(f"AUROC {n}" for n in SIGNALS) + " |",
              "|---|" + "---|" * (len(DIRECTIONS) + len(SIGNALS))]
    for s in stats:
        au = [_num(s["auroc"][n]["value"], s["auroc"][n]["ci"]) for n in SIGNALS]
        lines.append(f"| {_pair(s)} | " + " | ".join(str(s["directions"][d]) for d in DIRECTIONS) + " | "
                     + " | ".join(au) + " |")
    lines += ["", "Cost (wall times on a loaded 2-core machine; labelling = System 1's teacher-forced pass + "
              "System 2's continuations; the System 2 run's time is lm-eval's total_evaluation_time_seconds of "
              "the run that generated System 2's tokens; not timed side by side, an order of magnitude: for "
              "labelling timed beside the System 2 generation of its run in one process, see "
              "benchmarks/results/label_cost.md):", "",
              "| pair | System 2 tokens per label | seconds per label | System 2 run seconds | "
              "all handoffs (extrapolated) seconds | all handoffs / System 2 run |", "|---|---|---|---|---|---|"]
    for s in stats:
        c = s["cost"]
        lines.append(f"| {_pair(s)} | {c['s2_tokens_per_label']:.1f} | {c['seconds_per_label']:.3f} | "
                     f"{_num(c['system2_run_seconds'], None, 1)} | {c['all_handoffs_seconds']:.1f} | "
                     f"{_num(c['all_handoffs_vs_system2_run'])} |")
    return "\n".join(lines) + "\n"


def _pair(s: dict[str, Any]) -> str:
    return f"{str(s['small']).rstrip('/').rsplit('/', 1)[-1]} -> {str(s['large']).rstrip('/').rsplit('/', 1)[-1]}"
