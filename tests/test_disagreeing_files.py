"""Files that disagree with each other (issue 24, item 4): each was read into a silently wrong result before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis_helpers import READER_ARGS, one_line_error, make_trace, random_traces, write_run
from fsgen_eval.analysis import paper
from fsgen_eval.analysis.files import read_trace_file
from fsgen_eval.cli import main
from fsgen_eval.lm_eval.traces import TraceWriter, make_record




@pytest.mark.parametrize("command", sorted(READER_ARGS))
def test_two_runs_of_one_configuration_in_a_folder_are_named(tmp_path, capsys, command):
    """A rerun into the same --output_path: check compared one of them, fit counted both."""
    runs = tmp_path / "runs"
    write_run(runs, "s", "l", traces={"gsm8k": random_traces(4, 10, seed=1)}, ts="2026-01-01T00-00-00.000001")
    write_run(runs, "s", "l", traces={"gsm8k": random_traces(4, 10, seed=2, shift=0.4)}, ts="2026-01-02T00-00-00.000001")
    one_line_error(capsys, [command, str(runs), *READER_ARGS[command](tmp_path)], "results_2026-01-01", "results_2026-01-02",
              "same configuration")


def test_runs_that_differ_in_their_configuration_stay_apart(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "s", "l", traces={"gsm8k": random_traces(4, 10, seed=1)}, ts="A")
    write_run(runs, "s", "l", router="max_prob", threshold=0.5, traces={"gsm8k": random_traces(4, 10, seed=2)}, ts="B")
    assert main(["check", str(runs), "--baseline", str(tmp_path / "b.json"), "--update-baseline"]) == 0


@pytest.mark.parametrize("command", ["check", "report", "analyze"])
def test_a_summary_the_traces_contradict_is_one_line(tmp_path, capsys, command):
    """A row read '0.9000 [0.0000, 0.0000]', and traces with no System 2 call passed a check claiming calls."""
    never = [make_trace([0.5] * 8, [False] * 8, [False] * 8) for _ in range(5)]
    runs = tmp_path / "runs"
    write_run(runs, "s", "l", traces={"gsm8k": never},
              summary_override={"gsm8k": {"collaboration_rate": 0.9, "llm_call_rate": 1.0}})
    one_line_error(capsys, [command, str(runs), *READER_ARGS[command](tmp_path)], "collaboration_rate 0.9",
              "traces give 0.0", "disagree")


def test_a_duplicated_trace_record_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    folder = write_run(runs, "s", "l", traces={"gsm8k": random_traces(3, 10, seed=1)})
    trace = next(folder.glob("traces_*.jsonl"))
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join(lines + lines[1:2]) + "\n")  # record 2 again: its tokens would count twice
    one_line_error(capsys, ["analyze", str(trace)], "record 4 duplicates record 2")
    one_line_error(capsys, ["check", str(runs), "--baseline", str(tmp_path / "b.json"), "--update-baseline"],
              "record 4 duplicates record 2")


def _topk_batch(docs: list[int], rng: np.random.Generator) -> list[dict]:
    out = []
    for d in docs:
        tr = make_trace(list(rng.random(4)), [True, False, True, False])
        probs = np.sort(rng.random((4, 3)).astype(np.float32), axis=1)[:, ::-1]
        ids = np.tile(np.arange(3, dtype=np.int32), (4, 1))
        tr.update(s1_topk_ids=ids, s1_topk_probs=probs, s2_topk_ids=ids, s2_topk_probs=probs)
        out.append(make_record({"run_id": "r1", "task": "gsm8k", "doc_id": d, "prompt_hash": str(d),
                                "request_type": "generate_until", "rank": 0}, tr))
    return out


def test_a_second_run_appending_to_a_trace_file_at_once_is_refused(tmp_path):
    """Two runs with trace_append and trace_topk: 1024 of 1536 top-K rows pointed at the wrong line."""
    path = tmp_path / "t.jsonl"
    first, second = TraceWriter(path, append=True), TraceWriter(path, append=True)
    rng = np.random.default_rng(0)
    first.write_batch(_topk_batch([0, 1], rng))
    with pytest.raises(FileExistsError, match="being written by another run"):
        second.write_batch(_topk_batch([2, 3], rng))
    first.write_batch(_topk_batch([4], rng))
    first.close()
    assert len(path.read_text().splitlines()) == 3  # nothing of the refused run was written


def test_a_side_file_whose_rows_point_at_other_records_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    writer.write_batch(_topk_batch([0, 1, 2], np.random.default_rng(0)))
    writer.close()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[1], lines[0], lines[2]]) + "\n")  # as interleaved appends leave them
    with pytest.raises(ValueError, match="does not match the record it points at"):
        paper.read_topk(path, read_trace_file(path))


def test_a_full_disk_while_tracing_is_one_line_and_keeps_the_finished_batches(tmp_path):
    from fsgen_eval.lm_eval.args import OneLineError

    class FullDisk:
        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def write(self, text):
            self.writes += 1
            if self.writes > 1:
                self.fh.write(text[:7])  # part of the batch reached the disk
                raise OSError(28, "No space left on device")
            self.fh.write(text)

        def flush(self):
            self.fh.flush()

        def close(self):
            self.fh.close()

    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    rng = np.random.default_rng(0)
    writer._open()
    writer._fh = FullDisk(writer._fh)
    writer.write_batch([{k: v for k, v in r.items() if not k.endswith(("_ids", "_probs"))}
                        for r in _topk_batch([0, 1], rng)])
    with pytest.raises(OneLineError, match="No space left on device.*every batch finished before"):
        writer.write_batch([{k: v for k, v in r.items() if not k.endswith(("_ids", "_probs"))}
                            for r in _topk_batch([2], rng)])
    writer.close()
    assert [r["doc_id"] for r in read_trace_file(path)] == [0, 1]  # the torn tail is skipped, with a warning


def test_check_refuses_two_runs_behind_one_gate_key(tmp_path, capsys):
    """Runs that differ only in dtype are two fit groups, but one gate key: one silently stood for the other."""
    runs = tmp_path / "runs"
    for ts, dtype in (("2026-01-01T00-00-00.000001", "float32"), ("2026-01-02T00-00-00.000001", "bfloat16")):
        folder = write_run(runs, "s", "l", traces={"gsm8k": random_traces(4, 10, seed=1)}, ts=ts)
        res = folder / f"results_{ts}.json"
        obj = json.loads(res.read_text())
        obj["config"]["model_args"] = {"dtype": dtype}
        res.write_text(json.dumps(obj))
    one_line_error(capsys, ["check", str(runs), "--baseline", str(tmp_path / "b.json"), "--update-baseline"],
              "gate entry", "results_2026-01-01", "results_2026-01-02")
