"""A regular (non-editable) install carries the project's own files: from another directory, with no checkout
on the path, ``fsgen-eval demo`` runs the arith pair and the family files give ``fit`` its parameter counts.

The wheel is built from this checkout with the environment's setuptools and installed with ``--no-deps``
into a fresh folder that comes first on ``PYTHONPATH`` (the dependencies are this environment's: no network).
"""

from __future__ import annotations

import os
import site as site_module
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(site folder holding the installed package, environment that imports it first)."""
    root = tmp_path_factory.mktemp("pkg")
    code = f"from setuptools import build_meta as b; print(b.build_wheel({str(root / 'dist')!r}))"
    name = _run([sys.executable, "-c", code], REPO, dict(os.environ), 600).stdout.strip().splitlines()[-1]
    wheel = root / "dist" / name
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert "fsgen_eval/_data/model_configs/arith.yaml" in names
    assert "fsgen_eval/_data/tasks/fsgen_arith/_fsgen_arith.yaml" in names
    assert any(n.startswith("fsgen_eval/_data/models/arith/arith-l/") for n in names)
    assert not any(n.startswith("fsgen_eval/_data/models/micro/") for n in names)  # the demo does not need it
    site = root / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
         root, dict(os.environ), 600)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return site, env


def test_the_installed_package_finds_its_own_files(installed, tmp_path):
    site, env = installed
    code = ("import fsgen_eval, sys; from fsgen_eval.core.shipped import project_dir; "
            "print(fsgen_eval.__file__); print(project_dir('model_configs')); print(project_dir('tasks')); "
            "print('fsgen_eval.lm_eval' in sys.modules, 'lm_eval' in sys.modules)")
    # -S: no site-packages .pth runs first (an environment that once held an older fsgen-eval may keep one
    # that imports it); the dependencies come from this interpreter's site-packages on the path instead
    bare = {**env, "PYTHONPATH": os.pathsep.join([str(site), *site_module.getsitepackages()])}
    out = _run([sys.executable, "-S", "-c", code], tmp_path, bare).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in out[:3]), out  # not the checkout
    assert out[3:] == ["False", "False"]  # importing the package touches nothing of lm-eval


def test_demo_and_fit_run_from_another_directory(installed, tmp_path):
    site, env = installed
    cli = [sys.executable, "-m", "fsgen_eval.cli"]
    demo = _run([*cli, "demo", "--limit", "2", "--max-gen-toks", "8", "--target-call-rate", "0.3"], tmp_path, env)
    assert "demo: report written to" in demo.stdout, demo.stdout[-2000:]
    report = (tmp_path / "runs" / "demo" / "report.md").read_text()
    assert "arith-s" in report and "arith-l" in report
    # the installed family files give the fit its parameter counts (no --params): the demo's runs are one pair,
    # too few for a law, so the fit stops after computing its points, and says so (not a missing count)
    fit = subprocess.run([*cli, "fit", str(tmp_path / "runs" / "demo" / "runs"), "--router", "any"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert "parameter count" not in fit.stderr and "Traceback" not in fit.stderr, fit.stderr[-2000:]
    assert fit.returncode in (0, 2) and (fit.stdout.strip() or fit.stderr.strip())


def test_family_files_resolve_to_the_installed_models(installed, tmp_path):
    site, env = installed
    code = ("from fsgen_eval.analysis.params import ParamTable; from pathlib import Path; t = ParamTable.load(None); "
            "m = {p.name: p for p in t.models()}; "
            "print(t.get('arith-s'), t.get('arith-l'), Path(m['arith-l'].hub_id).is_dir(), m['arith-l'].hub_id)")
    small, large, is_dir, path = _run([sys.executable, "-c", code], tmp_path, env).stdout.split()
    assert (int(small), int(large)) == (80112, 492384)  # model_configs/arith.yaml's total_params
    assert is_dir == "True" and Path(path).is_relative_to(site)  # the path resolves into the package data
