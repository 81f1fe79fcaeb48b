"""The sandboxed pass@k behind fsgen_mbpp and, offline, lm-eval's MBPP (tests/test_offline_cache.py: how)."""

from __future__ import annotations

import pytest

from fsgen_eval.lm_eval.code_eval import CodeEval, pass_at_k

ADD_TEST = "assert add(2, 3) == 5"


@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")


def test_pass_at_k_by_hand():
    assert pass_at_k(n=1, c=1, k=1) == 1.0
    assert pass_at_k(n=4, c=1, k=1) == 0.25
    assert pass_at_k(n=4, c=1, k=2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(n=3, c=0, k=2) == 0.0


def test_programs_are_run_with_their_tests(allowed):
    preds = [["def add(a, b):\n    return a * b", "def add(a, b):\n    return a + b"]]
    scores, results = CodeEval().compute(predictions=preds, references=[ADD_TEST], k=[1, 2])
    assert scores == {"pass@1": 0.5, "pass@2": 1.0}
    assert [r["passed"] for _, r in results[0]] == [False, True]
    assert "AssertionError" in results[0][0][1]["result"]


def test_runaway_programs_are_stopped(allowed):
    preds = [["def add(a, b):\n    while True:\n        pass"], ["def add(a, b):\n    x = bytearray(8 * 2**30)\n    return a + b"]]
    scores, results = CodeEval().compute(predictions=preds, references=[ADD_TEST + "\n"] * 2, k=[1], timeout=1.0)
    assert results[0][0][1]["result"] == "timed out"
    assert "MemoryError" in results[1][0][1]["result"]
    assert scores == {"pass@1": 0.0}


def test_programs_run_in_a_scratch_folder(allowed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prog = "import os\nopen('left_behind.txt', 'w').write('x')\ndef add(a, b):\n    return a + b"
    scores, _ = CodeEval().compute(predictions=[[prog]], references=[ADD_TEST], k=[1])
    assert scores["pass@1"] == 1.0 and not (tmp_path / "left_behind.txt").exists()


def test_nothing_runs_without_the_gate(monkeypatch):
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(ValueError, match="HF_ALLOW_CODE_EVAL=1"):
        CodeEval().compute(predictions=[["def add(a, b): return a + b"]], references=[ADD_TEST], k=[1])

