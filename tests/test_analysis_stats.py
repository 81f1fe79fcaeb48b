"""Statistics a reviewer would check: intervals that reach a bound are flagged, no verdict from a fit that
explains nothing, intervals independent of row order, a model-level bootstrap that keeps a model's pairs
together, the two-parameter log-ratio law beside the others, and no System-2-alone run among fit points."""

from __future__ import annotations

import numpy as np
import pytest

from fsgen_eval.analysis.points import fit_points, rate_field
from fsgen_eval.analysis.scaling import (fit_groups, fit_log_ratio, fit_power_law, fit_two_factor,
                                         model_weights, power_law)

SIZES = {"m1": 1e9, "m2": 2e9, "m3": 4e9, "m4": 8e9, "m5": 16e9}


def _rows(seed: int = 0, law=lambda r: power_law(r, 0.3, 0.5, 0.45)) -> list[dict]:
    """All 10 (small, large) pairs of five models, one point each, rate = law(ratio) + noise."""
    rng = np.random.default_rng(seed)
    names = list(SIZES)
    return [{"task": "t", "method": "oracle", "router": "always", "small": s, "large": l,
             "small_params": SIZES[s], "large_params": SIZES[l],
             "collaboration_rate": float(law(SIZES[l] / SIZES[s]) + rng.normal(0, 0.004))}
            for i, s in enumerate(names) for l in names[i + 1:]]


def test_interval_reaching_a_bound_is_flagged():
    # alpha = 0.06 is barely above its 0.05 bound: the bootstrap's lower end sits on the bound, and the
    # fit says the data do not identify alpha even though the point estimate is inside
    rng = np.random.default_rng(0)
    r = np.geomspace(2, 100, 12)
    y = 0.5 - 0.3 * r**-0.06 + rng.normal(0, 0.003, 12)
    fit = fit_power_law(r, y, n_boot=200)
    assert "alpha" not in fit.at_bound and "alpha" in fit.ci_at_bound
    assert fit.ci["alpha"][0] == pytest.approx(0.05)
    assert any("CI of alpha reaches its bound" in why for why in fit.degenerate)


def test_well_identified_fit_has_no_interval_at_a_bound():
    r = np.geomspace(2, 150, 20)
    y = power_law(r, 0.4, 0.6, 0.5) + np.random.default_rng(1).normal(0, 0.003, r.size)
    fit = fit_power_law(r, y, n_boot=200)
    assert fit.ci_at_bound == [] and fit.degenerate == []


def test_no_alpha_beta_verdict_when_the_fit_explains_nothing():
    ns = np.array([1, 1, 1, 2, 2, 4, 4, 8.0]) * 1e9
    nl = np.array([2, 4, 8, 4, 8, 8, 16, 16.0]) * 1e9
    y = np.array([0.3, 0.31, 0.29, 0.3, 0.001, 0.3, 0.31, 0.3])  # one outlier: the log-space fit misses f
    fit = fit_two_factor(ns, nl, y, n_boot=200)
    assert fit.r2 <= 0
    assert fit.verdict.startswith("no verdict") and "rejected" not in fit.verdict


def test_alpha_beta_verdict_given_on_a_good_fit():
    ns = np.array([0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 3.0, 3.0, 7.0, 7.0, 14.0, 0.5]) * 1e9
    nl = np.array([7.0, 32.0, 72.0, 7.0, 32.0, 72.0, 14.0, 72.0, 32.0, 72.0, 72.0, 14.0]) * 1e9
    y = np.exp(-1.0 - 0.3 * np.log(ns) + 0.15 * np.log(nl)) * np.exp(np.random.default_rng(2).normal(0, 0.01, 12))
    fit = fit_two_factor(ns, nl, y, n_boot=200)
    assert fit.r2 > 0.9 and fit.verdict.endswith("is rejected")


@pytest.mark.parametrize("resample", ["models", "points"])
def test_intervals_do_not_change_with_row_order(resample):
    rows = _rows()
    perm = [rows[i] for i in np.random.default_rng(7).permutation(len(rows))]
    a = [g.to_dict() for g in fit_groups(rows, n_boot=60, resample=resample)]
    b = [g.to_dict() for g in fit_groups(perm, n_boot=60, resample=resample)]
    assert a == b
    assert a[0]["n_boot_used"] > 0 and a[0]["resampling"] == resample


def test_model_bootstrap_never_splits_a_models_pairs():
    names = list(SIZES)
    small = np.array([s for i, s in enumerate(names) for _ in names[i + 1:]])
    large = np.array([l for i, _ in enumerate(names) for l in names[i + 1:]])
    w = model_weights(small, large, 300, random_state=0)
    assert w.shape == (300, 10)
    for row in w:
        in_use = {m for m, wt in zip(small, row) if wt > 0} | {m for m, wt in zip(large, row) if wt > 0}
        # every pair between two models in use is in, with the product of the models' counts as its weight
        for k, (s, l) in enumerate(zip(small, large)):
            assert (row[k] > 0) == (s in in_use and l in in_use)
    # a pair's weight is the product of its two models' draw counts (each at most 5 of 5 models)
    assert np.all(np.isin(w, [c1 * c2 for c1 in range(6) for c2 in range(6)]))


def test_log_ratio_law_recovers_itself_and_is_compared_on_held_out_pairs():
    rows = _rows(law=lambda r: 0.1 + 0.05 * np.log(r))
    (g,) = fit_groups(rows, n_boot=60)
    assert g.log_ratio.params["d"] == pytest.approx(0.05, abs=0.01)
    assert g.log_ratio.loo_rmse is not None and g.power.loo_rmse is not None
    assert g.better in ("log_ratio", "power_law", "two_factor")
    fit = fit_log_ratio(np.geomspace(2, 50, 3), np.array([0.1, 0.2, 0.3]))
    assert fit.n_boot_used == 0 and "interpolation" in fit.degenerate[0]


class _F:
    def __init__(self, small, large, method="oracle", router="always", rate=0.2, base=None):
        self.small, self.large, self.method, self.router, self.threshold = small, large, method, router, None
        self.per_task = {"t": {"collaboration_rate": rate, "base_collaboration_rate": base}}
        self.summary = self.per_task["t"]


class _Run:
    def __init__(self, fsgen):
        self.fsgen, self.path, self.results = fsgen, "x", {"t": {}}

    def settings(self, task):
        return {"task": task, "method": self.fsgen.method, "router": self.fsgen.router}


class _Params:
    def get(self, name):
        return SIZES[name]


def test_fit_points_leave_out_system2_alone_and_use_the_methods_rate():
    runs = [_Run(_F("m1", "m2")), _Run(_F("m2", "m2", router="never")),  # a sweep's internal System 2 run
            _Run(_F("m1", "m1")), _Run(_F("m1", "m3", router="never")),
            _Run(_F("m1", "m4", method="proxy", rate=0.5, base=0.1))]
    rows = fit_points(runs, _Params(), "any")
    assert [(r["small"], r["large"]) for r in rows] == [("m1", "m2"), ("m1", "m4")]
    assert rows[1]["collaboration_rate"] == 0.1 and rows[1]["rate_field"] == "base_collaboration_rate"
    assert rate_field("oracle") == "collaboration_rate"
    assert fit_points(runs, _Params(), "never") == []


# ---------------------------------------------------------------- the leaderboard's intervals and stars


def test_metric_interval_is_wilson_in_0_1_and_too_few_requests_say_so():
    from fsgen_eval.analysis.leaderboard import Column, cell_text, wilson

    col = Column("metric:exact_match", "em", "high")
    row = {"metrics": {"exact_match": (0.0417, 0.0416)}, "n_requests": 24}
    v, (lo, hi) = col.value(row)
    assert lo >= 0 and hi <= 1 and lo < v < hi  # ± 1.96 stderr would give [-0.0400, 0.1233]
    assert (lo, hi) == wilson(0.0417, 24)
    few = {"metrics": {"exact_match": (0.332, 0.0)}, "n_requests": 3, "collaboration_rate": 0.332,
           "ci": {}}
    assert cell_text(col, few) == "0.3320 (n=3: too few requests for an interval)"
    rate = Column("collaboration_rate", "c", "low", starred=False)
    assert "too few requests" in cell_text(rate, few) and "[" not in cell_text(rate, few)


def test_star_only_a_strict_best_on_meaningful_columns():
    from fsgen_eval.analysis.leaderboard import RATE_COLUMNS, Column, best_rows

    col = Column("metric:pass@1", "p", "high")
    rows = [{"metrics": {"pass@1": (v, None)}, "role": "collaborative"} for v in (0.0, 0.0, 0.0)]
    assert best_rows(rows, col) == []  # constant column
    rows[1]["metrics"]["pass@1"] = (0.2, None)
    assert best_rows(rows, col) == [1]
    rows[2]["metrics"]["pass@1"] = (0.2, None)
    assert best_rows(rows, col) == []  # a tie
    collab = next(c for c in RATE_COLUMNS if c.key == "collaboration_rate")
    speed = next(c for c in RATE_COLUMNS if c.key == "tokens_per_second")
    rated = [{"collaboration_rate": v, "tokens_per_second": v, "role": "collaborative", "metrics": {}}
             for v in (0.1, 0.2)]
    assert best_rows(rated, collab) == [] and best_rows(rated, speed) == []
