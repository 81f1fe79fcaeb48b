"""``fsgen-eval fit`` speed: the previous fit (one ``curve_fit`` per resample from three starts, in a Python
loop) against the vectorised one (:mod:`fsgen_eval.analysis.scaling`), side by side in one run.

Points: 168 (method, task, pair) points in the layout of the FS-GEN paper's fits — 12 (method, task) groups of
10-20 pairs of the Qwen1.5 sizes (0.5B ... 72B) — with rates drawn from known power laws plus noise
(synthetic: the paper's own numbers are not part of this project). Both fit the power law (point estimate,
bootstrap, leave-one-out) and the two-factor law per group. Prints the time of both at ``--n-boot-old``
resamples (the old fit is slow; runs interleaved, best of ``--repeats``), their ratio, the new fit's time at
1000 resamples (goal: under 10 s) and how closely the two agree on the point estimates.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_fit.py [--n-boot-old 50] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from fsgen_eval.analysis import scaling

SIZES_B = (0.5, 1.8, 4.0, 7.0, 14.0, 32.0, 72.0)
GROUP_SIZES = (20, 16, 18, 20, 12, 12, 10, 12, 12, 12, 12, 12)  # 168 points in 12 fits, as in the paper


def paper_layout_points(seed: int = 0) -> list[dict]:
    """168 rows in 12 groups; group g's rates follow b - a r^-alpha with its own (a, alpha, b), noise 0.004."""
    rng = np.random.default_rng(seed)
    pairs = [(s, l) for i, s in enumerate(SIZES_B) for l in SIZES_B[i + 1:]]  # 21 (small, large) pairs
    rows = []
    for g, n in enumerate(GROUP_SIZES):
        a, alpha, b = rng.uniform(0.05, 0.2), rng.uniform(0.2, 1.5), rng.uniform(0.12, 0.3)
        for k in rng.choice(len(pairs), n, replace=False):
            s, l = pairs[k]
            y = b - a * (l / s) ** -alpha + rng.normal(0, 0.004)
            rows.append({"task": f"t{g % 4}", "method": f"m{g // 4}", "small_params": s * 1e9,
                         "large_params": l * 1e9, "collaboration_rate": max(y, 1e-3)})
    return rows


# ---------------------------------------------------------------- the previous implementation (before the
# vectorised bootstrap): a curve_fit from three starts for every resample and every left-out point


def _old_fit_params(r: np.ndarray, y: np.ndarray, lower: float = 0.05) -> np.ndarray:
    best, best_sse = None, np.inf
    for alpha0 in (0.3, 1.0, 2.5):
        b0 = float(max(y.max() + 0.05, lower))
        a0 = float(max((b0 - y.min()) * r.min() ** alpha0, lower))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                p, _ = curve_fit(scaling.power_law, r, y, p0=[a0, alpha0, b0], bounds=(lower, np.inf), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((scaling.power_law(r, *p) - y) ** 2))
        if sse < best_sse:
            best, best_sse = p, sse
    if best is None:
        raise ValueError("no convergence")
    return best


def _old_fit_group(ns: np.ndarray, nl: np.ndarray, y: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    r = nl / ns
    p = _old_fit_params(r, y)
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones_like(ns), -np.log(ns), np.log(nl)])
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(r[idx])) >= 3:
            try:
                _old_fit_params(r[idx], y[idx])
            except ValueError:
                pass
        if np.linalg.matrix_rank(x[idx]) == 3:
            np.linalg.lstsq(x[idx], np.log(y[idx]), rcond=None)
    for i in range(len(y)):
        keep = np.delete(np.arange(len(y)), i)
        _old_fit_params(r[keep], y[keep])
        np.linalg.lstsq(x[keep], np.log(y[keep]), rcond=None)
    return p


def by_group(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"]), []).append(row)
    return groups


def old_fit(rows: list[dict], n_boot: int) -> dict[tuple, np.ndarray]:
    out = {}
    for key, g in by_group(rows).items():
        ns, nl, y = (np.array([r[k] for r in g]) for k in ("small_params", "large_params", "collaboration_rate"))
        out[key] = _old_fit_group(ns, nl, y, n_boot)
    return out


def new_fit(rows: list[dict], n_boot: int) -> list[dict]:
    return scaling.fit_groups(rows, n_boot=n_boot, random_state=0)


def sse(group: list[dict], p) -> float:
    r = np.array([row["large_params"] / row["small_params"] for row in group])
    y = np.array([row["collaboration_rate"] for row in group])
    return float(np.sum((scaling.power_law(r, *p) - y) ** 2))


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-boot-old", type=int, default=50, help="resamples for the side-by-side comparison")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = paper_layout_points()
    print(f"{len(rows)} points in {len(GROUP_SIZES)} groups; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    t_old, t_new = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same background load
        t_old.append(best_time(lambda: old_fit(rows, args.n_boot_old), 1))
        t_new.append(best_time(lambda: new_fit(rows, args.n_boot_old), 1))
    o, n = min(t_old), min(t_new)
    print(f"{args.n_boot_old} resamples: previous {o:.2f} s, vectorised {n:.3f} s  ->  {o / n:.0f}x faster")
    t1000 = best_time(lambda: new_fit(rows, 1000), args.repeats)
    old1000 = o * 1000 / args.n_boot_old  # the old fit's time is all but proportional to the resamples
    print(f"1000 resamples, vectorised: {t1000:.2f} s (goal < 10 s: {'met' if t1000 < 10 else 'NOT met'}); "
          f"previous, extrapolated linearly from {args.n_boot_old}: {old1000:.0f} s  ->  {old1000 / t1000:.0f}x")
    old_p, groups = old_fit(rows, 0), by_group(rows)
    ratios = [sse(groups[key := (g["task"], g["method"])], [g["a"], g["alpha"], g["b"]]) / sse(groups[key], old_p[key])
              for g in new_fit(rows, 0)]
    print(f"point estimates: SSE(new) / SSE(previous) per group in [{min(ratios):.6f}, {max(ratios):.6f}] "
          "(<= 1: the new fit is at least as good)")


if __name__ == "__main__":
    main()
