"""The frontier's analysis: calibration to a target call rate, Wilson intervals, gap recovery with a
document bootstrap, and the command's one-line refusals (no model runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fsgen_eval.analysis import frontier as F
from fsgen_eval.cli import main
from fsgen_eval.experiments import frontier as X

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("calls_when", ["above", "below"])
@pytest.mark.parametrize("target", [0.05, 0.1, 0.2, 0.3, 0.5])
def test_calibrated_rate_equals_target_within_one_token(calls_when, target):
    values = np.random.default_rng(1).gamma(2.0, 0.7, size=537)  # distinct, like float statistics
    t, rate = F.native_threshold(values, calls_when, target)
    assert abs(rate - target) <= 1 / len(values)
    assert F.realised_rate(values, calls_when, t) == rate
    # the sweep writes the threshold with :g; the written number calls the same tokens
    assert F.realised_rate(values, calls_when, float(f"{t:g}")) == rate


def test_calibration_with_ties_never_exceeds_target():
    values = np.array([0.1, 0.5, 0.5, 0.5, 0.9, 0.9, 0.2, 0.3, 0.4, 0.6])
    t, k = F.calibrate(values, 0.5)  # 5 allowed: 0.9, 0.9, 0.6, then three tied 0.5s that go together
    assert k == 3 and 0.5 < t < 0.6
    assert F.calibrate(values, 0.0)[1] == 0 and F.calibrate(values, 1.0)[1] == 10


def test_wilson_known_values_and_bounds():
    lo, hi = F.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert F.wilson(0, 7)[0] == 0.0 and F.wilson(7, 7)[1] == 1.0


def test_crossing_interpolates_linearly():
    rates, accs = np.array([0.0, 0.2, 0.5, 1.0]), np.array([0.1, 0.3, 0.5, 0.6])
    assert F.crossing(rates, accs, 0.4) == pytest.approx(0.35)
    assert F.crossing(rates, accs, 0.1) == 0.0
    assert np.isnan(F.crossing(rates, accs, 0.7))


def _point(label, router, correct, calls, tokens=10):
    d = len(correct)
    return F.Point(label, router, None, None, np.arange(d), np.asarray(correct, float), np.full(d, tokens),
                   np.asarray(calls), np.asarray(calls) // 2, 100, 1000)


def test_gap_recovery_estimate_and_seeded_interval():
    s1 = _point("S1", "never", [0, 0, 0, 0, 1, 1, 0, 0], [0] * 8)
    s2 = _point("S2", "always", [1, 1, 1, 0, 1, 1, 1, 1], [10] * 8)
    r = [_point("e@.2", "entropy", [1, 0, 0, 0, 1, 1, 1, 0], [2] * 8),
         _point("e@.5", "entropy", [1, 1, 1, 0, 1, 1, 0, 1], [5] * 8)]
    # acc: S1 0.25, S2 0.875, 0.2 -> 0.5, 0.5 -> 0.75; 50 % goal 0.5625: between 0.2 and 0.5
    rec = F.gap_recovery(s1, s2, r, n_boot=300, seed=3)
    assert rec["50%"]["call_rate"] == pytest.approx(0.2 + (0.5625 - 0.5) / 0.25 * 0.3)
    assert rec["90%"]["call_rate"] == pytest.approx(0.5 + (0.8125 - 0.75) / 0.125 * 0.5)
    lo, hi = rec["50%"]["ci"]
    assert lo <= rec["50%"]["call_rate"] <= (hi if hi is not None else 1.0)
    assert F.gap_recovery(s1, s2, r, n_boot=300, seed=3) == rec  # seeded
    assert rec["50%"]["param_cost"] == pytest.approx(100 + rec["50%"]["call_rate"] * 1000)
    assert rec["50%"]["param_cost_ci"][0] == pytest.approx(100 + lo * 1000)
    assert f"| {rec['50%']['param_cost']:.4g} |" in F.format_recovery({"entropy": rec})
    assert s2.param_cost == 1100 and s1.param_cost == 100 and r[0].param_cost == 100 + 0.2 * 1000


def test_gap_recovery_refuses_other_documents():
    s1 = _point("S1", "never", [0, 1], [0, 0])
    s2 = _point("S2", "always", [1, 1, 1], [10] * 3)
    with pytest.raises(ValueError, match="other documents"):
        F.gap_recovery(s1, s2, [], n_boot=10)


def test_no_gap_is_said_not_invented():
    s1 = _point("S1", "never", [1, 1], [0, 0])
    s2 = _point("S2", "always", [1, 0], [10, 10])
    rec = F.gap_recovery(s1, s2, [_point("m", "margin", [1, 1], [3, 3])], n_boot=10)
    assert rec["50%"]["call_rate"] is None and "not more accurate" in rec["50%"]["reason"]


@pytest.mark.parametrize("argv, message", [
    (["--calibration-docs", "3:9"], "inside the evaluated documents"),
    ([], "exactly one"),
    (["--calibration-task", "gsm8k"], "is the evaluated task"),
    (["--calibration-docs", "20:30", "--routers", "always"], "thresholds no System 1 signal"),
    (["--calibration-docs", "20:30", "--rates", "0,0.1"], "must lie in (0, 1)"),
    (["--calibration-docs", "9:2"], "START < END"),
])
def test_bad_input_is_one_line_before_anything_runs(tmp_path, capsys, argv, message):
    rc = main(["frontier", "--small", "micro-s", "--large", "micro-l", "--task", "gsm8k", "--limit", "10",
               "-o", str(tmp_path / "f"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("task, calibration", [
    ("fsgen_arith", "fsgen_arith_level2"),  # the evaluated group contains the calibration task
    ("fsgen_arith_level2", "fsgen_arith"),  # the calibration group contains the evaluated task
])
def test_calibration_task_sharing_a_task_is_one_line_before_anything_runs(tmp_path, capsys, task, calibration):
    rc = main(["frontier", "--small", "models/arith/arith-s", "--large", "models/arith/arith-l", "--task", task,
               "--limit", "10", "--calibration-task", calibration, "--lm-eval-args", f"--include_path {REPO / 'tasks'}",
               "-o", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "shares fsgen_arith_level2 with the evaluated task" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "f").exists()


def test_task_members_expand_groups_and_tags_in_both_index_layouts(tmp_path):
    group = tmp_path / "g.yaml"
    group.write_text("group: g\ntask:\n  - a\n  - inner\n  - task: inline\n    process_docs: !function u.f\n")
    inner = tmp_path / "inner.yaml"
    inner.write_text("group: inner\ntask: [b]\n")
    old = {"g": {"type": "group", "task": -1, "yaml_path": str(group)},  # lm-eval 0.4.10's index
           "inner": {"type": "group", "task": -1, "yaml_path": str(inner)},
           "t": {"type": "tag", "task": ["a", "c"], "yaml_path": -1}, "a": {"type": "task", "yaml_path": "x"}}
    assert X.task_members(old, "g") == {"a", "b", "inline"}
    assert X.task_members(old, "t") == {"a", "c"} and X.task_members(old, "a") == {"a"}
    from lm_eval.tasks import TaskManager

    new = TaskManager(include_path=str(REPO / "tasks")).task_index  # this lm-eval's own index
    assert X.task_members(new, "fsgen_arith") == {f"fsgen_arith_level{i}" for i in range(1, 5)}


def test_learned_router_of_another_pair_is_refused(tmp_path, capsys):
    from fsgen_eval.core import learned as L

    r = L.LearnedRouter("scalar", 0, "logistic", np.zeros(4), np.ones(4), 0.0, 0.5, coef=np.ones(4),
                        info={"pair": {"small": "models/micro/micro-xs", "large": "models/micro/micro-l"}})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(L.to_json(r)))
    rc = main(["frontier", "--small", "models/micro/micro-s", "--large", "models/micro/micro-l", "--task", "gsm8k",
               "--limit", "10", "--calibration-docs", "20:30", "--learned", str(path), "-o", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "a router of the pair" in err and len(err.splitlines()) == 1


def test_learned_calibration_meets_target(tmp_path):
    from fsgen_eval.core import learned as L

    rng = np.random.default_rng(0)
    traces = [{"s1_entropy": rng.gamma(2, 0.5, 40), "s1_top1_prob": rng.uniform(0, 1, 40),
               "s1_margin": rng.uniform(0, 1, 40)} for _ in range(5)]
    r = L.LearnedRouter("scalar", 0, "logistic", np.zeros(4), np.ones(4), 0.0, 0.5,
                        coef=np.array([1.0, -0.5, -0.5, 0.01]))
    src = tmp_path / "r.json"
    src.write_text(json.dumps(L.to_json(r)))
    out = X.learned_thresholds(traces, src, [0.1, 0.3], tmp_path)
    for rate, (path, t, cal) in out.items():
        copy = L.load(path)
        scores = np.concatenate([L.decision(copy, L.trace_features("scalar", tr)) for tr in traces])
        assert copy.threshold == t and abs(np.mean(scores > t) - rate) <= 1 / 200 and cal == np.mean(scores > t)


def test_learned_router_on_topk_features_is_refused_before_anything_runs(tmp_path, capsys):
    from fsgen_eval.core import learned as L

    r = L.LearnedRouter("topk", 10, "logistic", np.zeros(10), np.ones(10), 0.0, 0.5, coef=np.ones(10))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(L.to_json(r)))
    rc = main(["frontier", "--small", "models/micro/micro-s", "--large", "models/micro/micro-l", "--task", "gsm8k",
               "--limit", "10", "--calibration-docs", "20:30", "--learned", str(path), "-o", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "scalar features only" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "f").exists()


def _row(router, acc=0.5):
    return {"label": router, "router": router, "accuracy": acc, "accuracy_ci": [0.4, 0.6], "llm_call_rate": 0.0,
            "param_cost": 1.0}


@pytest.mark.parametrize("obj, message", [
    ({"points": "x"}, "not a frontier file"),
    ({"points": [{"router": "never"}]}, "not a frontier file"),
    ({"points": [_row("never"), _row("entropy")]}, "needs its end points"),
])
def test_malformed_frontier_file_is_one_line_in_the_report(tmp_path, capsys, obj, message):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "frontier.json").write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=message):
        F.find_frontiers([tmp_path / "f"])
    rc = main(["report", str(tmp_path / "f"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_find_frontiers_reads_each_file_once_in_path_order(tmp_path):
    for name in ("b", "a", "a/deeper"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "frontier.json").write_text(json.dumps({"points": [_row("never"), _row("always", 0.9)]}))
    found = F.find_frontiers([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p, _ in found] == ["a/deeper/frontier.json", "a/frontier.json",
                                                                    "b/frontier.json"]
    assert F.find_frontiers([tmp_path / "b" / "frontier.json"])[0][1]["points"][1]["accuracy"] == 0.9
