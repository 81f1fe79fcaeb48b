"""``fsgen-eval offline-cache``: Hugging Face's own caches filled from a hub-like folder; nothing patched.

Each check that loads runs in a fresh interpreter with ``HF_HUB_OFFLINE=1`` and caches of its own, so the
libraries read the environment as a user's process would, and no fsgen_eval module is imported there unless
the test says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsgen_eval.cli import main
from fsgen_eval.lm_eval.offline import CODE_EVAL_SOURCE, build_offline_cache, cache_code_eval

REPO = Path(__file__).resolve().parents[1]
ADD = "assert add(2, 3) == 5"


def hub_folder(root: Path) -> Path:
    """A two-config dataset ``toy-org/ToyMath`` laid out like a hub repository (card + jsonl files)."""
    repo = root / "toy-org" / "ToyMath"
    for config, rows in {"easy": [{"q": "1+1", "a": 2}, {"q": "2+2", "a": 4}], "hard": [{"q": "9*9", "a": 81}]}.items():
        (repo / config).mkdir(parents=True)
        for split in ("train", "test"):
            (repo / config / f"{split}.jsonl").write_text(
                "".join(json.dumps({**r, "split": split}) + "\n" for r in rows), encoding="utf-8")
    card = ["---", "configs:"]
    for config in ("easy", "hard"):
        card += [f"- config_name: {config}", "  data_files:"]
        card += [f"  - split: {s}\n    path: {config}/{s}.jsonl" for s in ("train", "test")]
    (repo / "README.md").write_text("\n".join([*card, "---", "A toy dataset.", ""]), encoding="utf-8")
    return root


def offline_python(code: str, caches: Path, **extra: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: hub off, the given caches, fsgen_eval importable (not imported)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "HF_DATASETS_CACHE": str(caches / "datasets"), "HF_MODULES_CACHE": str(caches / "modules"),
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1", **extra}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, list]:
    src = hub_folder(tmp_path_factory.mktemp("hub"))
    caches = tmp_path_factory.mktemp("caches")
    entries = build_offline_cache(src, caches / "datasets", caches / "modules")
    return src, caches, entries


def test_every_config_and_code_eval_are_written_once(built):
    src, caches, entries = built
    assert [(e.name, e.built) for e in entries] == [("toy-org/ToyMath:easy", True), ("toy-org/ToyMath:hard", True),
                                                   ("code_eval", True)]
    assert entries[0].path.parent.parent.parent == caches / "datasets" / "toy-org___toy_math"  # datasets' naming
    again = build_offline_cache(src, caches / "datasets", caches / "modules")
    assert [(e.name, e.path, e.built) for e in again] == [(e.name, e.path, False) for e in entries]


def test_the_unchanged_hub_id_loads_offline_from_the_cache(built):
    _, caches, _ = built
    code = ("import datasets, sys; d = datasets.load_dataset('toy-org/ToyMath', 'hard'); "
            "print(sorted(d), d['test'][0]['q'], d['test'][0]['split'], len(d['train']), "
            "any(m.startswith('fsgen_eval') for m in sys.modules))")
    proc = offline_python(code, caches)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["['test',", "'train']", "9*9", "test", "1", "False"]
    assert "offline mode is enabled" in proc.stderr  # datasets' own offline fallback did it


def test_without_the_cache_offline_loading_fails_as_datasets_says(tmp_path):
    proc = offline_python("import datasets; datasets.load_dataset('toy-org/ToyMath', 'hard')", tmp_path)
    assert proc.returncode != 0 and "toy-org/ToyMath" in proc.stderr.strip().splitlines()[-1]


def test_code_eval_offline_is_the_sandboxed_metric(built):
    _, caches, entries = built
    assert (entries[-1].path / "code_eval.py").read_text(encoding="utf-8") == CODE_EVAL_SOURCE.read_text("utf-8")
    code = ("import evaluate; m = evaluate.load('code_eval'); "
            f"s, r = m.compute(predictions=[['def add(a, b):\\n    return a * b', 'def add(a, b):\\n    return a + b']], "
            f"references=[{ADD!r}], k=[1, 2]); print(s['pass@1'], s['pass@2'], r[0][1][1]['sandbox'].split(',')[0])")
    proc = offline_python(code, caches, HF_ALLOW_CODE_EVAL="1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0.5", "1.0", "session"]  # fsgen_eval's sandbox ran them (its layers named)


def test_code_eval_keeps_its_gate(built):
    _, caches, _ = built
    env = {k: v for k, v in os.environ.items() if k != "HF_ALLOW_CODE_EVAL"}
    code = f"import evaluate; evaluate.load('code_eval').compute(predictions=[['x = 1']], references=[{ADD!r}], k=[1])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env={
        **env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "HF_MODULES_CACHE": str(caches / "modules")})
    assert proc.returncode == 1 and "HF_ALLOW_CODE_EVAL=1" in proc.stderr.strip().splitlines()[-1]


def test_a_code_eval_cached_later_does_not_win_offline(tmp_path):
    """evaluate takes the newest cached script offline: one cached after ours (the hub's, from an online run)
    makes the next offline-cache put ours on top again."""
    ours = cache_code_eval(tmp_path)
    assert ours.built and not cache_code_eval(tmp_path).built
    hub = ours.path.parent / ("0" * 64) / "code_eval.py"
    hub.parent.mkdir()
    hub.write_text("# the hub's script\n", encoding="utf-8")
    os.utime(hub, ((ours.path / "code_eval.py").stat().st_mtime + 10,) * 2)  # cached later
    again = cache_code_eval(tmp_path)
    assert again.built and again.path == ours.path
    assert (again.path / "code_eval.py").stat().st_mtime > hub.stat().st_mtime
    assert not cache_code_eval(tmp_path).built


def test_command_reports_and_refuses_a_bad_folder(built, tmp_path, capsys):
    src, caches, _ = built
    argv = ["offline-cache", str(src), "--datasets-cache", str(caches / "datasets"),
            "--modules-cache", str(caches / "modules")]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == f"offline-cache: 0 written, 3 already cached, from {src}"
    assert main(["offline-cache", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["offline-cache", str(tmp_path)]) == 2  # a folder, but no <namespace>/<name>/README.md
    assert "holds no <namespace>/<name>/README.md" in capsys.readouterr().err


def fresh_interpreter(code: str) -> list[str]:
    """The words ``code`` prints in a fresh interpreter that imports this checkout."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()


def test_importing_the_package_installs_no_hook_and_patches_neither_datasets_nor_evaluate():
    code = ("import sys, datasets, evaluate; finders = list(sys.meta_path); ld, el = datasets.load_dataset, "
            "evaluate.load; import fsgen_eval, fsgen_eval.lm_eval, fsgen_eval.lm_eval.model; "
            "print(sys.meta_path == finders, datasets.load_dataset is ld, evaluate.load is el, "
            "datasets.load_dataset.__module__, evaluate.load.__module__)")
    assert fresh_interpreter(code) == ["True", "True", "True", "datasets.load", "evaluate.loading"]
    # imported first, then datasets and evaluate (which add finders of their own libraries): none is ours, and
    # their functions are theirs, unwrapped
    code = ("import sys; n = list(sys.meta_path); import fsgen_eval.lm_eval; same = sys.meta_path == n; "
            "import datasets, evaluate; print(same, [type(f).__module__ for f in sys.meta_path if f not in n "
            "and type(f).__module__.startswith('fsgen_eval')], datasets.load_dataset.__module__, "
            "evaluate.load.__module__, hasattr(datasets.load_dataset, '__wrapped__'), hasattr(evaluate.load, '__wrapped__'))")
    assert fresh_interpreter(code) == ["True", "[]", "datasets.load", "evaluate.loading", "False", "False"]
