"""The CI gate script (scripts/ci_gate.sh) against the committed baseline: the same code passes; a baseline
moved by more than the tolerance (what a decoding change that moves the rate looks like) fails with exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsgen_eval.cli import main
from _lm_eval_helpers import REPO, offline_env

SCRIPT = REPO / "scripts" / "ci_gate.sh"
BASELINE = REPO / "reports" / "ci" / "baseline.json"


def _gate(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "GATE_OUT": str(out), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gate_passes_on_this_code_and_fails_on_a_moved_baseline(tmp_path, capsys):
    offline_env()
    out = tmp_path / "gate"
    run = _gate(out)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failed: PASS" in run.stdout
    stored = json.loads(BASELINE.read_text())
    assert stored["intervals"] is False
    # the oracle and the entropy-routed oracle, each on fsgen_arith and its four level tasks
    assert len(stored["entries"]) == 10
    tol = stored["tolerances"]["collaboration_rate"]
    for key, entry in stored["entries"].items():
        assert 0.05 < entry["collaboration_rate"] < 0.95  # informative: System 2 overrules System 1 at some tokens
        assert any(name.startswith("exact_match") for name in entry["metrics"])  # accuracy is gated too
        for shift, expected in ((1.5 * tol, 1), (-1.5 * tol, 1), (0.5 * tol, 0)):
            moved = json.loads(BASELINE.read_text())
            moved["entries"][key]["collaboration_rate"] = entry["collaboration_rate"] + shift
            path = tmp_path / "moved.json"
            path.write_text(json.dumps(moved))
            assert main(["check", str(out), "--baseline", str(path)]) == expected, f"{key}: shift {shift}"
            assert ("FAIL" if expected else "PASS") in capsys.readouterr().out
    routed = [e for k, e in stored["entries"].items() if "entropy" in k]
    assert len(routed) == 5 and all(0 < e["llm_call_rate"] < 1 for e in routed)


def test_gate_with_an_output_path_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "gate").write_text("not a folder")
    run = _gate(tmp_path / "gate")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "not a folder" in run.stderr
