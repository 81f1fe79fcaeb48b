"""Learned routers' file format, features and decision function in numpy (torch-free, like ``schema``).

A learned router (FS-GEN's ``SVMRouter``; Co-LLM's learned deferral) is a handoff classifier over System 1's
next-token distribution. ``fsgen-eval router train`` fits it (``analysis/learned.py``, scikit-learn) and
writes ``ROUTER.json``; the engine evaluates it in torch per row (``core/routers.py``, ``router=learned``)
and the analysis layer in numpy (:func:`decision`), from the same file.

Features (one row per token, computed from System 1's log-probs alone):

- ``scalar``: ``s1_entropy``, ``s1_top1_prob``, ``s1_margin`` and ``position`` (tokens generated before this
  one; in teacher-forced scoring, the token's position in the scored row);
- ``topk``: System 1's ``k`` largest probabilities, sorted descending (FS-GEN's SVM input; the top-K side
  file's ``s1_topk_probs``).

The router calls System 2 where ``decision(x) > threshold``; ``decision`` is scikit-learn's
``decision_function`` of the fitted model on standardised features: ``w·z + b`` (logistic) or
``Σ_i dual_i · exp(−γ‖sv_i − z‖²) + b`` (RBF SVM), with ``z = (x − mean) / scale``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "fsgen-learned-router/1"
FEATURE_SETS = ("scalar", "topk")
MODELS = ("logistic", "svm")
SCALAR_FEATURES = ("s1_entropy", "s1_top1_prob", "s1_margin", "position")
# What a router file may hold, checked before it is parsed or its arrays built: an RBF SVM is evaluated against
# every support vector at every token, and `router train` fits at most --max-samples (default 4000) of them.
MAX_SUPPORT_VECTORS = 100_000
MAX_FILE_BYTES = 128 << 20


def feature_names(features: str, k: int = 0) -> list[str]:
    if features == "scalar":
        return list(SCALAR_FEATURES)
    if features == "topk":
        return [f"s1_top{i + 1}_prob" for i in range(k)]
    raise ValueError(f"unknown features {features!r}; valid: {', '.join(FEATURE_SETS)}")


@dataclass(frozen=True)
class LearnedRouter:
    """A fitted router as read from ``ROUTER.json`` (arrays: ``mean``/``scale`` [F], ``coef`` [F] for
    logistic; ``support_vectors`` [S, F], ``dual_coef`` [S] for the SVM)."""

    features: str
    k: int
    model: str
    mean: np.ndarray
    scale: np.ndarray
    intercept: float
    threshold: float
    coef: np.ndarray | None = None
    support_vectors: np.ndarray | None = None
    dual_coef: np.ndarray | None = None
    gamma: float | None = None
    info: Mapping[str, Any] | None = None  # everything else in the file (training data, call rates)

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @property
    def uses_position(self) -> bool:
        return self.features == "scalar"


def to_json(r: LearnedRouter) -> dict[str, Any]:
    """The file's JSON object (floats as Python floats; ``info`` merged in)."""
    obj: dict[str, Any] = {"format": FORMAT, "features": r.features, "k": r.k,
                           "feature_names": feature_names(r.features, r.k), "model": r.model,
                           "scaler": {"mean": r.mean.tolist(), "scale": r.scale.tolist()},
                           "intercept": float(r.intercept), "threshold": float(r.threshold)}
    if r.model == "logistic":
        obj["coef"] = r.coef.tolist()
    else:
        obj["svm"] = {"kernel": "rbf", "gamma": float(r.gamma), "support_vectors": r.support_vectors.tolist(),
                      "dual_coef": r.dual_coef.tolist()}
    obj.update(dict(r.info or {}))
    return obj


def load(path: str | Path) -> LearnedRouter:
    """Read and check ``ROUTER.json``; ``ValueError`` naming the file and the problem in one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"router_path={path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than a router file may hold ({MAX_FILE_BYTES}; at most "
                         f"{MAX_SUPPORT_VECTORS} support vectors)")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested deeper than the JSON parser allows)") from None
    try:
        return from_json(obj)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a learned router file ({err})") from None


def from_json(obj: Mapping[str, Any]) -> LearnedRouter:
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT!r}")
    features, model, k = obj["features"], obj["model"], int(obj["k"])
    names = feature_names(features, k)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    mean, scale = (np.asarray(obj["scaler"][key], dtype=np.float64) for key in ("mean", "scale"))
    f = len(names)
    if mean.shape != (f,) or scale.shape != (f,) or not (scale > 0).all():
        raise ValueError(f"scaler needs {f} means and {f} positive scales")
    threshold, intercept = float(obj["threshold"]), float(obj["intercept"])
    if not (math.isfinite(threshold) and math.isfinite(intercept)):
        raise ValueError("threshold and intercept must be finite")
    known = {"format", "features", "k", "feature_names", "model", "scaler", "intercept", "threshold", "coef", "svm"}
    info = {key: v for key, v in obj.items() if key not in known}
    if model == "logistic":
        coef = np.asarray(obj["coef"], dtype=np.float64)
        if coef.shape != (f,):
            raise ValueError(f"coef needs {f} values, has shape {coef.shape}")
        return LearnedRouter(features, k, model, mean, scale, intercept, threshold, coef=coef, info=info)
    svm = obj["svm"]
    n_sv = len(svm["support_vectors"])
    if n_sv > MAX_SUPPORT_VECTORS:
        raise ValueError(f"{n_sv} support vectors, more than a router may hold ({MAX_SUPPORT_VECTORS})")
    sv = np.asarray(svm["support_vectors"], dtype=np.float64)
    dual = np.asarray(svm["dual_coef"], dtype=np.float64)
    gamma = float(svm["gamma"])
    if svm.get("kernel") != "rbf" or sv.ndim != 2 or sv.shape[1] != f or dual.shape != (len(sv),) or not gamma > 0:
        raise ValueError(f"svm needs kernel 'rbf', support_vectors [S, {f}], dual_coef [S] and gamma > 0")
    return LearnedRouter(features, k, model, mean, scale, intercept, threshold, support_vectors=sv,
                         dual_coef=dual, gamma=gamma, info=info)


# the SVM's kernel block [rows, S] holds at most this many float64 values (32 MiB): scoring N tokens
# against S support vectors at once would take N * S * 8 bytes (400 k tokens x 4000 vectors: 12.8 GB)
KERNEL_BLOCK = 1 << 22


def decision(r: LearnedRouter, x: np.ndarray, block: int = KERNEL_BLOCK) -> np.ndarray:
    """``decision_function`` ``[N]`` of features ``x`` ``[N, F]`` (float64); the RBF SVM in chunks of rows
    whose kernel block ``[rows, S]`` holds at most ``block`` values, so memory does not grow with N * S."""
    x = np.asarray(x, dtype=np.float64)
    if r.model == "logistic":
        return (x - r.mean) / r.scale @ r.coef + r.intercept
    sv = r.support_vectors
    sv_sq = (sv ** 2).sum(1)
    rows = max(1, block // max(len(sv), 1))
    out = np.empty(len(x))
    for a in range(0, len(x), rows):
        z = (x[a:a + rows] - r.mean) / r.scale
        d2 = (z * z).sum(1)[:, None] - 2 * z @ sv.T + sv_sq[None, :]
        out[a:a + rows] = np.exp(-r.gamma * np.maximum(d2, 0.0)) @ r.dual_coef + r.intercept
    return out


def trace_features(features: str, trace: Mapping[str, Any], topk_probs: np.ndarray | None = None,
                   k: int = 0, position: np.ndarray | None = None) -> np.ndarray:
    """Features ``[T, F]`` of one trace (per-token arrays ``[T]``; ``topk_probs`` ``[T, >=k]`` for ``topk``;
    ``position`` [T]: each token's index in its generation, default ``0..T-1``, given when ``trace`` holds
    several generations' tokens one after another)."""
    if features == "scalar":
        cols = [np.asarray(trace[name], dtype=np.float64) for name in SCALAR_FEATURES[:3]]
        cols.append(np.arange(len(cols[0]), dtype=np.float64) if position is None else
                    np.asarray(position, dtype=np.float64))
        return np.stack(cols, 1)
    if features == "topk":
        if topk_probs is None:
            raise ValueError("features=topk needs System 1's top-K probabilities (a trace_topk side file)")
        p = np.asarray(topk_probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] < k:
            raise ValueError(f"features=topk with k={k} needs top-{k} probabilities, the trace holds {p.shape[-1]}")
        return p[:, :k]
    raise ValueError(f"unknown features {features!r}; valid: {', '.join(FEATURE_SETS)}")
