"""Records carry their run's id; the analysis groups by it and never pools two runs of one trace file."""

from __future__ import annotations

import json
import logging

from analysis_helpers import random_traces, write_run
from fsgen_eval.analysis.files import by_run_id, load_run, read_traces, run_records
from fsgen_eval.analysis.gate import run_entries
from fsgen_eval.cli import main


def _appended_run(tmp_path):
    """One results file (run ``aaa``) whose trace file was appended to by a second run ``bbb``."""
    folder = write_run(tmp_path, "s", "l", traces={"gsm8k": random_traces(3, 20, seed=1)})
    results = next(folder.glob("results_*.json"))
    obj = json.loads(results.read_text())
    obj["config"]["fsgen"]["run_id"] = "aaa"
    results.write_text(json.dumps(obj))
    trace = next(folder.glob("traces_*.jsonl"))
    own = [dict(json.loads(line), run_id="aaa") for line in trace.read_text().splitlines()]
    other = [dict(r, run_id="bbb", doc_id=r["doc_id"] + 100, handoff=[1] * len(r["handoff"])) for r in own[:2]]
    trace.write_text("".join(json.dumps(r) + "\n" for r in own + other))
    return results, trace


def test_a_results_file_reads_only_its_runs_records(tmp_path, caplog):
    results, trace = _appended_run(tmp_path)
    with caplog.at_level(logging.WARNING, "fsgen_eval.analysis"):
        records = run_records(load_run(results))
    assert [r["run_id"] for r in records] == ["aaa"] * 3
    assert "2 of the 5 records" in caplog.text and "other runs" in caplog.text
    assert len(read_traces([results])) == len(read_traces([results.parent])) == 3
    assert len(read_traces([trace])) == 5  # a bare trace file: every run in it
    # the gate's intervals come from the run's own 3 records: run bbb's all-handoff rows would move them
    run = load_run(results)
    (entry,) = run_entries(run).values()
    own_rate = sum(sum(r["handoff"]) for r in records) / sum(len(r["handoff"]) for r in records)
    lo, hi = entry["ci"]["collaboration_rate"]
    assert lo <= own_rate <= hi and hi < 1.0


def test_analyze_reports_each_run_of_a_shared_file_on_its_own(tmp_path, capsys):
    _, trace = _appended_run(tmp_path)
    assert list(by_run_id(read_traces([trace]))) == ["aaa", "bbb"]
    assert main(["analyze", str(trace), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["run_id"], r["n_records"], r["n_tokens"]) for r in runs] == [("aaa", 3, 60), ("bbb", 2, 40)]
    assert runs[1]["n_handoffs"] == 40  # bbb's tokens, not pooled with aaa's
    assert main(["analyze", str(trace), "--run-id", "bbb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_tokens"] == 40
    assert main(["analyze", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "== run aaa (run aaa; gsm8k; 3 records)" in out and "== run bbb (run bbb; gsm8k; 2 records)" in out
    assert main(["analyze", str(trace), "--run-id", "zzz"]) == 2
    assert "--run-id zzz: no such run" in capsys.readouterr().err


def test_a_folder_with_a_never_routed_run_reports_it_skipped(tmp_path, capsys):
    from analysis_helpers import make_trace

    write_run(tmp_path / "a", "s", "l", traces={"gsm8k": random_traces(2, 10, seed=1)})
    never = [make_trace([0.1] * 5, [False] * 5, llm_called=[False] * 5) for _ in range(2)]
    write_run(tmp_path / "b", "l", "l", router="never", traces={"gsm8k": never})
    assert main(["analyze", str(tmp_path), "--json"]) == 0
    runs = {r["run_label"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs["s -> l | oracle/always | " + str(next((tmp_path / "a").rglob("results_*.json")))]["n_tokens"] == 20
    (skipped,) = [r for r in runs.values() if "skipped" in r]
    assert "no handoff is defined" in skipped["skipped"]
    assert main(["analyze", str(tmp_path / "b")]) == 2  # alone, it is an error as before
    write_run(tmp_path / "c", "m", "m", router="never", traces={"gsm8k": never})
    assert main(["analyze", str(tmp_path / "b"), str(tmp_path / "c")]) == 2  # every run skipped: an error
    assert "no run could be analysed" in capsys.readouterr().err
