"""The accuracy frontier: what a share of System 2 buys (accuracy against ``llm_call_rate`` and ``param_cost``).

Torch-free. Three pieces, each usable alone:

* **calibration** — a threshold router's threshold for a target call rate, set on System 1's statistics of a
  calibration run (System 1 alone, router ``never``, on documents that are not evaluated): the threshold lies
  strictly between two neighbouring distinct values of the signal, written with at most 6 significant digits
  (the sweep writes thresholds with ``:g``), so the calibration tokens it calls are exactly the
  ``floor(target * N)`` most uncertain ones when the values are distinct (ties: the largest count below);
* **points** — per run: accuracy with its Wilson 95 % interval (stays in [0, 1]), ``llm_call_rate``,
  ``collaboration_rate``, ``param_cost`` = mean parameters activated per generated token (System 1 at every
  token, the large model at every call: ``N_small + llm_call_rate * N_large``, R2R's measure), wall time;
* **gap recovery** — per router, the call rate at which accuracy first reaches ``acc_1 + f (acc_2 - acc_1)``
  (linear between neighbouring points, System 1 alone at its call rate 0 and System 2 alone at 1 included),
  with a bootstrap interval that resamples documents (clusters): accuracy and call rate of every point are
  recomputed from the same resampled documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


# ------------------------------------------------------------------------------------------ calibration
def _short_between(lo: float, hi: float) -> float | None:
    """A number strictly between ``lo < hi`` with the fewest significant digits (at most 6), or ``None``."""
    mid = (lo + hi) / 2
    for digits in range(1, 7):
        t = float(f"{mid:.{digits}g}")
        if lo < t < hi:
            return t
    return None


def calibrate(scores: np.ndarray, target: float) -> tuple[float, int]:
    """Threshold ``t`` on ``scores`` [N] (call where ``score > t``) and how many of the N it calls: the
    largest count ``<= floor(target * N)`` that a threshold between two distinct values can give.

    ``ValueError`` for a target outside [0, 1] or no scores."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target call rate must lie in [0, 1], got {target}")
    s = np.sort(np.asarray(scores, float))[::-1]
    if len(s) == 0 or not np.isfinite(s).all():
        raise ValueError("calibration needs finite System 1 statistics at one token or more")
    m = int(np.floor(target * len(s) + 1e-9))
    for j in range(min(m, len(s)), -1, -1):
        hi = s[j - 1] if j > 0 else s[0] + 1.0  # the least uncertain called token (none: above all)
        lo = s[j] if j < len(s) else s[-1] - 1.0  # the most uncertain token left to System 1
        if hi > lo:
            t = _short_between(lo, hi)
            if t is not None:
                return t, j
    raise ValueError("calibration: no threshold with 6 significant digits separates the signal's values")


# the sign that orients a router's signal so that higher = call System 2 (calls_when "above": as is)
def oriented(values: np.ndarray, calls_when: str) -> np.ndarray:
    """``values`` [N] of a router's signal, oriented so that the router calls where the result is larger."""
    if calls_when not in ("above", "below"):
        raise ValueError(f"calls_when must be 'above' or 'below', got {calls_when!r}")
    v = np.asarray(values, float)
    return v if calls_when == "above" else -v


def native_threshold(values: np.ndarray, calls_when: str, target: float) -> tuple[float, float]:
    """The router's own threshold for ``target`` on its signal's ``values`` [N], and the share of the N
    tokens it calls (``calls_when`` ``above``: calls where value > t; ``below``: where value < t)."""
    t, k = calibrate(oriented(values, calls_when), target)
    return (t if calls_when == "above" else -t), k / len(values)


def realised_rate(values: np.ndarray, calls_when: str, threshold: float) -> float:
    """The share of ``values`` [N] at which the router with ``threshold`` calls System 2."""
    v = np.asarray(values, float)
    return float(np.mean(v > threshold if calls_when == "above" else v < threshold))


# ------------------------------------------------------------------------------------------ intervals
def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (within [0, 1] by construction)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends, not float noise around them
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------ points
@dataclass
class Point:
    """One run on the frontier. ``correct``, ``tokens``, ``calls``, ``handoffs``: per document [D], in the
    order of ``doc_ids`` (the same documents for every point of one frontier)."""

    label: str  # "System 1 alone", "System 2 alone", "entropy@0.1", ...
    router: str  # never / always / max_prob / margin / entropy / learned
    target: float | None  # the target call rate it was calibrated for (None: an end point)
    threshold: float | None
    doc_ids: np.ndarray
    correct: np.ndarray  # [D] the task's metric per document (0/1 for exact match, pass@1)
    tokens: np.ndarray  # [D] generated tokens
    calls: np.ndarray  # [D] tokens where System 2 was evaluated
    handoffs: np.ndarray  # [D]
    n_small: int = 0
    n_large: int = 0
    wall_s: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    @property
    def llm_call_rate(self) -> float:
        return float(self.calls.sum() / max(self.tokens.sum(), 1))

    @property
    def collaboration_rate(self) -> float:
        return float(self.handoffs.sum() / max(self.tokens.sum(), 1))

    @property
    def param_cost(self) -> float:
        """Mean parameters activated per generated token: System 1 at every token (a router needs its
        statistics), the large model where it was called."""
        return self.n_small + self.llm_call_rate * self.n_large

    def row(self) -> dict[str, Any]:
        lo, hi = wilson(float(np.sum(self.correct)), len(self.correct))
        return {"label": self.label, "router": self.router, "target_call_rate": self.target,
                "threshold": self.threshold, "accuracy": self.accuracy, "accuracy_ci": [lo, hi],
                "n_docs": int(len(self.correct)), "llm_call_rate": self.llm_call_rate,
                "collaboration_rate": self.collaboration_rate, "param_cost": self.param_cost,
                "generated_tokens": int(self.tokens.sum()), "wall_s": self.wall_s, **self.extra}


def check_same_docs(points: Sequence[Point]) -> None:
    """Every point must cover the same documents in the same order (the bootstrap resamples them jointly)."""
    ref = points[0].doc_ids
    for p in points[1:]:
        if len(p.doc_ids) != len(ref) or not np.array_equal(p.doc_ids, ref):
            raise ValueError(f"frontier: {p.label} covers other documents than {points[0].label} "
                             f"({len(p.doc_ids)} vs {len(ref)}); every run must evaluate the same documents")


# ------------------------------------------------------------------------------------------ gap recovery
def crossing(rates: np.ndarray, accs: np.ndarray, goal: float) -> float:
    """The first call rate at which the piecewise-linear curve through (``rates``, ``accs``) [K] (sorted by
    rate) reaches ``goal``; NaN when it never does."""
    if accs[0] >= goal:
        return float(rates[0])
    for i in range(1, len(rates)):
        if accs[i] >= goal:
            a0, a1, r0, r1 = accs[i - 1], accs[i], rates[i - 1], rates[i]
            return float(r0 + (goal - a0) / (a1 - a0) * (r1 - r0))
    return float("nan")


def _curve(s1: Point, s2: Point, routed: Sequence[Point], w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(rates [K], accs [K], acc_1, acc_2) of one router's points with documents weighted by ``w`` [D]."""
    def acc(p: Point) -> float:
        return float(w @ p.correct / w.sum())

    def rate(p: Point) -> float:
        return float(w @ p.calls / max(w @ p.tokens, 1e-12))

    pts = [(0.0, acc(s1))] + sorted((rate(p), acc(p)) for p in routed) + [(1.0, acc(s2))]
    r, a = np.array(pts).T
    return r, a, acc(s1), acc(s2)


def _cost(p: Point, rate: float | None) -> float | None:
    """Parameters activated per generated token at call rate ``rate`` (``None``/NaN: not reached)."""
    return None if rate is None or not np.isfinite(rate) else p.n_small + rate * p.n_large


def gap_recovery(s1: Point, s2: Point, routed: Sequence[Point], fractions: Sequence[float] = (0.5, 0.9),
                 n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per fraction ``f``: the call rate at which ``routed``'s accuracy reaches ``acc_1 + f (acc_2 - acc_1)``
    and its 95 % percentile interval over ``n_boot`` resamples of the documents (seeded), and the parameters
    activated per token at those rates. ``None`` for the
    estimate when System 2 alone is not more accurate than System 1 alone (no gap to recover); NaN in a
    resample means the curve did not reach the goal there (counted, and the interval is then open above)."""
    check_same_docs([s1, s2, *routed])
    d = len(s1.correct)
    out: dict[str, Any] = {"gap": s2.accuracy - s1.accuracy, "n_boot": n_boot}
    r, a, a1, a2 = _curve(s1, s2, routed, np.ones(d))
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, d, d), minlength=d) for _ in range(n_boot)]).astype(float)
    boots = [_curve(s1, s2, routed, w) for w in weights]
    for f in fractions:
        key = f"{round(f * 100)}%"
        if a2 <= a1:
            out[key] = {"call_rate": None, "ci": None, "reason": "System 2 alone is not more accurate"}
            continue
        est = crossing(r, a, a1 + f * (a2 - a1))
        vals = np.array([crossing(br, ba, b1 + f * (b2 - b1)) if b2 > b1 else np.nan for br, ba, b1, b2 in boots])
        missing = int(np.isnan(vals).sum())
        filled = np.where(np.isnan(vals), np.inf, vals)  # not reached: beyond any call rate
        lo, hi = np.quantile(filled, [0.025, 0.975])
        ci = [float(lo), float(hi) if np.isfinite(hi) else None]
        out[key] = {"call_rate": est, "ci": ci, "boot_not_reached": missing,
                    # R2R's measure at that call rate (a monotone map of the rate, so its interval maps too)
                    "param_cost": _cost(s1, est), "param_cost_ci": [_cost(s1, c) for c in ci]}
    return out


# ------------------------------------------------------------------------------------------ table
def format_table(rows: list[dict[str, Any]]) -> str:
    """The frontier as a Markdown table (each number rounded once, here)."""
    head = ("| point | target call rate | threshold | accuracy (95 % Wilson) | llm_call_rate | collaboration_rate "
            "| param_cost | wall s |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lo, hi = r["accuracy_ci"]
        tgt = "" if r["target_call_rate"] is None else f"{r['target_call_rate']:g}"
        thr = "" if r["threshold"] is None else f"{r['threshold']:.6g}"
        lines.append(f"| {r['label']} | {tgt} | {thr} | {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{r['llm_call_rate']:.3f} | {r['collaboration_rate']:.3f} | {r['param_cost']:.4g} | "
                     f"{r['wall_s']:.1f} |")
    return "\n".join(lines)


def _rate_text(v: dict[str, Any]) -> tuple[str, str, str]:
    """(estimate, interval, parameter cost with its interval) of one gap-recovery entry, as printed (rounded
    once, here)."""
    if v["call_rate"] is None:
        return "—", v["reason"], "—"
    est = "not reached" if np.isnan(v["call_rate"]) else f"{v['call_rate']:.3f}"
    lo, hi = v["ci"]
    cost = v.get("param_cost")
    # interval ends one digit shorter than the estimate: percentiles of a resampled curve move in the third
    # decimal between seeds even at 20,000 resamples, the second is stable. The cost's interval (in the JSON)
    # maps the call rate's, N_small + rate * N_large, and is not printed: at any digits that say something
    # its ends move between seeds
    cost_s = "—" if cost is None else f"{cost:.4g}"
    return est, f"[{lo:.2f}, {'not reached' if hi is None else f'{hi:.2f}'}]", cost_s


def recovery_text(recovery: dict[str, dict[str, Any]]) -> str:
    """One line: per router, the call rates recovering each fraction of the gap with their intervals."""
    parts = [f"{router} {key} {' '.join(_rate_text(v)[:2])}" for router, rec in recovery.items()
             for key, v in rec.items() if key.endswith("%")]
    return "; ".join(parts) or "–"


def format_recovery(recovery: dict[str, dict[str, Any]]) -> str:
    """Per router, the call rate recovering 50 % and 90 % of the accuracy gap, with its interval."""
    lines = ["| router | gap recovered | call rate | 95 % interval (documents resampled) | param_cost at that rate |",
             "|---|---|---|---|---|"]
    for router, rec in recovery.items():
        for key, v in rec.items():
            if not key.endswith("%"):
                continue
            est, ci, cost = _rate_text(v)
            lines.append(f"| {router} | {key} | {est} | {ci} | {cost} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ reading frontiers
POINT_KEYS = ("label", "router", "accuracy", "accuracy_ci", "llm_call_rate", "param_cost")


def find_frontiers(folders: Sequence[Any]) -> list[tuple[Any, dict[str, Any]]]:
    """Every ``frontier.json`` (written by ``fsgen-eval frontier``) below ``folders``, as (path, object), sorted by
    path. ``ValueError`` naming the file for one that is not a frontier (no ``points`` rows with
    :data:`POINT_KEYS`, or without its two end points)."""
    import json
    from pathlib import Path

    found = []
    for folder in map(Path, folders):
        if folder.is_dir():
            paths = sorted(p for p in folder.rglob("frontier.json") if not any(q.endswith(".tmp") for q in p.parts))
        else:
            paths = [folder] if folder.name == "frontier.json" else []
        for path in paths:
            try:
                obj = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: not a readable frontier file ({e})") from None
            points = obj.get("points") if isinstance(obj, dict) else None
            if not isinstance(points, list) or not all(isinstance(p, dict) and all(k in p for k in POINT_KEYS)
                                                        for p in points):
                raise ValueError(f"{path}: not a frontier file (needs 'points' rows with {', '.join(POINT_KEYS)})")
            if not {"never", "always"} <= {p["router"] for p in points}:
                raise ValueError(f"{path}: a frontier needs its end points (routers never and always)")
            found.append((path, obj))
    return found
