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
    (key,) = stored["entries"]
    rate, tol = stored["entries"][key]["collaboration_rate"], stored["tolerances"]["collaboration_rate"]
    assert 0.05 < rate < 0.95  # an informative pair: System 2 overrules System 1 at some tokens, not all

    for shift, expected in ((1.5 * tol, 1), (-1.5 * tol, 1), (0.5 * tol, 0)):
        moved = json.loads(BASELINE.read_text())
        moved["entries"][key]["collaboration_rate"] = rate + shift
        path = tmp_path / "moved.json"
        path.write_text(json.dumps(moved))
        assert main(["check", str(out), "--baseline", str(path)]) == expected, f"shift {shift}"
        assert ("FAIL" if expected else "PASS") in capsys.readouterr().out


def test_gate_without_datasets_is_one_line(tmp_path):
    run = _gate(tmp_path / "gate", FSGEN_DATASETS_DIR=str(tmp_path / "nowhere"))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "no offline datasets" in run.stderr and not (tmp_path / "gate").exists()
