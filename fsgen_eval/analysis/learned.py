"""Fitting learned routers (``fsgen-eval router train``) and evaluating them on held-out traces. No torch.

Training data: trace files recorded with ``router=always`` (System 2 evaluated at every token, so every
token's handoff label is known), and for ``features=topk`` their top-K side files. The classifier predicts
``handoff`` from System 1's features (:mod:`fsgen_eval.core.learned`). Handoffs are rare, so the classes
are balanced either as FS-GEN's ``SVMRouter`` does — every handoff and as many agreements drawn at random
(``balance="downsample"``, the default) — or by class weights over every token (``balance="weight"``).
The threshold on the decision function is then set on *all* training tokens so that the router's call rate
does not exceed ``target_call_rate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.analysis.files import read_topk, read_trace_file
from fsgen_eval.analysis.whatif import require_always, tradeoff_curve
from fsgen_eval.core import learned as L
from fsgen_eval.core.traces_io import TraceTable, concat

BALANCES = ("downsample", "weight")


@dataclass
class Dataset:
    """Features ``x`` [N, F] and handoff labels ``y`` [N] over every token of some trace files."""

    x: np.ndarray
    y: np.ndarray
    files: list[str]
    known: np.ndarray | None = None  # [N] bool: tokens whose label is known (outcome labels: agreements and
    # labelled handoffs; None: every token); the threshold is still set over every token
    target: str = "handoff"  # what y is: "handoff" (System 2 disagrees) or "necessary" (an outcome label)


def load_dataset(paths: Sequence[Path], features: str, k: int = 10,
                 necessary: Mapping[tuple[str, str, int, int], bool] | None = None) -> Dataset:
    """Features and labels from trace files (``router=always``); ``topk`` reads their side files. With
    ``necessary`` (outcome labels keyed by (run_id, task, doc_id, position)), y is "this handoff is necessary":
    agreements are never necessary, labelled handoffs are what their label says, unlabelled handoffs are
    unknown (left out of the fit, kept for the threshold)."""
    if features not in L.FEATURE_SETS:
        raise ValueError(f"unknown features {features!r}; valid: {', '.join(L.FEATURE_SETS)}")
    xs, tables = [], []
    for path in map(Path, paths):
        table = read_trace_file(path, DATASET_COLUMNS)  # every record checked, naming file, line and field
        xs.append(_features(path, table, features, k))
        tables.append(table)
    table = concat(tables, DATASET_COLUMNS)
    try:
        require_always(table)
    except ValueError as err:
        raise ValueError(f"router train: {err}") from None
    handoff = table.tokens["handoff"].astype(bool)
    x = np.concatenate(xs)
    if necessary is None:
        return Dataset(x, handoff, [str(p) for p in paths])
    y, known = necessary_targets(table, handoff, necessary)
    return Dataset(x, y, [str(p) for p in paths], known, "necessary")


def necessary_targets(table: TraceTable, handoff: np.ndarray, necessary: Mapping[tuple[str, str, int, int], bool]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(y, known)`` ``[N]`` for outcome labels (:func:`load_dataset`); labels of no token here are refused."""
    rec, pos = table.record_index(), table.position()
    run, task, doc = table.get("run_id"), table.get("task"), table.get("doc_id")
    y, known = np.zeros(len(handoff), bool), ~handoff
    used = 0
    for i in np.flatnonzero(handoff):
        r = rec[i]
        key = (str(run[r]), str(task[r]), int(doc[r]), int(pos[i]))
        if key in necessary:
            y[i], known[i] = necessary[key], True
            used += 1
    runs = {str(r) for r in run}
    mine = sum(1 for k in necessary if k[0] in runs)  # labels of other runs may share the folder
    if used == 0 or used < mine:
        raise ValueError(f"router train: {mine - used} of {mine} labels of these runs name no handoff of the "
                         f"traces ({len(necessary)} labels given, {used} used)")
    return y, known


DATASET_COLUMNS = ("handoff", "llm_called", *L.SCALAR_FEATURES[:3])


def _features(path: Path, table: TraceTable, features: str, k: int) -> np.ndarray:
    """Features ``[N, F]`` of one file's tokens (:func:`fsgen_eval.core.learned.trace_features`, the whole
    file at once: ``position`` is each token's index in its record)."""
    if features == "scalar":
        return L.trace_features("scalar", table.tokens, None, k, position=table.position())
    topk = read_topk(path)  # {record (the 0-based line): [T, K]}
    for i in range(len(table)):
        if table.lengths[i] and int(table.line[i]) not in topk:
            raise ValueError(f"{path}: record {int(table.line[i])} has no rows in the top-K side file")
    probs = [topk[int(line)] for line, n in zip(table.line, table.lengths) if n]
    return L.trace_features("topk", table.tokens, np.concatenate(probs) if probs else np.zeros((0, k)), k)


def balanced_sample(y: np.ndarray, rng: np.random.Generator, max_samples: int) -> np.ndarray:
    """Indices: every positive and as many negatives drawn without replacement (FS-GEN's 1:1), at most
    ``max_samples`` in all (half each)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n = min(len(pos), len(neg), max_samples // 2)
    return np.sort(np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)]))


def threshold_for(scores: np.ndarray, target: float) -> float:
    """A threshold whose call rate (share of ``scores`` > it) is the largest not exceeding ``target``.

    It lies halfway between two neighbouring distinct scores, never on a score, so that float32 and
    float64 evaluations of one token cannot fall on opposite sides of it."""
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target call rate must lie in [0, 1], got {target}")
    s = np.sort(np.asarray(scores, float))[::-1]
    m = int(np.floor(target * len(s) + 1e-9))  # at most m tokens may be called
    if m >= len(s):
        return float(s[-1] - 1.0)
    above = s[:m][s[:m] > s[m]]  # the called scores; ties with s[m] cannot be called
    return float((s[m] + above[-1]) / 2) if len(above) else float(s[0] + 1.0)


def fit(data: Dataset, model: str, target_call_rate: float, features: str, k: int = 10,
        balance: str = "downsample", max_samples: int = 4000, seed: int = 0,
        return_estimator: bool = False) -> Any:
    """Fit the classifier (standardised features) and its threshold; returns the router to save (and,
    with ``return_estimator``, scikit-learn's scaler and classifier beside it, for tests)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if model not in L.MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(L.MODELS)}")
    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r}; valid: {', '.join(BALANCES)}")
    pool = np.flatnonzero(data.known) if data.known is not None else np.arange(len(data.y))
    if data.y[pool].all() or not data.y[pool].any():
        raise ValueError(f"router train: the traces need both {data.target} and other tokens")
    rng = np.random.default_rng(seed)
    if balance == "downsample":
        idx = pool[balanced_sample(data.y[pool], rng, max_samples)]
    else:
        idx = np.sort(pool[rng.choice(len(pool), min(len(pool), max_samples), replace=False)])
    weight = "balanced" if balance == "weight" else None
    scaler = StandardScaler().fit(data.x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)  # a constant feature: leave it unscaled
    z = (data.x[idx] - scaler.mean_) / scale
    if model == "logistic":
        clf = LogisticRegression(class_weight=weight, max_iter=1000).fit(z, data.y[idx])
        kw: dict[str, Any] = {"coef": clf.coef_[0].astype(float), "intercept": float(clf.intercept_[0])}
    else:
        gamma = 1.0 / (z.shape[1] * z.var()) if z.var() > 0 else 1.0  # scikit-learn's gamma="scale"
        clf = SVC(kernel="rbf", gamma=gamma, class_weight=weight).fit(z, data.y[idx])
        kw = {"support_vectors": clf.support_vectors_.astype(float), "dual_coef": clf.dual_coef_[0].astype(float),
              "gamma": float(gamma), "intercept": float(clf.intercept_[0])}
    intercept = kw.pop("intercept")
    router = L.LearnedRouter(features, k if features == "topk" else 0, model, scaler.mean_.astype(float),
                             scale.astype(float), intercept, 0.0, **kw)
    scores = L.decision(router, data.x)
    thr = threshold_for(scores, target_call_rate)
    called = scores > thr
    info = {"target_call_rate": target_call_rate, "balance": balance, "seed": seed, "labels": data.target,
            "train": {"files": data.files, "tokens": int(len(data.y)), "handoffs": int(data.y.sum()),
                      "fitted_on": int(len(idx)), "call_rate": float(called.mean()),
                      "caught": float(called[data.y].mean())}}
    router = L.LearnedRouter(router.features, router.k, model, router.mean, router.scale, intercept, thr,
                             info=info, **kw)
    return (router, scaler, clf) if return_estimator else router


def compare(paths: Sequence[Path], routers: dict[str, L.LearnedRouter], rates: Sequence[float]) -> list[dict[str, Any]]:
    """Handoffs caught at equal call rate on held-out traces (``router=always``): each learned router (by
    its decision function) beside the ``entropy``, ``max_prob`` and ``margin`` threshold routers.

    The comparison is the what-if curve of each score (:func:`.whatif.tradeoff_curve`): at each ``rate``
    the threshold calling the most tokens without exceeding it. Each row: ``router``, ``target``, the
    reached ``call_rate``, ``caught``; learned routers also give their saved threshold's ``own`` call rate
    and catch on these tokens."""
    scalar = load_dataset(paths, "scalar")
    scores = {"entropy": scalar.x[:, 0], "max_prob": -scalar.x[:, 1], "margin": -scalar.x[:, 2]}
    own = {}
    for name, r in routers.items():
        data = scalar if r.features == "scalar" else load_dataset(paths, "topk", r.k)
        scores[name] = L.decision(r, data.x)
        called = scores[name] > r.threshold
        own[name] = {"call_rate": float(called.mean()), "caught": float(called[scalar.y].mean())}
    rows = []
    for name, s in scores.items():
        curve = tradeoff_curve(name, s, scalar.y)  # calls where the score is high
        for target in rates:
            j = int(np.flatnonzero(curve.call_rate <= target + 1e-12)[-1])
            rows.append({"router": name, "target": float(target), "call_rate": float(curve.call_rate[j]),
                         "caught": float(curve.caught[j]), **({"own": own[name]} if name in own else {})})
    return rows


def learned_curves(paths: Sequence[Path], routers: dict[str, Path]) -> list[Any]:
    """What-if curves (:class:`.whatif.LearnedCurve`) of learned routers (name -> ``ROUTER.json``) on the
    ``router=always`` trace files ``paths`` (``topk`` routers read their side files)."""
    from fsgen_eval.analysis.whatif import learned_curve

    curves = []
    for name, path in routers.items():
        r = L.load(path)
        data = load_dataset(paths, r.features, r.k or 10)
        curves.append(learned_curve(name, L.decision(r, data.x), data.y, r.threshold, str(path)))
    return curves


def format_comparison(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per router, handoffs caught (and the call rate reached) per target rate."""
    targets = sorted({r["target"] for r in rows})
    names = list(dict.fromkeys(r["router"] for r in rows))
    cell = {(r["router"], r["target"]): r for r in rows}
    head = "| router | " + " | ".join(f"caught @ {t:g} calls" for t in targets) + " | saved threshold: calls, caught |"
    lines = [head, "|" + "---|" * (len(targets) + 2)]
    for n in names:
        own = cell[(n, targets[0])].get("own")
        tail = f"{own['call_rate']:.3f}, {own['caught']:.3f}" if own else "–"
        lines.append(f"| {n} | " + " | ".join(f"{cell[(n, t)]['caught']:.3f} ({cell[(n, t)]['call_rate']:.3f})"
                                            for t in targets) + f" | {tail} |")
    return "\n".join(lines)
