"""Scaling-law fits: synthetic data with known parameters, bounds, LOO comparison, grouping, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsgen_eval.analysis.scaling import (better_form, fit_groups, fit_power_law, fit_two_factor, power_law,
                                         two_factor_law)
from fsgen_eval.cli import main


def test_power_law_value_by_hand():
    # b - a r^-alpha at r=4, a=1, alpha=0.5, b=1: 1 - 1/2
    assert power_law(np.array([4.0]), 1.0, 0.5, 1.0)[0] == pytest.approx(0.5)


def test_power_law_recovers_parameters_within_ci():
    rng = np.random.default_rng(1)
    r = np.geomspace(2, 150, 20)
    truth = {"a": 0.4, "alpha": 0.6, "b": 0.5}
    y = power_law(r, **truth) + rng.normal(0, 0.003, r.size)
    fit = fit_power_law(r, y, n_boot=150, random_state=0)
    for name, value in truth.items():
        lo, hi = fit.ci[name]
        assert lo <= value <= hi, (name, fit.ci[name])
        assert fit.params[name] == pytest.approx(value, abs=0.05)
    assert fit.r2 > 0.99 and fit.at_bound == []
    assert fit.loo_rmse is not None and fit.loo_rmse < 0.01


def test_bootstrap_is_seeded():
    r = np.geomspace(2, 100, 8)
    y = power_law(r, 0.3, 0.5, 0.4) + np.random.default_rng(0).normal(0, 0.01, 8)
    a, b = fit_power_law(r, y, n_boot=50, random_state=3), fit_power_law(r, y, n_boot=50, random_state=3)
    assert a.ci == b.ci


def test_parameter_at_bound_is_reported():
    # a rate that falls with r has no b - a r^-alpha fit with a > 0: a sits at its lower bound 0.05
    r = np.array([2.0, 4.0, 8.0, 16.0, 32.0])
    y = 0.5 - 0.05 * np.log(r)
    fit = fit_power_law(r, y, n_boot=20)
    assert "a" in fit.at_bound and fit.params["a"] == pytest.approx(0.05)


def test_too_few_points_says_so():
    with pytest.raises(ValueError, match="at least 3 points.*got 2"):
        fit_power_law(np.array([2.0, 4.0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_two_factor(np.array([1e9, 2e9]), np.array([7e9, 9e9]), np.array([0.1, 0.2]))


def _two_factor_data(seed: int = 2):
    ns = np.array([0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 3.0, 3.0, 7.0, 7.0, 14.0, 0.5]) * 1e9
    nl = np.array([7.0, 32.0, 72.0, 7.0, 32.0, 72.0, 14.0, 72.0, 32.0, 72.0, 72.0, 14.0]) * 1e9
    y = two_factor_law(ns, nl, -1.0, 0.3, 0.15) * np.exp(np.random.default_rng(seed).normal(0, 0.01, ns.size))
    return ns, nl, y


def test_two_factor_recovers_its_law_and_wins_on_held_out_pairs():
    ns, nl, y = _two_factor_data()
    two = fit_two_factor(ns, nl, y, n_boot=150)
    for name, value in {"c": -1.0, "alpha": 0.3, "beta": 0.15}.items():
        lo, hi = two.ci[name]
        assert lo <= value <= hi, (name, two.ci[name])
    assert two.r2 > 0.98
    power = fit_power_law(nl / ns, y, n_boot=20)
    assert better_form(power, two) == "two_factor"
    assert two.loo_rmse < power.loo_rmse


def test_two_factor_needs_separable_sizes():
    ns = np.full(4, 1e9)
    with pytest.raises(ValueError, match="vary independently"):
        fit_two_factor(ns, np.array([2e9, 4e9, 8e9, 16e9]), np.array([0.1, 0.2, 0.25, 0.3]), n_boot=5)


def test_fit_groups_by_task_and_method():
    r = np.geomspace(2, 100, 6)
    rows = [{"task": t, "method": "oracle", "small_params": 1e9, "large_params": 1e9 * x,
             "collaboration_rate": float(power_law(x, 0.3, 0.5, b))} for t, b in (("a", 0.4), ("b", 0.6)) for x in r]
    rows.append({"task": "c", "method": "oracle", "small_params": 1e9, "large_params": 4e9, "collaboration_rate": 0.2})
    groups = fit_groups(rows, n_boot=20)
    assert [g.settings["task"] for g in groups] == ["a", "b", "c"]
    assert groups[0].power.params["b"] == pytest.approx(0.4, abs=1e-3)
    assert groups[1].power.params["b"] == pytest.approx(0.6, abs=1e-3)
    assert "a fit needs at least 3 pairs" in groups[2].error and groups[2].power is None
    assert groups[2].to_dict()["a"] is None and "error" in groups[2].to_dict()


def test_fit_cli_json_from_csv(tmp_path, capsys):
    r = np.geomspace(2, 100, 6)
    lines = ["large_params,small_params,collaboration_rate,task,method"]
    lines += [f"{1e9 * x},{1e9},{power_law(x, 0.3, 0.5, 0.4)},gsm8k,oracle" for x in r]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    assert main(["fit", str(tmp_path / "p.csv"), "--json", "--n-boot", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 1 and out[0]["task"] == "gsm8k" and out[0]["method"] == "oracle"
    assert out[0]["b"] == pytest.approx(0.4, abs=1e-3) and out[0]["r2"] > 0.999
    assert {"a", "alpha", "ci", "at_bound", "loo_rmse", "two_factor", "better"} <= set(out[0])


def test_fit_cli_from_result_folders(tmp_path, capsys):
    from analysis_helpers import write_run

    params = tmp_path / "params.yaml"
    params.write_text("s1: 1000\ns2: 2000\nl1: 8000\nl2: 64000\n")
    sizes = {"s1": 1000, "s2": 2000, "l1": 8000, "l2": 64000}
    for small, large in (("s1", "l1"), ("s1", "l2"), ("s2", "l1"), ("s2", "l2")):
        rate = float(power_law(np.array(sizes[large] / sizes[small]), 0.3, 0.5, 0.4))
        write_run(tmp_path / "sweep" / f"{small}{large}", small, large,
                  summary_override={"gsm8k": {"collaboration_rate": rate}})
    assert main(["fit", str(tmp_path / "sweep"), "--params", str(params), "--json", "--n-boot", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["n_points"] == 4 and out[0]["b"] == pytest.approx(0.4, abs=1e-3)


def test_two_factor_on_four_points_is_an_interpolation_without_interval_or_verdict():
    # a 2 x 2 design: 4 points for 3 parameters leave one degree of freedom; no interval, no verdict
    ns, nl = np.array([1e9, 1e9, 3e9, 3e9]), np.array([2e10, 9e10, 2e10, 9e10])
    y = two_factor_law(ns, nl, -1.0, 0.3, 0.15) * np.array([1.01, 0.99, 0.995, 1.005])
    fit = fit_two_factor(ns, nl, y, n_boot=100)
    assert fit.n_boot_used == 0 and not any(np.isfinite(v).any() for v in fit.ci.values())
    assert "interpolation" in fit.degenerate[0] and fit.verdict.startswith("no verdict")
    power = fit_power_law(nl / ns, y, n_boot=100)
    assert power.n_boot_used == 0 and "interpolation" in power.degenerate[0]


# ---------------------------------------------------------------- the vectorised fit and its diagnostics


def test_vectorised_resample_fits_equal_curve_fit_on_each_resample():
    # each weighted fit must be the least-squares fit of its resample: compare with curve_fit started at
    # the truth on the resampled points themselves
    from scipy.optimize import curve_fit

    from fsgen_eval.analysis.scaling import fit_power_weighted, resample_weights

    rng = np.random.default_rng(5)
    r = np.geomspace(2, 150, 12)
    y = power_law(r, 0.3, 0.7, 0.45) + rng.normal(0, 0.004, r.size)
    w = resample_weights(len(r), 8, random_state=1)
    params, sse = fit_power_weighted(r, y, w)
    for row, p, s in zip(w, params, sse):
        idx = np.repeat(np.arange(len(r)), row.astype(int))
        ref, _ = curve_fit(power_law, r[idx], y[idx], p0=[0.3, 0.7, 0.45], bounds=(0.05, np.inf))
        ref_sse = float(np.sum((power_law(r[idx], *ref) - y[idx]) ** 2))
        assert s == pytest.approx(float(np.sum((power_law(r[idx], *p) - y[idx]) ** 2)), rel=1e-9)
        assert s <= ref_sse * (1 + 1e-7)  # never worse than scipy from the truth
        assert p == pytest.approx(ref, rel=1e-3)


def test_loo_leaves_each_point_out():
    r = np.geomspace(2, 100, 7)
    y = power_law(r, 0.3, 0.5, 0.4)  # exact: every leave-one-out fit predicts its point
    fit = fit_power_law(r, y, n_boot=10)
    assert fit.loo_rmse == pytest.approx(0, abs=1e-5)


def test_at_bound_uses_a_relative_tolerance():
    from fsgen_eval.analysis.scaling import _at_bound

    assert _at_bound(("a", "alpha", "b"), np.array([0.0500033, 0.8, 0.3]), 0.05, np.inf) == ["a"]
    assert _at_bound(("a",), np.array([0.0501]), 0.05, np.inf) == []
    assert _at_bound(("a",), np.array([2.9999]), 0.05, 3.0) == ["a"]


def test_flat_rates_are_a_degenerate_fit():
    # rates that do not move with the ratio: the best b - a r^-alpha is a constant, R² <= 0
    r = np.geomspace(2, 40, 10)
    y = 0.28 + np.array([1, -1, 2, -2, 1, 0, -1, 2, -2, 0]) * 0.01
    fit = fit_power_law(r, y, n_boot=100)
    assert fit.r2 < 0.2 and fit.degenerate, fit
    assert any("unbounded" in d or "cap" in d or "bound" in d for d in fit.degenerate)
    good = fit_power_law(r, power_law(r, 0.3, 0.5, 0.4) + (y - 0.28) * 0.1, n_boot=100)
    assert good.degenerate == [], good.degenerate


def test_alpha_minus_beta_interval_tests_a_ratio_law():
    ns, nl, y = _two_factor_data()  # alpha 0.3, beta 0.15
    two = fit_two_factor(ns, nl, y, n_boot=300)
    lo, hi = two.ci["alpha_minus_beta"]
    assert lo <= 0.15 <= hi and lo > 0
    assert two.extra["alpha_minus_beta"] == pytest.approx(two.params["alpha"] - two.params["beta"])
    ratio = two_factor_law(ns, nl, -1.0, 0.2, 0.2) * np.exp(np.random.default_rng(3).normal(0, 0.01, ns.size))
    lo, hi = fit_two_factor(ns, nl, ratio, n_boot=300).ci["alpha_minus_beta"]
    assert lo < 0 < hi


def test_vectorised_fit_is_deterministic_per_seed():
    ns, nl, y = _two_factor_data()
    a = fit_two_factor(ns, nl, y, n_boot=200, random_state=7)
    b = fit_two_factor(ns, nl, y, n_boot=200, random_state=7)
    c = fit_two_factor(ns, nl, y, n_boot=200, random_state=8)
    assert a.ci == b.ci and a.ci != c.ci


def test_groups_split_by_router_and_need_three_pairs(capsys):
    rows = [{"task": "gsm8k", "method": "oracle", "router": "always", "small": f"s{i}", "large": "L",
             "small_params": 1e9 * (i + 1), "large_params": 64e9,
             "collaboration_rate": float(power_law(np.array(64 / (i + 1)), 0.3, 0.5, 0.4))} for i in range(5)]
    # seven entropy-routed runs of one pair: never fitted, never mixed into the oracle's fit
    rows += [{"task": "gsm8k", "method": "oracle", "router": "entropy", "threshold": 1.5, "small": "s0",
              "large": "L", "small_params": 1e9, "large_params": 64e9, "collaboration_rate": 0.1 + 0.01 * k}
             for k in range(7)]
    seen = []
    groups = fit_groups(rows, n_boot=20, progress=lambda i, n, label: seen.append((i, n, label)))
    assert [g.label for g in groups] == ["task=gsm8k method=oracle router=always",
                                            "task=gsm8k method=oracle router=entropy@1.5"]
    assert [s[:2] for s in seen] == [(0, 2), (1, 2)]
    always, entropy = (g.to_dict() for g in groups)
    assert always["n_points"] == 5 and always["b"] == pytest.approx(0.4, abs=1e-3)
    assert entropy["n_points"] == 7 and entropy["n_pairs"] == 1 and entropy["a"] is None
    assert "1 distinct (small, large) pair(s) in 7 point(s)" in entropy["error"]


def test_fit_cli_names_groups_in_progress_and_errors(tmp_path, capsys):
    lines = ["large_params,small_params,collaboration_rate,task,method", "4e9,1e9,0.2,gsm8k,oracle",
             "8e9,1e9,0.25,gsm8k,oracle"]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    assert main(["fit", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "[task=gsm8k method=oracle] 2 distinct (small, large) pair(s)" in err and "None/None" not in err


def test_fit_text_reports_alpha_minus_beta_and_degeneracy(tmp_path, capsys):
    ns, nl, y = _two_factor_data()
    lines = ["large_params,small_params,collaboration_rate,task,method"]
    lines += [f"{b},{a},{c},gsm8k,oracle" for a, b, c in zip(ns, nl, y)]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    assert main(["fit", str(tmp_path / "p.csv"), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "alpha - beta = " in out and "alpha = beta (a pure ratio law) is rejected" in out
    assert "degenerate" in out or "not degenerate" in out
