"""The CI regression gate: identical results pass, shifted results fail, intervals absorb measured noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis_helpers import random_traces, write_run
from fsgen_eval.analysis import gate
from fsgen_eval.cli import main


def _results(folder, shift: float = 0.0, acc: float = 0.5, seed: int = 1):
    traces = random_traces(20, 30, seed=seed, shift=shift)
    return write_run(folder, "s", "l", tasks={"gsm8k": {"exact_match,strict-match": acc,
                                                        "exact_match_stderr,strict-match": 0.01}},
                     traces={"gsm8k": traces})


def test_ratio_ci_by_hand():
    # two requests with rates 0/2 and 2/2: ratio 1/2; residuals -1, +1 -> se = sqrt(2/2)*2/4 = 0.5
    lo, hi = gate.ratio_ci(np.array([0.0, 2.0]), np.array([2.0, 2.0]))
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(2 * gate.Z95 * 0.5)
    assert gate.ratio_ci(np.array([1.0]), np.array([2.0])) is None


def test_identical_results_pass(tmp_path, capsys):
    res = _results(tmp_path / "run")
    base = tmp_path / "baseline.json"
    assert main(["check", str(res), "--baseline", str(base), "--update-baseline"]) == 0
    stored = json.loads(base.read_text())
    (entry,) = stored["entries"].values()
    assert entry["metrics"] == {"exact_match,strict-match": 0.5} and 0 < entry["collaboration_rate"] < 1
    assert main(["check", str(res), "--baseline", str(base)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_shifted_results_fail(tmp_path, capsys):
    base = tmp_path / "baseline.json"
    assert main(["check", str(_results(tmp_path / "a")), "--baseline", str(base), "--update-baseline"]) == 0
    capsys.readouterr()
    assert main(["check", str(_results(tmp_path / "b", shift=0.3)), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "collaboration_rate" in out


def test_accuracy_drop_fails_and_tolerance_can_allow_it(tmp_path, capsys):
    base = tmp_path / "baseline.json"
    main(["check", str(_results(tmp_path / "a")), "--baseline", str(base), "--update-baseline"])
    dropped = _results(tmp_path / "b", acc=0.4)
    assert main(["check", str(dropped), "--baseline", str(base)]) == 1
    assert "exact_match,strict-match" in capsys.readouterr().out
    assert main(["check", str(dropped), "--baseline", str(base), "--tol-acc", "0.2"]) == 0


def test_move_within_the_runs_own_interval_is_noise():
    cur = {"k": {"collaboration_rate": 0.30, "llm_call_rate": 1.0, "metrics": {},
                 "ci": {"collaboration_rate": [0.2, 0.4]}}}
    base = {"entries": {"k": {"collaboration_rate": 0.25, "llm_call_rate": 1.0, "metrics": {}}}}
    checks = gate.compare(base, cur, gate.DEFAULT_TOLERANCES)
    (collab,) = [c for c in checks if c.metric == "collaboration_rate"]
    assert collab.status == "noise" and not collab.failed
    cur["k"]["ci"] = {}
    (collab,) = [c for c in gate.compare(base, cur, gate.DEFAULT_TOLERANCES) if c.metric == "collaboration_rate"]
    assert collab.status == "FAIL"


def test_no_intervals_baseline_fails_a_move_inside_the_interval(tmp_path, capsys):
    # seed 2's traces move the rate by less than the run's own interval: noise by default, a failure for
    # a baseline recorded with --no-intervals (deterministic runs on fixed documents)
    base, first = tmp_path / "baseline.json", str(_results(tmp_path / "a"))
    main(["check", first, "--baseline", str(base), "--update-baseline", "--tol-collab", "0.001"])
    moved = _results(tmp_path / "b", seed=2)
    assert main(["check", str(moved), "--baseline", str(base)]) == 0
    assert "noise" in capsys.readouterr().out
    main(["check", first, "--baseline", str(base), "--update-baseline", "--tol-collab", "0.001", "--no-intervals"])
    assert json.loads(base.read_text())["intervals"] is False
    assert main(["check", str(moved), "--baseline", str(base)]) == 1
    assert main(["check", first, "--baseline", str(base)]) == 0


def test_missing_entry_fails(tmp_path, capsys):
    base = tmp_path / "baseline.json"
    main(["check", str(_results(tmp_path / "a")), "--baseline", str(base), "--update-baseline"])
    other = write_run(tmp_path / "b", "s", "other-large")
    assert main(["check", str(other), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "new" in out


def test_baseline_not_a_baseline(tmp_path, capsys):
    bad = tmp_path / "b.json"
    bad.write_text('{"x": 1}')
    assert main(["check", str(_results(tmp_path / "a")), "--baseline", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.json" in err and "not a baseline" in err


def test_update_baseline_creates_its_folder(tmp_path, monkeypatch, capsys):
    """README's `--baseline ci/fsgen-baseline.json --update-baseline` in a fresh clone, where ci/ is absent."""
    res = _results(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(res), "--baseline", "ci/fsgen-baseline.json", "--update-baseline"]) == 0
    assert json.loads((tmp_path / "ci" / "fsgen-baseline.json").read_text())["entries"]
    assert not list((tmp_path / "ci").glob("*.tmp"))
    assert main(["check", str(res), "--baseline", "ci/fsgen-baseline.json"]) == 0


def test_a_missing_baseline_is_one_line_saying_so(tmp_path, capsys):
    res = _results(tmp_path / "run")
    assert main(["check", str(res), "--baseline", str(tmp_path / "ci" / "b.json")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"fsgen-eval check: error: baseline {tmp_path / 'ci' / 'b.json'}: no such file; "
                    "record one with --update-baseline")
