"""Command lines: ``fsgen-eval run`` = ``lm_eval run``; one-line errors; registration by import, nothing installed
into site-packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import skip_or_fail

from _lm_eval_helpers import DATASETS

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    if not DATASETS.is_dir():
        skip_or_fail(f"offline datasets folder {DATASETS} is absent")
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_fsgen_eval_run_takes_lm_evals_arguments(llama_pair, tmp_path):
    large, small = llama_pair
    cmd = [sys.executable, "-m", "fsgen_eval.cli", "run", "--model", "fsgen",
           "--model_args", f"small={small},large={large},device=cpu,batch_size=2",  # lm-eval adds device=cuda:0
           "--tasks", "gsm8k", "--limit", "2", "--num_fewshot", "0", "--gen_kwargs", "max_gen_toks=6",
           "--output_path", str(tmp_path), "--log_samples"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    table, summary = out.find("|gsm8k"), out.find("fsgen: ")
    assert 0 <= table < summary, out  # our summary comes after lm-eval's table
    assert "| all |" in out[summary:] and "| gsm8k |" in out[summary:]
    folder = tmp_path / "llama-small__llama-large"
    (results,) = folder.glob("results_*.json")
    assert json.loads(results.read_text())["config"]["fsgen"]["per_task"]["gsm8k"]["generated_tokens"] > 0
    (traces,) = folder.glob("traces_*.jsonl")
    assert len(traces.read_text().splitlines()) == 2


def test_lm_eval_reports_bad_model_args_in_one_line(llama_pair):
    code = ("import sys, fsgen_eval.lm_eval; from lm_eval.__main__ import cli_evaluate; "
            f"sys.argv = ['lm_eval', '--model', 'fsgen', '--model_args', 'small={llama_pair[1]}', '--tasks', 'gsm8k']; "
            "cli_evaluate()")
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "lm_eval --model fsgen: error: --model fsgen needs large=PATH (System 2's large model) in --model_args")


def _wheel(tmp_path: Path, editable: bool) -> Path:
    """Build the project's (editable) wheel with the environment's setuptools (no network)."""
    hook = "build_editable" if editable else "build_wheel"
    code = f"from setuptools import build_meta as b; print(b.{hook}({str(tmp_path)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / proc.stdout.strip().splitlines()[-1]


def test_the_wheel_installs_nothing_outside_the_package(tmp_path):
    with zipfile.ZipFile(_wheel(tmp_path / "dist", editable=False)) as whl:
        tops = {n.split("/")[0] for n in whl.namelist()}
        assert "fsgen_eval/lm_eval/model.py" in whl.namelist()
        # no .pth (it ran fsgen_eval's code in every interpreter of the environment) and no lm_eval.models
        # entry point (no lm-eval release reads one)
        assert all(t == "fsgen_eval" or t.endswith(".dist-info") for t in tops), tops
        entry_points = next(n for n in whl.namelist() if n.endswith("entry_points.txt"))
        assert "lm_eval" not in whl.read(entry_points).decode()


@pytest.mark.parametrize("order", ["fsgen_eval first", "lm_eval first"])
def test_import_fsgen_eval_lm_eval_registers_in_either_order(order):
    imports = ["import fsgen_eval.lm_eval", "import lm_eval.api.registry"]
    if order == "lm_eval first":
        imports.reverse()
    code = "; ".join(imports) + ("; from lm_eval.api.registry import get_model; "
                                 "print(get_model('fsgen').__name__, get_model('hf').__name__)")
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["FSGenLM", "HFLM"]


def test_the_hook_leaves_namesake_modules_alone(tmp_path):
    (tmp_path / "evaluate.py").write_text("X = 1\n")  # a user's own evaluate.py / datasets.py
    (tmp_path / "datasets.py").write_text("Y = 2\n")
    code = "import fsgen_eval.lm_eval, evaluate, datasets; print(evaluate.X + datasets.Y)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "3" and not proc.stderr, proc.stderr
