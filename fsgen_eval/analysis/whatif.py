"""Router what-if: which threshold router would have called System 2 how often, and caught which handoffs.

From a trace recorded with ``router=always`` (System 2 evaluated at every token, so every handoff is known),
a threshold router on a signal ``s`` (oriented as in :mod:`.signals`: higher = System 1 less sure) calls
System 2 where ``s >= t``. For every distinct threshold ``t`` this gives the large-model call rate and the
share of handoffs the router would have caught.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsgen_eval.analysis.signals import FIELD_OF, SIGNALS
from fsgen_eval.core.registry import signal_router
from fsgen_eval.core.traces_io import TraceTable, as_table


def native_router(signal: str) -> tuple[str | None, Callable[[float], float], str]:
    """For a signal of :data:`.signals.SIGNALS`: the registered router thresholding its trace field on the
    same side (``None`` if none is registered), that router's threshold as a function of the signal's, and
    the rule in words (with ``{thr}`` to fill in)."""
    field, side, to_native = FIELD_OF[signal]
    spec = signal_router(field, side)
    return (spec.name if spec else None, to_native,
            f"call where {field} {'>=' if side == 'above' else '<='} {{thr:.4g}}")


@dataclass
class TradeoffCurve:
    """A threshold router's trade-off for one signal; arrays [K], thresholds descending (the first is
    +inf: never call). ``call_rate``: share of tokens with ``s >= t``; ``caught``: share of handoffs with
    ``s >= t`` (NaN when the trace has no handoff)."""

    signal: str
    thresholds: np.ndarray
    call_rate: np.ndarray
    caught: np.ndarray
    n_tokens: int
    n_handoffs: int

    def at_target(self, target: float) -> dict[str, Any]:
        """The lowest threshold (most calls) whose call rate does not exceed ``target``."""
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target call rate must lie in [0, 1], got {target}")
        k = int(np.flatnonzero(self.call_rate <= target + 1e-12)[-1])
        t = float(self.thresholds[k])
        router, to_native, rule = native_router(self.signal)
        native = to_native(t) if np.isfinite(t) else None
        return {"signal": self.signal, "threshold": t, "call_rate": float(self.call_rate[k]),
                "caught": float(self.caught[k]), "router": router, "router_threshold": native,
                "rule": rule.format(thr=native) if native is not None else "never call"}


# a curve keeps at most this many thresholds: past it, the last threshold within each 1/(MAX_CURVE_POINTS - 1)
# of call rate (10 M tokens have millions of distinct values: five [K] float64 arrays per curve held 200 MB)
MAX_CURVE_POINTS = 10_001


def tradeoff_curve(signal: str, scores: np.ndarray, handoff: np.ndarray,
                   max_points: int = MAX_CURVE_POINTS) -> TradeoffCurve:
    """Call rate and handoffs caught at every distinct threshold of [N] ``scores`` for [N] ``handoff``; a
    curve of more than ``max_points`` thresholds is thinned by :func:`thin` (``TradeoffCurve.at_target`` is
    then exact for targets on its grid and within one grid step below the exact call rate otherwise)."""
    return _curve(signal, np.array(scores, float), np.asarray(handoff, bool), max_points)


def _curve(signal: str, scores: np.ndarray, handoff: np.ndarray, max_points: int) -> TradeoffCurve:
    """:func:`tradeoff_curve` over ``scores`` [N] float64 that it may sort in place (the caller's own copy).

    Everything comes from the one ascending sort: the count called at threshold ``t`` (``s >= t``) is N minus
    the first index of a value >= t, so a curve of K points needs [K] arrays, never the [K] distinct values
    of millions of tokens (a curve thinned to a grid is found from the grid itself: :func:`_grid_points`)."""
    ok = np.isfinite(scores)
    if not ok.all():
        raise ValueError(f"{signal}: {int((~ok).sum())} token(s) lack a value; the trace is incomplete")
    del ok
    hand = scores[handoff]
    hand.sort()
    scores.sort()  # ascending, in place
    n, nh = len(scores), len(hand)
    distinct = 1 + int(np.count_nonzero(scores[1:] != scores[:-1])) if n else 0
    if distinct + 1 <= max_points:  # every distinct value, descending; each run's value as sorted last
        desc = scores[::-1]
        values = desc[np.concatenate([[True], desc[1:] != desc[:-1]])] if n else np.zeros(0)
        called = n - np.searchsorted(scores, values, side="left")
    else:
        values, called = _grid_points(scores, max_points)
    thresholds = np.concatenate([[np.inf], values])
    called = np.concatenate([[0], called]).astype(np.int64)
    caught = nh - np.searchsorted(hand, thresholds, side="left")  # handoffs with s >= t
    with np.errstate(invalid="ignore", divide="ignore"):
        caught_share = caught / nh if nh else np.full(len(thresholds), np.nan)
    return TradeoffCurve(signal, thresholds, called / max(n, 1), caught_share, n, nh)


def _grid_points(ascending: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The thresholds (descending, +inf left out) and counts called that :func:`thin` keeps of the full curve
    of ``ascending`` [N] (sorted scores, more than ``max_points`` - 1 distinct): for each grid value g, the
    point of most calls whose call rate ``called / N`` is <= g (+1e-12), and the last point (every token)."""
    n = len(ascending)
    grid = np.linspace(0.0, 1.0, max_points) + 1e-12
    c = np.minimum(np.floor(grid * n).astype(np.int64) + 1, n)  # an upper bound of the largest c with c/n <= g
    for _ in range(3):  # float rounding moves the bound by one at most
        c = np.where(c / n > grid, c - 1, c)
    c = np.unique(np.concatenate([c[c > 0], [n]]))
    # a count c is a point of the curve where index n - c starts a run of equal values; else the next run's start
    i = n - c
    value = ascending[i]
    run_start = (i == 0) | (ascending[np.maximum(i - 1, 0)] != value)
    i = np.where(run_start, i, np.searchsorted(ascending, value, side="right"))
    i = np.unique(i[i < n])[::-1]  # descending thresholds = ascending counts; i == n is the +inf point (0 calls)
    value = ascending[np.searchsorted(ascending, ascending[i], side="right") - 1]  # each run's last, as sorted
    return value, n - i


def thin(call_rate: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of the points to keep of a curve whose [K] ``call_rate`` rises: all when K <= ``max_points``;
    otherwise the first and the last, and for each grid value j / (max_points - 1) the last point whose call
    rate does not exceed it (the point ``at_target`` would pick there)."""
    if len(call_rate) <= max_points:
        return np.arange(len(call_rate))
    grid = np.linspace(0.0, 1.0, max_points)
    last = np.searchsorted(call_rate, grid + 1e-12, side="right") - 1
    return np.unique(np.concatenate([[0, len(call_rate) - 1], last[last >= 0]]))


def require_always(traces: TraceTable | list[Mapping[str, np.ndarray]]) -> None:
    """Raise unless System 2 was evaluated at every token (a trace recorded with ``router=always``)."""
    t = as_table(traces)
    n = t.n_tokens
    skipped = int((~t.tokens["llm_called"].astype(bool)).sum()) if n else 0
    if n == 0:
        raise ValueError("what-if: the traces hold no tokens")
    if skipped:
        raise ValueError(f"what-if needs traces recorded with router=always: {skipped} of {n} tokens have "
                         "llm_called false, so their handoffs are unknown")


def tradeoff_curves(traces: TraceTable | list[Mapping[str, np.ndarray]]) -> list[TradeoffCurve]:
    """One curve per signal over per-generation traces (a table, or fields [T_i]) recorded with
    ``router=always``."""
    t = as_table(traces)
    require_always(t)
    handoff = t.tokens["handoff"].astype(bool)
    # each signal's values are a fresh float64 array (computed from a float32 field): sorted in place
    return [_curve(name, fn(t.tokens), handoff, MAX_CURVE_POINTS) for name, fn in SIGNALS.items()]


@dataclass
class LearnedCurve(TradeoffCurve):
    """The trade-off of a learned router (``router=learned``): its decision function is the score. At a
    target call rate it gives the decision threshold meeting it, beside the router's own saved threshold."""

    saved_threshold: float = float("nan")
    router_path: str = ""

    def at_target(self, target: float) -> dict[str, Any]:
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target call rate must lie in [0, 1], got {target}")
        k = int(np.flatnonzero(self.call_rate <= target + 1e-12)[-1])
        t = float(self.thresholds[k])
        return {"signal": self.signal, "threshold": t, "call_rate": float(self.call_rate[k]),
                "caught": float(self.caught[k]), "router": "learned", "router_threshold": None,
                "rule": (f"call where the decision function of {self.router_path} >= {t:.4g} (its saved threshold: "
                         f"{self.saved_threshold:.4g})") if np.isfinite(t) else "never call"}


def learned_curve(name: str, scores: np.ndarray, handoff: np.ndarray, saved_threshold: float,
                  router_path: str) -> LearnedCurve:
    """:func:`tradeoff_curve` of a learned router's decision function ``scores`` [N] (computed in numpy by
    :func:`fsgen_eval.core.learned.decision`) over the [N] ``handoff`` of ``router=always`` traces."""
    c = tradeoff_curve(f"learned:{name}", scores, handoff)
    return LearnedCurve(c.signal, c.thresholds, c.call_rate, c.caught, c.n_tokens, c.n_handoffs,
                        float(saved_threshold), str(router_path))
