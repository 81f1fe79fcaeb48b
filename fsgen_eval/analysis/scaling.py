"""Scaling laws of the collaboration rate in model size.

Two forms, each with R², seeded bootstrap confidence intervals (resampling (pair, rate) points) and
leave-one-out (LOO) prediction error, so that they can be compared on held-out pairs:

* the paper's ``f(r) = b - a * r**(-alpha)`` in the parameter ratio ``r = N_large / N_small``, least squares
  within bounds (by default ``a, alpha, b >= 0.05``, as in the paper);
* a two-factor law ``log f = c - alpha * log N_small + beta * log N_large`` that lets the small and the large
  model's sizes act separately (it reduces to a pure ratio law when ``alpha == beta``; ``alpha - beta`` and
  its bootstrap interval test that), fitted by least squares in log space.

Every fit of a resample is a *weighted* fit of the original points, the weights being how often the
resample drew each point; that turns the bootstrap (and LOO: weights 1 with one 0) into array operations
over all resamples at once. For the power law, ``alpha`` fixed makes the model linear in ``(a, b)``, whose
box-constrained least squares has a closed form, so each resample's fit is a 1-D search over ``alpha``
(a log grid, then golden-section refinement) of that closed form — the global least-squares optimum within
the bounds, not a local one from a starting guess. The full-data fit is then polished by
``scipy.optimize.curve_fit`` warm-started there.

A fit is *degenerate* when a parameter sits at a bound (relative tolerance :data:`BOUND_RTOL`), ``alpha``
runs to the search cap (the curve then only separates the smallest ratio from the rest), R² <= 0, or a
bootstrap interval is unbounded; :attr:`Fit.degenerate` says which, and the report does not draw such a fit
as a law.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from fsgen_eval.analysis.points import method_label

PARAM_NAMES_POWER = ("a", "alpha", "b")
PARAM_NAMES_TWO = ("c", "alpha", "beta")
BOUND_RTOL = 1e-3  # a parameter within 0.1 % of a bound is at it (MBPP's a = 0.0500033 with bound 0.05)
HUGE = 1e6  # a bootstrap endpoint beyond this for a rate curve's coefficient is no bound at all
_GRID = 64  # alpha grid points of the profile search (log spacing ~0.16 over 0.05..1000)
_GOLDEN_STEPS = 40  # golden-section steps after the grid: the bracket shrinks by 0.618**40 ~ 4e-9


@dataclass
class Fit:
    """A fitted law and its diagnostics.

    ``params``: name -> estimate; ``ci``: name -> (low, high) percentile bootstrap interval at ``ci_level``
    (for the two-factor law also ``alpha_minus_beta``); ``r2``: coefficient of determination on the
    collaboration rate itself (both forms, so they compare); ``at_bound``: parameters whose estimate sits at
    a bound of the fit; ``degenerate``: why the fit does not hold as a law (empty when it does);
    ``loo_rmse`` / ``loo_mae``: error of predicting each point from a fit to the others (``None`` when too
    few points); ``n_boot_used``: bootstrap resamples that gave a fit; ``ci_at_bound``: parameters whose
    interval reaches a bound of the fit (the data do not identify them); ``resampling``: what the bootstrap
    drew — ``"points"`` or ``"models"`` (every model with all its pairs, see :func:`model_weights`);
    ``verdict``: the two-factor law's answer on alpha = beta, or why it gives none.
    """

    form: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    r2: float
    n_points: int
    at_bound: list[str] = field(default_factory=list)
    loo_rmse: float | None = None
    loo_mae: float | None = None
    ci_level: float = 0.95
    n_boot_used: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    degenerate: list[str] = field(default_factory=list)
    ci_at_bound: list[str] = field(default_factory=list)
    resampling: str = "points"
    verdict: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the fitted parameters at top level, intervals as ``[lo, hi]`` lists."""
        d = asdict(self)
        d.update(self.params)
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        return d


# ---------------------------------------------------------------- resampling as weights


def resample_weights(n: int, n_boot: int, random_state: int | None) -> np.ndarray:
    """[B, n] counts: how often each of n points is drawn in each of B seeded resamples with replacement."""
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, n, (n_boot, n))
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def model_weights(small: np.ndarray, large: np.ndarray, n_boot: int, random_state: int | None) -> np.ndarray:
    """[B, N] weights of N pairs when the bootstrap resamples *models*, not pairs: each resample draws the
    M distinct models (of ``small`` and ``large``, [N] ids) M times with replacement, and a pair weighs
    count(small) * count(large) — every pair of two drawn models comes in together, none of a model left out.
    A model is in several pairs, so the pairs are not independent; resampling them alone would give intervals
    that are too narrow."""
    models, inv = np.unique(np.concatenate([np.asarray(small), np.asarray(large)]).astype(str), return_inverse=True)
    n = len(small)
    counts = resample_weights(len(models), n_boot, random_state)  # [B, M]
    return counts[:, inv[:n]] * counts[:, inv[n:]]


def canonical_order(*cols: np.ndarray) -> np.ndarray:
    """[N] permutation sorting the points by the given [N] columns (first column first), so that a seeded
    bootstrap sees the same points in the same order whatever the order of the input rows."""
    return np.lexsort(tuple(np.asarray(c) for c in reversed(cols)))


def loo_weights(n: int) -> np.ndarray:
    """[n, n] weights leaving out point i in row i."""
    return 1.0 - np.eye(n)


def _distinct(w: np.ndarray, key: np.ndarray) -> np.ndarray:
    """[B] number of distinct ``key`` values among the points with weight > 0 in each row of w [B, N]."""
    _, inv = np.unique(key, return_inverse=True)
    onehot = np.eye(inv.max() + 1)[inv]  # [N, U]
    return ((w > 0).astype(float) @ onehot > 0).sum(axis=1)


# ---------------------------------------------------------------- the paper's power law in the ratio


def power_law(r: np.ndarray, a: float, alpha: float, b: float) -> np.ndarray:
    """``b - a * r**(-alpha)``; r: [N] parameter ratios -> [N] collaboration rates."""
    return b - a * np.power(r, -alpha)


def alpha_cap(r: np.ndarray, lower: float, upper: float) -> float:
    """The largest alpha searched: beyond it r_min**-alpha < e**-21 (~1e-9), so a larger alpha only lets a
    grow without changing the curve (for ratios <= 1, the cap keeps r**-alpha <= 1e6 instead)."""
    r_min = float(np.min(r))
    if r_min > 1.0:
        cap = 21.0 / np.log(r_min)
    elif r_min < 1.0:
        cap = np.log(1e6) / -np.log(r_min)
    else:
        cap = 1e3
    return float(max(min(upper, cap, 1e3), lower))


def _box_ls(n: np.ndarray, su: np.ndarray, sy: np.ndarray, suu: np.ndarray, suy: np.ndarray, syy: np.ndarray,
            lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of y = b + a*u with lo <= a, b <= hi, from weighted sums (all [...]).

    SSE(a, b) = syy - 2a suy - 2b sy + a² suu + 2ab su + b² n is convex: its minimum over the box is the
    unconstrained one when that is inside, else on an edge, where it is the 1-D minimum clipped to the edge.
    Returns (a, b, sse), each [...].
    """
    def sse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return syy - 2 * a * suy - 2 * b * sy + a * a * suu + 2 * a * b * su + b * b * n

    with np.errstate(divide="ignore", invalid="ignore"):
        det = suu * n - su * su
        ok = det > 1e-12 * np.maximum(suu * n, 1e-300)
        a_in = np.where(ok, (suy * n - su * sy) / det, np.nan)
        b_in = np.where(ok, (suu * sy - su * suy) / det, np.nan)
        cands = [(a_in, b_in, ok & (a_in >= lo) & (a_in <= hi) & (b_in >= lo) & (b_in <= hi))]
        for edge in (lo, hi):
            if not np.isfinite(edge):
                continue
            a_e = np.full_like(su, edge)  # a on the edge, b its clipped optimum, and the other way round
            cands.append((a_e, np.clip((sy - edge * su) / np.maximum(n, 1e-300), lo, hi), np.ones_like(ok)))
            b_e = np.full_like(su, edge)
            a_opt = np.where(suu > 0, (suy - edge * su) / np.where(suu > 0, suu, 1), lo)
            cands.append((np.clip(a_opt, lo, hi), b_e, np.ones_like(ok)))
    best_a, best_b, best = np.full_like(su, lo), np.full_like(su, lo), np.full_like(su, np.inf)
    for a, b, valid in cands:
        s = np.where(valid, sse(a, b), np.inf)
        better = s < best
        best_a, best_b, best = np.where(better, a, best_a), np.where(better, b, best_b), np.where(better, s, best)
    return best_a, best_b, best


def _profile_at(alpha: np.ndarray, r: np.ndarray, y: np.ndarray, w: np.ndarray, lo: float,
                hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (a, b, sse) at one alpha per row: alpha [B], w [B, N] -> each [B]."""
    u = -np.power(r[None, :], -alpha[:, None])  # [B, N]: the model is b + a*u
    wu = w * u
    return _box_ls(w.sum(1), wu.sum(1), w @ y, (wu * u).sum(1), wu @ y, w @ (y * y), lo, hi)


def fit_power_weighted(r: np.ndarray, y: np.ndarray, w: np.ndarray, lower: float = 0.05,
                       upper: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (a, alpha, b) within [lower, upper] for each row of weights w [B, N] over points
    r, y [N]: returns params [B, 3] and SSE [B]. A grid over log alpha finds the best bracket; golden-section
    steps on log alpha refine it (the profile SSE is smooth in alpha)."""
    cap = alpha_cap(r, lower, upper)
    grid = np.geomspace(lower, cap, _GRID) if cap > lower else np.array([lower])
    u = -np.power(r[None, :], -grid[:, None])  # [G, N]
    n, sy, syy = w.sum(1)[:, None], (w @ y)[:, None], (w @ (y * y))[:, None]
    su, suu, suy = w @ u.T, w @ (u * u).T, w @ (u * y).T  # [B, G]
    sse = _box_ls(n, su, sy, suu, suy, syy, lower, upper)[2]
    k = np.argmin(sse, axis=1)
    lo_x = np.log(grid[np.maximum(k - 1, 0)])
    hi_x = np.log(grid[np.minimum(k + 1, len(grid) - 1)])
    g = (np.sqrt(5) - 1) / 2
    x1, x2 = hi_x - g * (hi_x - lo_x), lo_x + g * (hi_x - lo_x)
    f1, f2 = _profile_at(np.exp(x1), r, y, w, lower, upper)[2], _profile_at(np.exp(x2), r, y, w, lower, upper)[2]
    for _ in range(_GOLDEN_STEPS):
        left = f1 <= f2  # the minimum lies in [lo, x2]; else in [x1, hi]
        hi_x, lo_x = np.where(left, x2, hi_x), np.where(left, lo_x, x1)
        x_new = np.where(left, hi_x - g * (hi_x - lo_x), lo_x + g * (hi_x - lo_x))
        f_new = _profile_at(np.exp(x_new), r, y, w, lower, upper)[2]
        x1, x2 = np.where(left, x_new, x2), np.where(left, x1, x_new)
        f1, f2 = np.where(left, f_new, f2), np.where(left, f1, f_new)
    # the refined point, or the grid point when the refinement did not beat it (an edge of the grid)
    x = np.where(f1 <= f2, x1, x2)
    alpha = np.exp(x)
    a, b, s = _profile_at(alpha, r, y, w, lower, upper)
    grid_best = sse[np.arange(len(k)), k]
    use_grid = grid_best < s
    alpha = np.where(use_grid, grid[k], alpha)
    a2, b2, s2 = _profile_at(alpha, r, y, w, lower, upper)
    return np.column_stack([a2, alpha, b2]), s2


def _polish(r: np.ndarray, y: np.ndarray, p0: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """``curve_fit`` warm-started at the profile optimum p0 [3]; p0 is kept unless curve_fit lowers the SSE."""
    sse0 = float(np.sum((power_law(r, *p0) - y) ** 2))
    start = np.clip(p0, lower, upper if np.isfinite(upper) else None)
    # curve_fit wants a strictly interior start
    start = np.maximum(start, lower + 1e-9 * max(1.0, abs(lower)))
    try:
        with warnings.catch_warnings():  # we use no covariance, so its absence is no news
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            p, _ = curve_fit(power_law, r, y, p0=start, bounds=(lower, upper), maxfev=2000)
    except (RuntimeError, ValueError):
        return p0
    return p if float(np.sum((power_law(r, *p) - y) ** 2)) < sse0 else p0


def _at_bound(names: tuple[str, ...], values: np.ndarray, lower: float, upper: float) -> list[str]:
    """Names whose value lies within :data:`BOUND_RTOL` (relative) of ``lower`` or a finite ``upper``."""
    def near(v: float, bound: float) -> bool:
        return abs(v - bound) <= BOUND_RTOL * max(abs(bound), 1e-12)
    return [n for n, v in zip(names, values) if near(v, lower) or (np.isfinite(upper) and near(v, upper))]


def fit_power_law(r: np.ndarray, y: np.ndarray, lower: float = 0.05, upper: float = np.inf,
                  n_boot: int = 1000, ci_level: float = 0.95, random_state: int | None = 0,
                  models: tuple[np.ndarray, np.ndarray] | None = None) -> Fit:
    """Fit ``f(r) = b - a r^-alpha`` to [N] ratios ``r`` and [N] collaboration rates ``y``.

    ``models``: the (small, large) model of each point ([N] ids each); given, the bootstrap resamples models
    (:func:`model_weights`), else points. The points are sorted first (:func:`canonical_order`), so the result
    does not depend on their order. With N <= 4 (no more points than parameters, or one more) the fit is an
    exact or near-exact interpolation: no interval, and it is marked degenerate.
    Raises ``ValueError`` when N < 3 (fewer points than parameters) or a ratio is not positive.
    """
    r, y = _check_xy(np.asarray(r, float), np.asarray(y, float), 3, "power-law")
    order = canonical_order(r, y) if models is None else canonical_order(*map(_as_str, models), r, y)
    r, y = r[order], y[order]
    full, _ = fit_power_weighted(r, y, np.ones((1, len(y))), lower, upper)
    p = _polish(r, y, full[0], lower, upper)
    cap = alpha_cap(r, lower, upper)
    w = _boot_weights(len(y), 3, n_boot, random_state, models, order)
    w = w[_distinct(w, r) >= 3]  # a resample of fewer distinct ratios than parameters has no unique fit
    boot = fit_power_weighted(r, y, w, lower, upper)[0] if len(w) else np.zeros((0, 3))
    loo = _loo_power(r, y, lower, upper)
    ci = _percentile_ci(boot, PARAM_NAMES_POWER, ci_level)
    at_bound = _at_bound(PARAM_NAMES_POWER, p, lower, upper)
    ci_bound = _ci_at_bound(ci, {"a": (lower, upper), "alpha": (lower, upper), "b": (lower, upper)})
    r2 = _r2(y, power_law(r, *p))
    degenerate = _power_degenerate(p, ci, at_bound, r2, cap, len(boot) if len(y) > 4 else -1)
    degenerate += [f"CI of {n} reaches its bound (the data do not identify it)" for n in ci_bound]
    return Fit("power_law", dict(zip(PARAM_NAMES_POWER, map(float, p))), ci, r2, len(y), at_bound, *loo,
               ci_level=ci_level, n_boot_used=len(boot), extra={"alpha_cap": cap},
               degenerate=_too_few(len(y), 3) + degenerate, ci_at_bound=ci_bound,
               resampling="points" if models is None else "models")


def _as_str(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(str)


def _boot_weights(n: int, n_params: int, n_boot: int, random_state: int | None,
                  models: tuple[np.ndarray, np.ndarray] | None, order: np.ndarray) -> np.ndarray:
    """[B, n] bootstrap weights over the (already sorted) points: by model when ``models`` is given (taken in
    the points' original order, ``order`` sorts them), else by point; none when n <= n_params + 1, where a
    resample's fit interpolates and its spread says nothing."""
    if n <= n_params + 1 or n_boot <= 0:
        return np.zeros((0, n))
    if models is None:
        return resample_weights(n, n_boot, random_state)
    return model_weights(_as_str(models[0])[order], _as_str(models[1])[order], n_boot, random_state)


def _too_few(n: int, n_params: int) -> list[str]:
    if n <= n_params + 1:
        return [f"{n} points for {n_params} parameters: an (almost) exact interpolation, no interval, no verdict"]
    return []


def _ci_at_bound(ci: dict[str, tuple[float, float]], bounds: dict[str, tuple[float, float]]) -> list[str]:
    """Names whose interval reaches (within :data:`BOUND_RTOL`) the lower or a finite upper bound."""
    out = []
    for n, (lo_b, hi_b) in bounds.items():
        lo, hi = ci[n]
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        if lo <= lo_b + BOUND_RTOL * max(abs(lo_b), 1e-12) or (np.isfinite(hi_b) and hi >= hi_b * (1 - BOUND_RTOL)):
            out.append(n)
    return out


def _power_degenerate(p: np.ndarray, ci: dict[str, tuple[float, float]], at_bound: list[str], r2: float,
                      cap: float, n_boot: int) -> list[str]:
    why = [f"{n} at its bound" for n in at_bound]
    if p[1] >= cap * (1 - BOUND_RTOL):
        why.append("alpha at the search cap (the curve only separates the smallest ratio)")
    if not (r2 > 0):
        why.append(f"R² = {r2:.3g} <= 0")
    if n_boot == 0:
        why.append("no bootstrap resample could be fitted")
    elif n_boot > 0:  # -1: too few points for a bootstrap, said elsewhere
        lim = {"a": HUGE, "alpha": cap * (1 - BOUND_RTOL), "b": HUGE}
        why += [f"CI of {n} unbounded" for n in PARAM_NAMES_POWER
                if not (np.all(np.isfinite(ci[n])) and abs(ci[n][1]) < lim[n])]
    return why


def _loo_power(r: np.ndarray, y: np.ndarray, lower: float, upper: float) -> tuple[float | None, float | None]:
    """(RMSE, MAE) of predicting each point from the fit to the others; ``(None, None)`` when N-1 < 3."""
    n = len(y)
    if n - 1 < 3:
        return None, None
    w = loo_weights(n)
    ok = _distinct(w, r) >= 3
    if not ok.any():
        return None, None
    params, _ = fit_power_weighted(r, y, w[ok], lower, upper)
    i = np.flatnonzero(ok)
    pred = params[:, 2] - params[:, 0] * np.power(r[i], -params[:, 1])
    return _errors(pred - y[i])


# ---------------------------------------------------------------- two factors: N_small and N_large apart


def two_factor_law(n_small: np.ndarray, n_large: np.ndarray, c: float, alpha: float, beta: float) -> np.ndarray:
    """``exp(c) * N_small^-alpha * N_large^beta``; n_small, n_large: [N] -> [N] collaboration rates."""
    return np.exp(c - alpha * np.log(n_small) + beta * np.log(n_large))


def _design(n_small: np.ndarray, n_large: np.ndarray) -> np.ndarray:
    """[N, 3] columns (1, -log N_small, log N_large) so that the coefficients are (c, alpha, beta)."""
    return np.column_stack([np.ones_like(n_small), -np.log(n_small), np.log(n_large)])


def fit_two_weighted(x: np.ndarray, logy: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of logy [N] on the design x [N, 3] for each row of w [B, N]: returns
    coefficients [B, 3] and a [B] mask of the rows whose weighted design has full rank (the others: NaN)."""
    sw = np.sqrt(w)
    xw = sw[:, :, None] * x[None]  # [B, N, 3]
    ok = np.linalg.matrix_rank(xw) == 3
    coef = np.full((len(w), 3), np.nan)
    if ok.any():
        coef[ok] = (np.linalg.pinv(xw[ok]) @ (sw[ok] * logy)[:, :, None])[:, :, 0]
    return coef, ok


def fit_two_factor(n_small: np.ndarray, n_large: np.ndarray, y: np.ndarray, n_boot: int = 1000,
                   ci_level: float = 0.95, random_state: int | None = 0,
                   models: tuple[np.ndarray, np.ndarray] | None = None) -> Fit:
    """Fit ``log f = c - alpha log N_small + beta log N_large`` to [N] sizes and [N] collaboration rates.

    Also ``alpha - beta`` with its bootstrap interval (``ci["alpha_minus_beta"]``): an interval that
    excludes 0 rejects a pure ratio law (alpha = beta) at that level — :attr:`Fit.verdict` says so, or why
    there is no verdict (R² <= 0: the fit explains nothing; too few points for an interval). ``models`` and
    the order of the points as in :func:`fit_power_law`.
    Raises ``ValueError`` when N < 3, a rate is not positive (its log is undefined) or the design is singular.
    """
    n_small, n_large = np.asarray(n_small, float), np.asarray(n_large, float)
    _, y = _check_xy(n_large / n_small, np.asarray(y, float), 3, "two-factor")
    if np.any(y <= 0):
        raise ValueError("two-factor fit takes the log of collaboration_rate; it must be > 0 at every point")
    order = (canonical_order(n_small, n_large, y) if models is None
             else canonical_order(*map(_as_str, models), n_small, n_large, y))
    n_small, n_large, y = n_small[order], n_large[order], y[order]
    x, logy = _design(n_small, n_large), np.log(y)
    coef, ok = fit_two_weighted(x, logy, np.ones((1, len(y))))
    if not ok[0]:
        raise ValueError("two-factor fit needs pairs whose log N_small and log N_large vary independently "
                         "(all pairs share one small model, one large model or one ratio)")
    coef = coef[0]
    w = _boot_weights(len(y), 3, n_boot, random_state, models, order)
    w = w[_distinct(w, np.arange(len(y))) >= 3]
    boot, good = fit_two_weighted(x, logy, w) if len(w) else (np.zeros((0, 3)), np.zeros(0, bool))
    boot = boot[good]
    derived = np.column_stack([boot, boot[:, 1] - boot[:, 2]])
    ci = _percentile_ci(derived, (*PARAM_NAMES_TWO, "alpha_minus_beta"), ci_level)
    pred = np.exp(x @ coef)
    r2 = _r2(y, pred)
    degenerate = _too_few(len(y), 3) + ([] if r2 > 0 else [f"R² = {r2:.3g} <= 0"])
    if len(y) > 4 and len(boot) == 0:
        degenerate.append("no bootstrap resample could be fitted")
    return Fit("two_factor", dict(zip(PARAM_NAMES_TWO, map(float, coef))), ci, r2, len(y), [],
               *_loo_two(x, logy, y), ci_level=ci_level, n_boot_used=len(boot),
               extra={"r2_log": _r2(logy, x @ coef), "alpha_minus_beta": float(coef[1] - coef[2])},
               degenerate=degenerate, resampling="points" if models is None else "models",
               verdict=alpha_beta_verdict(ci["alpha_minus_beta"], degenerate, ci_level))


def alpha_beta_verdict(ci: tuple[float, float], degenerate: list[str], level: float = 0.95) -> str:
    """What the interval of alpha - beta says about a pure ratio law; no verdict from a degenerate fit
    (R² <= 0, too few points) or without an interval."""
    if degenerate:
        return "no verdict on alpha = beta: " + "; ".join(degenerate)
    lo, hi = ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no verdict on alpha = beta: no interval"
    if lo > 0 or hi < 0:
        return f"the {level:.0%} interval excludes 0: alpha = beta (a pure ratio law) is rejected"
    return f"the {level:.0%} interval contains 0: alpha = beta (a pure ratio law) is not rejected"


# ---------------------------------------------------------------- c + d ln r: two parameters in the ratio


def log_ratio_law(r: np.ndarray, c: float, d: float) -> np.ndarray:
    """``c + d * ln r``; r: [N] parameter ratios -> [N] collaboration rates."""
    return c + d * np.log(r)


def fit_log_ratio(r: np.ndarray, y: np.ndarray, n_boot: int = 1000, ci_level: float = 0.95,
                  random_state: int | None = 0, models: tuple[np.ndarray, np.ndarray] | None = None) -> Fit:
    """Least squares of ``f = c + d ln r`` on [N] ratios and rates: the two-parameter baseline the power law
    must beat on held-out pairs. ``models`` and the point order as in :func:`fit_power_law`."""
    r, y = _check_xy(np.asarray(r, float), np.asarray(y, float), 2, "log-ratio")
    order = canonical_order(r, y) if models is None else canonical_order(*map(_as_str, models), r, y)
    r, y = r[order], y[order]
    x = np.column_stack([np.ones_like(r), np.log(r)])
    coef, ok = _wls(x, y, np.ones((1, len(y))))
    if not ok[0]:
        raise ValueError("log-ratio fit needs at least two distinct ratios")
    w = _boot_weights(len(y), 2, n_boot, random_state, models, order)
    w = w[_distinct(w, r) >= 2] if len(w) else w
    boot, good = _wls(x, y, w) if len(w) else (np.zeros((0, 2)), np.zeros(0, bool))
    boot = boot[good]
    ci = _percentile_ci(boot, ("c", "d"), ci_level)
    r2 = _r2(y, x @ coef[0])
    loo = (None, None)
    if len(y) - 1 >= 3:
        lc, lok = _wls(x, y, loo_weights(len(y)))
        i = np.flatnonzero(lok)
        loo = _errors(np.sum(x[i] * lc[lok], axis=1) - y[i]) if lok.any() else (None, None)
    degenerate = _too_few(len(y), 2) + ([] if r2 > 0 else [f"R² = {r2:.3g} <= 0"])
    return Fit("log_ratio", {"c": float(coef[0, 0]), "d": float(coef[0, 1])}, ci, r2, len(y), [], *loo,
               ci_level=ci_level, n_boot_used=len(boot), degenerate=degenerate,
               resampling="points" if models is None else "models")


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of y [N] on x [N, P] for each row of w [B, N]: coefficients [B, P] and the [B]
    mask of rows whose weighted design has full rank (the others NaN)."""
    sw = np.sqrt(w)
    xw = sw[:, :, None] * x[None]
    ok = np.linalg.matrix_rank(xw) == x.shape[1]
    coef = np.full((len(w), x.shape[1]), np.nan)
    if ok.any():
        coef[ok] = (np.linalg.pinv(xw[ok]) @ (sw[ok] * y)[:, :, None])[:, :, 0]
    return coef, ok


def _loo_two(x: np.ndarray, logy: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    n = len(y)
    if n - 1 < 3:
        return None, None
    coef, ok = fit_two_weighted(x, logy, loo_weights(n))
    if not ok.any():
        return None, None
    i = np.flatnonzero(ok)
    return _errors(np.exp(np.sum(x[i] * coef[ok], axis=1)) - y[i])


def better_form(*fits: Fit) -> str | None:
    """The form with the lowest LOO RMSE on held-out pairs, or ``None`` when one of them has no LOO error."""
    if len(fits) < 2 or any(f.loo_rmse is None for f in fits):
        return None
    return min(fits, key=lambda f: f.loo_rmse).form


# ---------------------------------------------------------------- shared diagnostics


def _check_xy(x: np.ndarray, y: np.ndarray, n_params: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"{name} fit needs 1-D arrays of one length, got {x.shape} and {y.shape}")
    if len(y) < n_params:
        raise ValueError(f"{name} fit needs at least {n_params} points (one per parameter), got {len(y)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{name} fit got a non-finite value")
    if np.any(x <= 0):
        raise ValueError(f"{name} fit needs positive parameter counts / ratios")
    return x, y


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - SSE/SST of [N] observations and predictions (NaN when the observations are all equal)."""
    sst = float(np.sum((y - y.mean()) ** 2))
    return float("nan") if sst == 0 else 1.0 - float(np.sum((y - pred) ** 2)) / sst


def _errors(e: np.ndarray) -> tuple[float, float]:
    return float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e)))


def _percentile_ci(boot: np.ndarray, names: tuple[str, ...], level: float) -> dict[str, tuple[float, float]]:
    if len(boot) == 0:
        return {n: (float("nan"), float("nan")) for n in names}
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi)}


# ---------------------------------------------------------------- grouped fits over rows of points

# the settings that make two points incomparable: a fit never mixes points that differ in one of them
GROUP_FIELDS = ("task", "method", "variant", "router", "threshold", "dtype", "num_fewshot", "batch_size")
MIN_PAIRS = 3


def group_key(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The row's value of every :data:`GROUP_FIELDS` setting it has (absent ones are left out)."""
    return tuple((k, row[k]) for k in GROUP_FIELDS if row.get(k) is not None)


def group_label(key: tuple[tuple[str, Any], ...], varying: set[str] | None = None) -> str:
    """``task=gsm8k method=oracle router=entropy@1.5 dtype=float16``: task and method (``contrastive[fsgen]``
    where the method has variants) always, the router
    (with its threshold) and the other settings when ``varying`` (the settings that differ between groups)
    names them or is ``None``."""
    d = dict(key)
    parts = [f"task={d['task']}"] if "task" in d else []
    if "method" in d:
        parts.append(f"method={method_label(d['method'], d.get('variant'))}")
    if "router" in d and (varying is None or {"router", "threshold"} & varying):
        parts.append(f"router={d['router']}" + (f"@{d['threshold']:g}" if isinstance(d.get("threshold"), (int, float))
                                                 else f"@{d['threshold']}" if "threshold" in d else ""))
    parts += [f"{k}={d[k]}" for k in ("dtype", "num_fewshot", "batch_size")
              if k in d and (varying is None or k in varying)]
    return " ".join(parts) or "all points"


def varying_settings(keys: list[tuple[tuple[str, Any], ...]]) -> set[str]:
    """The settings whose value differs between the groups (a setting absent in some counts as differing)."""
    dicts = [dict(k) for k in keys]
    names = {n for d in dicts for n in d}
    return {n for n in names if len({repr(d.get(n)) for d in dicts}) > 1}


@dataclass
class GroupFit:
    """The laws fitted to one group of comparable points.

    ``settings``: the group's :data:`GROUP_FIELDS` values; ``label``: task, method and the settings that differ
    between groups; ``power`` / ``two_factor`` / ``log_ratio``: each law's :class:`Fit`, ``None`` when it could
    not be fitted (``errors`` says why, per form); ``better``: the form with the lowest held-out (LOO) error;
    ``error``: why the group was not fitted at all (then every law is ``None``).
    """

    settings: dict[str, Any]
    label: str
    n_points: int
    n_pairs: int
    power: Fit | None = None
    two_factor: Fit | None = None
    log_ratio: Fit | None = None
    better: str | None = None
    error: str | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings, the power law's fields at top level, the other laws nested (their
        ``error`` in place of numbers when they could not be fitted)."""
        out: dict[str, Any] = {"task": None, "method": None, **self.settings, "label": self.label,
                               "n_points": self.n_points, "n_pairs": self.n_pairs}
        if self.error is not None:
            return {**out, "a": None, "alpha": None, "b": None, "r2": None, "error": self.error}
        out.update({k: v for k, v in self.power.to_dict().items() if k not in ("form", "params")})
        for name in ("two_factor", "log_ratio"):
            f = getattr(self, name)
            out[name] = f.to_dict() if f is not None else {"error": self.errors.get(name, "not fitted")}
        out["better"] = self.better
        return out


def fit_groups(rows: list[dict[str, Any]], n_boot: int = 1000, random_state: int | None = 0,
               lower: float = 0.05, progress: Callable[[int, int, str], None] | None = None,
               resample: str = "models") -> list[GroupFit]:
    """The three laws per group of rows with ``large_params``, ``small_params``, ``collaboration_rate`` and
    optional settings (:data:`GROUP_FIELDS`: ``task``, ``method``, ``router``, ``threshold``, ``dtype``,
    ``num_fewshot``, ``batch_size``) — one group per combination of settings, so that an entropy-routed run is
    never fitted with the oracle's. A row's models are its ``small`` / ``large`` names (else its parameter
    counts); ``resample="models"`` (default) bootstraps models with all their pairs, ``"points"`` the pairs.

    Returns one :class:`GroupFit` per group, sorted by settings; a group with fewer than :data:`MIN_PAIRS`
    distinct (small, large) pairs, or whose power law cannot be fitted, carries ``error``.
    ``progress(i, n, label)`` is called before each group's fit.
    """
    if resample not in ("models", "points"):
        raise ValueError(f"resample must be 'models' or 'points', got {resample!r}")
    groups: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    varying = varying_settings(list(groups))
    order = sorted(groups.items(), key=lambda kv: [repr(v) for _, v in kv[0]])
    out = []
    for i, (key, g) in enumerate(order):
        label = group_label(key, varying)
        if progress is not None:
            progress(i, len(order), label)
        out.append(_fit_one_group(key, label, g, n_boot, random_state, lower, resample))
    return out


def _model_ids(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """[N] small and [N] large model ids: the names when rows carry them, else the parameter counts."""
    return (np.array([str(r.get("small", r["small_params"])) for r in rows]),
            np.array([str(r.get("large", r["large_params"])) for r in rows]))


def _pairs(rows: list[dict[str, Any]]) -> int:
    return len(set(zip(*_model_ids(rows))))


def _fit_one_group(key: tuple[tuple[str, Any], ...], label: str, rows: list[dict[str, Any]], n_boot: int,
                   random_state: int | None, lower: float, resample: str) -> GroupFit:
    ns = np.array([r["small_params"] for r in rows], float)
    nl = np.array([r["large_params"] for r in rows], float)
    y = np.array([r["collaboration_rate"] for r in rows], float)
    out = GroupFit(dict(key), label, len(rows), _pairs(rows))
    if out.n_pairs < MIN_PAIRS:
        out.error = (f"{out.n_pairs} distinct (small, large) pair(s) in {len(rows)} point(s); a fit needs at "
                     f"least {MIN_PAIRS} pairs")
        return out
    models = _model_ids(rows) if resample == "models" else None
    try:
        out.power = fit_power_law(nl / ns, y, lower=lower, n_boot=n_boot, random_state=random_state, models=models)
    except ValueError as err:
        out.error = str(err)
        return out
    for name, fit in (("two_factor", lambda: fit_two_factor(ns, nl, y, n_boot, random_state=random_state,
                                                            models=models)),
                      ("log_ratio", lambda: fit_log_ratio(nl / ns, y, n_boot, random_state=random_state,
                                                          models=models))):
        try:
            setattr(out, name, fit())
        except ValueError as err:
            out.errors[name] = str(err)
    done = [f for f in (out.power, out.two_factor, out.log_ratio) if f is not None]
    out.better = better_form(*done)
    return out
