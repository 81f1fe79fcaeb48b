"""Refitting published collaboration rates (FS-GEN's 168 points, ``reports/paper/points.csv``).

* :func:`fsgen_procedure` — the power law fitted the way FS-GEN's scaling script fits it (one local least-squares
  run of ``scipy.optimize.curve_fit`` from a = alpha = b = 1 within a, alpha, b >= 0.05), so that our global fit
  can be compared with the paper's own numbers.
* :func:`interval_stability` — every interval endpoint of two fits of the same points (another seed, the rows
  in another order) side by side, and whether they agree at the printed digits.
* :func:`group_points` — a group's ratios and rates, for the figure.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from fsgen_eval.analysis.scaling import GROUP_FIELDS, GroupFit, group_key, power_law

LAWS = ("power", "two_factor", "log_ratio")


@dataclass
class ProcedureFit:
    """FS-GEN's procedure on one group: ``params`` (a, alpha, b) and their SSE, or ``error`` when it failed."""

    params: tuple[float, float, float] | None
    sse: float | None
    error: str | None = None


def fsgen_procedure(r: np.ndarray, y: np.ndarray, lower: float = 0.05, maxfev: int = 2000) -> ProcedureFit:
    """``b - a r^-alpha`` fitted to ratios r [N] and rates y [N] by one trust-region run of ``curve_fit``
    from (1, 1, 1) with every parameter >= ``lower`` — a local optimum, as FS-GEN's script finds it."""
    r, y = np.asarray(r, float), np.asarray(y, float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(power_law, r, y, p0=[1.0, 1.0, 1.0], bounds=(lower, np.inf), maxfev=maxfev)
    except RuntimeError as err:  # curve_fit's "optimal parameters not found"
        return ProcedureFit(None, None, str(err))
    a, alpha, b = map(float, p)
    return ProcedureFit((a, alpha, b), float(np.sum((y - power_law(r, a, alpha, b)) ** 2)))


def sse_of(fit_params: dict[str, float], r: np.ndarray, y: np.ndarray) -> float:
    """Sum of squared errors of a power-law fit's (a, alpha, b) on ratios r [N] and rates y [N]."""
    return float(np.sum((np.asarray(y, float) - power_law(np.asarray(r, float), fit_params["a"],
                                                           fit_params["alpha"], fit_params["b"])) ** 2))


def group_points(rows: list[dict[str, Any]], g: GroupFit) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows of group ``g``: N_small [N], N_large [N], ratio [N], rate [N]."""
    key = tuple((k, g.settings[k]) for k in GROUP_FIELDS if g.settings.get(k) is not None)
    mine = [r for r in rows if group_key(r) == key]
    ns = np.array([r["small_params"] for r in mine], float)
    nl = np.array([r["large_params"] for r in mine], float)
    return ns, nl, nl / ns, np.array([r["collaboration_rate"] for r in mine], float)


def sig(v: float, digits: int) -> str:
    """``v`` at ``digits`` significant digits, as the report prints it (``unbounded`` beyond 1e6)."""
    if not math.isfinite(v) or abs(v) > 1e6:
        return "unbounded"
    if v != 0 and abs(v) < 1e-4:  # positional notation would print a run of zeros
        return f"{v:.{digits}g}"
    return np.format_float_positional(v, precision=digits, unique=False, fractional=False, trim="-")


def stable_text(first: float, second: float, digits: int) -> str:
    """An interval endpoint from two bootstraps, printed at the most significant digits (at most ``digits``)
    at which both agree; ``x~y`` (both, at one digit) when they differ even there."""
    for d in range(digits, 0, -1):
        if sig(first, d) == sig(second, d):
            return sig(first, d)
    return f"{sig(first, 1)}~{sig(second, 1)}"


def interval_stability(a: list[GroupFit], b: list[GroupFit], digits: int) -> list[dict[str, Any]]:
    """One row per (group, law, parameter, interval end) of two fits of the same groups (same labels, same
    order): both endpoints and whether they print the same at ``digits`` significant digits."""
    rows = []
    for ga, gb in zip(a, b):
        if ga.label != gb.label:
            raise ValueError(f"the two fits have different groups: {ga.label!r} vs {gb.label!r}")
        for law in LAWS:
            fa, fb = getattr(ga, law), getattr(gb, law)
            if fa is None or fb is None:
                continue
            for name, (lo, hi) in fa.ci.items():
                for end, va, vb in (("low", lo, fb.ci[name][0]), ("high", hi, fb.ci[name][1])):
                    rows.append({"group": ga.label, "law": law, "param": name, "end": end, "first": va,
                                 "second": vb, "same": sig(va, digits) == sig(vb, digits),
                                 "text": stable_text(va, vb, digits)})
    return rows
