"""Scaling laws of the collaboration rate in model size.

Two forms, each with R², seeded bootstrap confidence intervals (resampling (pair, rate) points) and
leave-one-out (LOO) prediction error, so that they can be compared on held-out pairs:

* the paper's ``f(r) = b - a * r**(-alpha)`` in the parameter ratio ``r = N_large / N_small``, fitted by
  ``scipy.optimize.curve_fit`` within bounds (by default ``a, alpha, b >= 0.05``, as in the paper);
* a two-factor law ``log f = c - alpha * log N_small + beta * log N_large`` that lets the small and the large
  model's sizes act separately (it reduces to a pure ratio law when ``alpha == beta``), fitted by least
  squares in log space.
"""

from __future__ import annotations

from collections.abc import Callable
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

PARAM_NAMES_POWER = ("a", "alpha", "b")
PARAM_NAMES_TWO = ("c", "alpha", "beta")


@dataclass
class Fit:
    """A fitted law and its diagnostics.

    ``params``: name -> estimate; ``ci``: name -> (low, high) percentile bootstrap interval at ``ci_level``;
    ``r2``: coefficient of determination on the collaboration rate itself (both forms, so they compare);
    ``at_bound``: parameters whose estimate sits at a bound of the fit; ``loo_rmse`` / ``loo_mae``: error of
    predicting each point from a fit to the others (``None`` when too few points); ``n_boot_used``: bootstrap
    resamples that gave a fit.
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the fitted parameters at top level, intervals as ``[lo, hi]`` lists."""
        d = asdict(self)
        d.update(self.params)
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        return d


# ---------------------------------------------------------------- the paper's power law in the ratio


def power_law(r: np.ndarray, a: float, alpha: float, b: float) -> np.ndarray:
    """``b - a * r**(-alpha)``; r: [N] parameter ratios -> [N] collaboration rates."""
    return b - a * np.power(r, -alpha)


def _fit_power_params(r: np.ndarray, y: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Least-squares (a, alpha, b) from a few starting points (the surface has flat valleys); r, y: [N]."""
    best, best_sse = None, np.inf
    for alpha0 in (0.3, 1.0, 2.5):
        b0 = float(np.clip(y.max() + 0.05, lower, upper))
        a0 = float(np.clip((b0 - y.min()) * r.min() ** alpha0, lower, upper))
        try:
            with warnings.catch_warnings():  # we use no covariance, so its absence is no news
                warnings.simplefilter("ignore", OptimizeWarning)
                # bootstrap resamples with repeated points make scipy's trust-region step divide by zero
                # on its way to the optimum; the fit itself is judged by its SSE below
                warnings.simplefilter("ignore", RuntimeWarning)
                p, _ = curve_fit(power_law, r, y, p0=[a0, alpha0, b0], bounds=(lower, upper), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((power_law(r, *p) - y) ** 2))
        if sse < best_sse:
            best, best_sse = p, sse
    if best is None:
        raise ValueError("power-law fit did not converge from any starting point")
    return best


def fit_power_law(r: np.ndarray, y: np.ndarray, lower: float = 0.05, upper: float = np.inf,
                  n_boot: int = 1000, ci_level: float = 0.95, random_state: int | None = 0) -> Fit:
    """Fit ``f(r) = b - a r^-alpha`` to [N] ratios ``r`` and [N] collaboration rates ``y``.

    Raises ``ValueError`` when N < 3 (fewer points than parameters) or a ratio is not positive.
    """
    r, y = _check_xy(np.asarray(r, float), np.asarray(y, float), 3, "power-law")
    p = _fit_power_params(r, y, lower, upper)
    fit_fn = lambda idx: _fit_power_params(r[idx], y[idx], lower, upper)  # noqa: E731
    boot = _bootstrap(fit_fn, r, n_boot, random_state, min_distinct=3)
    loo = _loo(lambda idx: _fit_power_params(r[idx], y[idx], lower, upper),
               lambda params, i: float(power_law(r[i], *params)), y, min_points=3)
    tol = 1e-6 * max(1.0, abs(lower))
    at_bound = [n for n, v in zip(PARAM_NAMES_POWER, p) if v - lower <= tol or (np.isfinite(upper) and upper - v <= tol)]
    return Fit("power_law", dict(zip(PARAM_NAMES_POWER, map(float, p))), _percentile_ci(boot, PARAM_NAMES_POWER, ci_level),
               _r2(y, power_law(r, *p)), len(y), at_bound, *loo, ci_level=ci_level, n_boot_used=len(boot))


# ---------------------------------------------------------------- two factors: N_small and N_large apart


def two_factor_law(n_small: np.ndarray, n_large: np.ndarray, c: float, alpha: float, beta: float) -> np.ndarray:
    """``exp(c) * N_small^-alpha * N_large^beta``; n_small, n_large: [N] -> [N] collaboration rates."""
    return np.exp(c - alpha * np.log(n_small) + beta * np.log(n_large))


def _design(n_small: np.ndarray, n_large: np.ndarray) -> np.ndarray:
    """[N, 3] columns (1, -log N_small, log N_large) so that the coefficients are (c, alpha, beta)."""
    return np.column_stack([np.ones_like(n_small), -np.log(n_small), np.log(n_large)])


def _fit_two_params(x: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Least squares of logy [N] on the design x [N, 3]; raises when the sizes cannot separate the factors."""
    if np.linalg.matrix_rank(x) < 3:
        raise ValueError("two-factor fit needs pairs whose log N_small and log N_large vary independently "
                         "(all pairs share one small model, one large model or one ratio)")
    coef, *_ = np.linalg.lstsq(x, logy, rcond=None)
    return coef


def fit_two_factor(n_small: np.ndarray, n_large: np.ndarray, y: np.ndarray, n_boot: int = 1000,
                   ci_level: float = 0.95, random_state: int | None = 0) -> Fit:
    """Fit ``log f = c - alpha log N_small + beta log N_large`` to [N] sizes and [N] collaboration rates.

    Raises ``ValueError`` when N < 3, a rate is not positive (its log is undefined) or the design is singular.
    """
    n_small, n_large = np.asarray(n_small, float), np.asarray(n_large, float)
    _, y = _check_xy(n_large / n_small, np.asarray(y, float), 3, "two-factor")
    if np.any(y <= 0):
        raise ValueError("two-factor fit takes the log of collaboration_rate; it must be > 0 at every point")
    x, logy = _design(n_small, n_large), np.log(y)
    coef = _fit_two_params(x, logy)
    # distinct resampled points >= 3; whether they separate the two sizes is the rank check's job
    boot = _bootstrap(lambda idx: _fit_two_params(x[idx], logy[idx]), np.arange(len(y)), n_boot, random_state,
                      min_distinct=3, skip=(ValueError, np.linalg.LinAlgError))
    loo = _loo(lambda idx: _fit_two_params(x[idx], logy[idx]),
               lambda cf, i: float(np.exp(x[i] @ cf)), y, min_points=3)
    pred = np.exp(x @ coef)
    return Fit("two_factor", dict(zip(PARAM_NAMES_TWO, map(float, coef))), _percentile_ci(boot, PARAM_NAMES_TWO, ci_level),
               _r2(y, pred), len(y), [], *loo, ci_level=ci_level, n_boot_used=len(boot),
               extra={"r2_log": _r2(logy, x @ coef)})


def better_form(power: Fit, two: Fit) -> str | None:
    """The form with the lower LOO RMSE on held-out pairs, or ``None`` when either has no LOO error."""
    if power.loo_rmse is None or two.loo_rmse is None:
        return None
    return power.form if power.loo_rmse <= two.loo_rmse else two.form


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


def _bootstrap(fit: Callable[[np.ndarray], np.ndarray], key: np.ndarray, n_boot: int, random_state: int | None,
               min_distinct: int, skip: tuple[type[Exception], ...] = (ValueError,)) -> np.ndarray:
    """[B, P] parameter estimates from resampling the N points with replacement (seeded); resamples with
    fewer than ``min_distinct`` distinct ``key`` values, or whose fit fails, are dropped."""
    rng = np.random.default_rng(random_state)
    n, out = len(key), []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(np.unique(key[idx])) < min_distinct:
            continue
        try:
            out.append(fit(idx))
        except skip:
            continue
    return np.asarray(out)


def _percentile_ci(boot: np.ndarray, names: tuple[str, ...], level: float) -> dict[str, tuple[float, float]]:
    if len(boot) == 0:
        return {n: (float("nan"), float("nan")) for n in names}
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi)}


def _loo(fit: Callable[[np.ndarray], np.ndarray], predict: Callable[[np.ndarray, int], float], y: np.ndarray,
         min_points: int) -> tuple[float | None, float | None]:
    """(RMSE, MAE) of predicting each of the N points from a fit to the other N-1; ``(None, None)`` when
    N-1 points cannot determine the fit."""
    n = len(y)
    if n - 1 < min_points:
        return None, None
    errs = []
    for i in range(n):
        idx = np.delete(np.arange(n), i)
        try:
            errs.append(predict(fit(idx), i) - y[i])
        except (ValueError, np.linalg.LinAlgError):
            continue
    if not errs:
        return None, None
    e = np.asarray(errs)
    return float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e)))


# ---------------------------------------------------------------- grouped fits over rows of points


def fit_groups(rows: list[dict[str, Any]], n_boot: int = 1000, random_state: int | None = 0,
               lower: float = 0.05) -> list[dict[str, Any]]:
    """Both forms per (task, method) group of rows with ``large_params``, ``small_params``,
    ``collaboration_rate`` (and optional ``task``, ``method``).

    Returns one dict per group: ``task``, ``method``, ``n_points``, the power law's ``a``, ``alpha``, ``b``,
    ``r2``, ``ci``, ``at_bound``, ``loo_rmse``, ``loo_mae``, ``two_factor`` (the same for the other form) and
    ``better`` (the form with lower LOO error); a group whose fit is impossible carries ``error`` instead.
    """
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row.get("task"), row.get("method")), []).append(row)
    return [_fit_one_group(task, method, g, n_boot, random_state, lower) for (task, method), g in sorted(
        groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]


def _fit_one_group(task: Any, method: Any, rows: list[dict[str, Any]], n_boot: int, random_state: int | None,
                   lower: float) -> dict[str, Any]:
    ns = np.array([r["small_params"] for r in rows], float)
    nl = np.array([r["large_params"] for r in rows], float)
    y = np.array([r["collaboration_rate"] for r in rows], float)
    out: dict[str, Any] = {"task": task, "method": method, "n_points": len(rows)}
    try:
        power = fit_power_law(nl / ns, y, lower=lower, n_boot=n_boot, random_state=random_state)
    except ValueError as err:
        return {**out, "a": None, "alpha": None, "b": None, "r2": None, "error": str(err)}
    out.update({k: v for k, v in power.to_dict().items() if k not in ("form", "params", "extra")})
    try:
        two = fit_two_factor(ns, nl, y, n_boot=n_boot, random_state=random_state)
        out["two_factor"] = two.to_dict()
        out["better"] = better_form(power, two)
    except ValueError as err:
        out["two_factor"] = {"error": str(err)}
        out["better"] = None
    return out
