"""Which traces belong to which results file: the names the results file lists, nothing else."""

from __future__ import annotations

import json

import pytest
from pathlib import Path

from analysis_helpers import random_traces, write_run
from fsgen_eval.analysis.files import find_runs, incomplete_traces, read_traces
from fsgen_eval.cli import main


def _retime(folder: Path, old_ts: str, results_ts: str, traces_ts: str) -> None:
    """Stamp results and traces as the adapter does: traces at the start of a run, results at its end."""
    res = folder / f"results_{old_ts}.json"
    obj = json.loads(res.read_text())
    obj["config"]["fsgen"]["traces"] = [f"traces_{traces_ts}.jsonl"]
    (folder / f"results_{results_ts}.json").write_text(json.dumps(obj))
    res.unlink()
    (folder / f"traces_{old_ts}.jsonl").rename(folder / f"traces_{traces_ts}.jsonl")


def _killed_run(folder: Path, ts: str, n_docs: int) -> Path:
    """A run killed before lm-eval wrote its results: a trace file and nothing else."""
    other = write_run(folder.parent.parent / "scratch", "s", "l", ts=ts,
                      traces={"gsm8k": random_traces(n_docs, 20, seed=9)})
    target = folder / f"traces_{ts}.jsonl"
    (other / f"traces_{ts}.jsonl").rename(target)
    return target


def test_a_killed_runs_traces_are_not_merged_into_the_rerun(tmp_path, capsys, caplog):
    folder = write_run(tmp_path / "out", "s", "l", traces={"gsm8k": random_traces(8, 20, seed=1)}, ts="B")
    _retime(folder, "B", results_ts="2026-01-01T10-00-09", traces_ts="2026-01-01T10-00-01")
    killed = _killed_run(folder, "2026-01-01T09-00-00", n_docs=6)

    (run,) = find_runs([tmp_path / "out"])
    assert run.trace_files == [folder / "traces_2026-01-01T10-00-01.jsonl"]
    assert incomplete_traces([tmp_path / "out"], [run]) == [killed]
    assert f"{killed}: incomplete run" in caplog.text  # find_runs says so
    caplog.clear()

    records = read_traces([tmp_path / "out"])
    assert len(records) == 8 and sorted(r["doc_id"] for r in records) == list(range(8))
    assert f"{killed}: incomplete run" in caplog.text
    caplog.clear()

    assert main(["analyze", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_tokens"] == 8 * 20 and "incomplete run" in caplog.text


def test_two_results_files_in_one_folder_each_get_their_own_traces(tmp_path, capsys):
    folder = write_run(tmp_path, "s", "l", traces={"gsm8k": random_traces(3, 10, seed=1)}, ts="A")
    write_run(tmp_path, "s", "l", method="speculative", traces={"gsm8k": random_traces(5, 10, seed=2)}, ts="B")
    _retime(folder, "A", results_ts="2026-01-01T10-00-09", traces_ts="2026-01-01T10-00-01")
    _retime(folder, "B", results_ts="2026-01-01T11-00-09", traces_ts="2026-01-01T11-00-01")
    runs = {r.fsgen.method: r for r in find_runs([tmp_path])}
    assert runs["oracle"].trace_files == [folder / "traces_2026-01-01T10-00-01.jsonl"]
    assert runs["speculative"].trace_files == [folder / "traces_2026-01-01T11-00-01.jsonl"]
    assert len(read_traces([runs["speculative"].path])) == 5  # a results file means its own traces
    # a folder of two runs is not one population of tokens: analyze reports each run on its own
    assert main(["analyze", str(folder), "--json"]) == 0
    got = {r["run_label"]: r["n_tokens"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert got == {f"s -> l | oracle/always | {runs['oracle'].path}": 3 * 10,
                   f"s -> l | speculative/always | {runs['speculative'].path}": 5 * 10}
    assert main(["analyze", str(runs["oracle"].path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_tokens"] == 3 * 10


def test_a_folder_of_only_a_killed_run_is_reported_incomplete(tmp_path, capsys, caplog):
    folder = tmp_path / "out"
    folder.mkdir()
    killed = _killed_run(folder, "2026-01-01T09-00-00", n_docs=4)
    assert main(["analyze", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{killed}: incomplete run" in caplog.text and "no finished run's traces" in err
    assert main(["analyze", str(killed), "--json"]) == 0  # named explicitly, it is read


def test_a_named_trace_that_is_missing_is_said(tmp_path, caplog):
    folder = write_run(tmp_path, "s", "l", traces={"gsm8k": random_traces(2, 10, seed=1)}, ts="A")
    (folder / "traces_A.jsonl").unlink()
    (run,) = find_runs([tmp_path])
    assert run.trace_files == [] and run.missing_traces == [folder / "traces_A.jsonl"]
    assert "traces_A.jsonl is missing" in caplog.text


def test_a_sweeps_system2_run_through_lm_evals_own_model_is_left_out_and_said(tmp_path, caplog):
    """A sweep with --system2-model vllm (or hf) keeps lm-eval's own results below _system2/ (no config['fsgen']):
    the folder's runs are its cells', that file is named in the log; the same file anywhere else is refused."""
    cell = write_run(tmp_path / "sweep" / "s__l" / "oracle-always" / "gsm8k", "s", "l")
    s2 = tmp_path / "sweep" / "_system2" / "l" / "gsm8k" / "l"
    s2.mkdir(parents=True)
    lm_eval_own = '{"results": {"gsm8k": {}}, "config": {"model": "vllm"}}'
    (s2 / "results_1.json").write_text(lm_eval_own)
    with caplog.at_level("INFO", logger="fsgen_eval.analysis"):
        (run,) = find_runs([tmp_path / "sweep"])
    assert run.path.parent == cell and str(s2 / "results_1.json") in caplog.text
    other = tmp_path / "elsewhere" / "l"
    other.mkdir(parents=True)
    (other / "results_1.json").write_text(lm_eval_own)
    with pytest.raises(ValueError, match="lacks config"):
        find_runs([tmp_path / "elsewhere"])
