"""Bad input that gave tracebacks or silent results (issue 24, item 3): one line each, before any work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from analysis_helpers import READER_ARGS, one_line_error, random_traces, write_run
from fsgen_eval.core import guards
from fsgen_eval.core import learned as L

DEEP = 100_000  # json's C parser recursed once per level: RecursionError



def _run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "runs", "s", "l", traces={"gsm8k": random_traces(3, 8, seed=1)})


@pytest.mark.parametrize("depth", [DEEP, 200])
@pytest.mark.parametrize("command", sorted(READER_ARGS))
def test_deeply_nested_results_are_one_line(tmp_path, capsys, command, depth):
    folder = _run(tmp_path)
    (res,) = folder.glob("results_*.json")
    obj = json.loads(res.read_text())
    res.write_text(json.dumps(obj)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")
    one_line_error(capsys, [command, str(tmp_path / "runs"), *READER_ARGS[command](tmp_path)], res.name, "nested")


def _trace_line(tmp_path: Path, edit) -> Path:
    folder = _run(tmp_path)
    (tf,) = folder.glob("traces_*.jsonl")
    lines = [json.loads(x) for x in tf.read_text().splitlines()]
    edit(lines[1])
    tf.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return tf


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r.update(token_id=[10**20] + r["token_id"][1:]), "is not a token id"),  # OverflowError before
    (lambda r: r.update(doc_id={"a": 1}), "doc_id {'a': 1} is not an integer >= 0"),
    (lambda r: r.update(drafted_tokens=-5), "'drafted_tokens' is -5, not an integer >= 0"),
    (lambda r: r.update(task=["gsm8k"]), "task is a list"),
])
def test_a_bad_trace_record_is_one_line(tmp_path, capsys, edit, problem):
    tf = _trace_line(tmp_path, edit)
    one_line_error(capsys, ["analyze", str(tf)], f"{tf}:2", problem)


def test_a_deeply_nested_trace_line_is_one_line(tmp_path, capsys):
    folder = _run(tmp_path)
    (tf,) = folder.glob("traces_*.jsonl")
    tf.write_text(tf.read_text() + "[" * DEEP + "]" * DEEP + "\n")
    one_line_error(capsys, ["analyze", str(tf)], f"{tf}:4", "nested deeper")


def test_negative_summary_counters_are_refused(tmp_path, capsys):
    write_run(tmp_path / "runs", "s", "l", summary_override={"gsm8k": {"generated_tokens": -3}})
    one_line_error(capsys, ["fit", str(tmp_path / "runs")], "per_task['gsm8k']", "generated_tokens an integer >= 0")


def test_report_on_a_folder_of_only_a_killed_run_names_it(tmp_path, capsys):
    folder = _run(tmp_path)
    (res,) = folder.glob("results_*.json")
    res.unlink()  # killed before lm-eval wrote its results
    (tf,) = folder.glob("traces_*.jsonl")
    one_line_error(capsys, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "rep")], "incomplete run", str(tf))


@pytest.mark.parametrize("where, problem", [
    ("/proc/fsgen-report", "under /proc"),
    ("FILE", "is a file, not a folder"),
    ("FILE/sub", "which is a file"),
])
def test_report_output_that_cannot_be_written_is_refused_first(tmp_path, capsys, monkeypatch, where, problem):
    import fsgen_eval.analysis.files as files

    _run(tmp_path)
    (tmp_path / "FILE").write_text("x")
    calls = []
    monkeypatch.setattr(files, "find_runs", lambda *a: calls.append(a))  # no work may start
    one_line_error(capsys, ["report", str(tmp_path / "runs"), "-o", where.replace("FILE", str(tmp_path / "FILE"))],
              problem)
    assert calls == []


def test_a_read_only_folder_is_refused_unless_the_user_can_write_it(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes through permissions: the guard must not refuse a write that will work
        assert guards.writable_folder(ro / "out", "-o") == ro / "out"
        (ro / "probe").write_text("root writes here")
    else:
        with pytest.raises(ValueError, match="is not writable"):
            guards.writable_folder(ro / "out", "-o")


def test_a_read_only_mount_is_refused():
    ro = next((Path(line.split()[1]) for line in Path("/proc/self/mounts").read_text().splitlines()
               if " ro," in f" {line.split()[3]}," and Path(line.split()[1]).is_dir()
               and not line.split()[1].startswith(("/proc", "/sys", "/dev"))), None)
    if ro is None:
        pytest.skip("no read-only mount on this machine")
    with pytest.raises(ValueError, match="is not writable"):
        guards.writable_folder(ro / "fsgen-out", "-o")


def test_a_full_disk_mid_write_leaves_the_tmp_and_says_so(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    real = Path.write_text

    def full(self, text, *a, **k):
        real(self, text[:10], *a, **k)  # part of it reached the disk, then it was full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(ValueError) as err:
        guards.atomic_write(target, "x" * 100)
    msg = str(err.value)
    assert "No space left on device" in msg and f"{target}.tmp holds what was written" in msg
    assert "\n" not in msg and not target.exists() and (tmp_path / "results.json.tmp").exists()


def test_echoed_values_are_cut():
    assert guards.cut("k" * 120_000) == "k" * 80 + "... (120000 characters)"
    assert guards.cut("short") == "short"


def test_lm_eval_output_checked_before_the_models(tmp_path):
    from fsgen_eval.lm_eval.run import fsgen_argv
    from fsgen_eval.lm_eval.args import ModelArgsError
    from fsgen_eval.lm_eval.model import check_output

    (tmp_path / "f").write_text("x")
    for out in ("/proc/x", str(tmp_path / "f")):
        with pytest.raises(ModelArgsError):
            check_output(out)  # trace=
        with pytest.raises(ValueError, match="--output_path"):  # fsgen-eval run, before lm-eval starts
            fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "--output_path", out])
    check_output(str(tmp_path / "new" / "t.jsonl"))  # creatable: fine
    fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "--output_path", str(tmp_path / "new")])


# -------------------------------------------------------------------------------------------- router files
def _router(n_sv: int) -> dict:
    r = L.LearnedRouter("scalar", 0, "svm", mean=np.zeros(4), scale=np.ones(4), intercept=0.0, threshold=0.0,
                        support_vectors=np.zeros((2, 4)), dual_coef=np.ones(2), gamma=1.0)
    obj = L.to_json(r)
    obj["svm"]["support_vectors"] = [[0, 0, 0, 0]] * n_sv
    obj["svm"]["dual_coef"] = [1] * n_sv
    return obj


def test_a_router_with_too_many_support_vectors_is_refused_before_its_arrays(tmp_path):
    path = tmp_path / "router.json"
    path.write_text(json.dumps(_router(L.MAX_SUPPORT_VECTORS + 1)))
    with pytest.raises(ValueError, match=f"{L.MAX_SUPPORT_VECTORS + 1} support vectors, more than"):
        L.load(path)
    path.write_text(json.dumps(_router(3)))
    assert L.load(path).support_vectors.shape == (3, 4)


def test_a_huge_router_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "router.json"
    with open(path, "wb") as fh:
        fh.truncate(L.MAX_FILE_BYTES + 1)  # sparse: no disk used, and never read
    with pytest.raises(ValueError, match="more than a router file may hold"):
        L.load(path)


def test_router_train_refuses_more_support_vectors_than_a_router_may_hold(tmp_path, capsys):
    (tf,) = _run(tmp_path).glob("traces_*.jsonl")
    one_line_error(capsys, ["router", "train", str(tf), "--model", "svm", "--target-call-rate", "0.3", "--max-samples",
                       str(L.MAX_SUPPORT_VECTORS + 1), "-o", str(tmp_path / "r.json")], "--max-samples")


def test_a_report_says_when_programs_ran_in_the_sandbox_fallback(tmp_path):
    from fsgen_eval.analysis.files import find_runs
    from fsgen_eval.analysis.report import build_report

    folder = _run(tmp_path)
    (res,) = folder.glob("results_*.json")
    obj = json.loads(res.read_text())
    obj["config"]["fsgen"]["code_eval_sandbox"] = ["session", "rlimits", "fallback_no_namespaces"]
    res.write_text(json.dumps(obj))
    rep = build_report(find_runs([tmp_path / "runs"]), n_boot=20)
    assert not any("fallback WITHOUT" in n for n in rep.notes), rep.notes  # no task of the run runs programs
    obj["configs"] = {task: {"task": task, "unsafe_code": True} for task in obj["results"]}  # as lm-eval writes them
    res.write_text(json.dumps(obj))
    rep = build_report(find_runs([tmp_path / "runs"]), n_boot=20)
    assert any("fallback WITHOUT namespaces" in n for n in rep.notes), rep.notes
