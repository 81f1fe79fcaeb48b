"""Bad input: each missing, empty or malformed file gives one line naming the file and the problem (exit 2)."""

from __future__ import annotations

import json

import pytest

from analysis_helpers import make_trace, write_run
from fsgen_eval.cli import main
from fsgen_eval.core.schema import trace_to_json


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


def _results_file(tmp_path, text: str):
    d = tmp_path / "run" / "m"
    d.mkdir(parents=True)
    (d / "results_1.json").write_text(text)
    return d / "results_1.json"


@pytest.mark.parametrize("text, problem", [
    ("", "file is empty"),
    ("{not json", "not valid JSON"),
    ('{"config": {}}', "no 'results' object"),
    ('{"results": {}, "config": {"model": "hf"}}', "lacks config['fsgen']"),
    ('{"results": {}, "config": {"fsgen": {"small": "s", "large": "l", "method": "oracle"}}}', "lacks 'router'"),
])
@pytest.mark.parametrize("command", ["report", "check", "fit"])
def test_bad_results_file(tmp_path, capsys, text, problem, command):
    path = _results_file(tmp_path, text)
    extra = {"report": ["-o", str(tmp_path / "o")], "check": ["--baseline", str(tmp_path / "b.json")], "fit": []}
    _one_line_error(capsys, [command, str(tmp_path / "run"), *extra[command]], str(path), problem)


def test_missing_results_folder(tmp_path, capsys):
    _one_line_error(capsys, ["report", str(tmp_path / "nope"), "-o", str(tmp_path / "o")], "nope", "no such file")


def test_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["check", str(tmp_path / "empty"), "--baseline", "b.json"], "empty",
                    "no results_*.json")


def test_missing_baseline(tmp_path, capsys):
    run = write_run(tmp_path, "s", "l")
    _one_line_error(capsys, ["check", str(run), "--baseline", str(tmp_path / "none.json")], "none.json",
                    "no such file")


def _good_record() -> dict:
    return {"task": "t", "doc_id": 0, **trace_to_json(make_trace([0.1, 0.2], [True, False]))}


@pytest.mark.parametrize("content, problem", [
    ("", "trace file is empty"),
    ("{oops\n", ":1: not valid JSON"),
    ("[1, 2]\n", ":1: a trace record must be a JSON object"),
    (json.dumps({k: v for k, v in _good_record().items() if k != "handoff"}) + "\n", ":1: trace record lacks field(s) handoff"),
    (json.dumps(_good_record()) + "\n" + json.dumps({**_good_record(), "s1_entropy": [0.1]}) + "\n",
     ":2: trace field 's1_entropy' has 1 values"),
])
def test_bad_trace_file(tmp_path, capsys, content, problem):
    path = tmp_path / "traces_1.jsonl"
    path.write_text(content)
    _one_line_error(capsys, ["analyze", str(path)], str(path), problem)


def test_missing_trace_file(tmp_path, capsys):
    _one_line_error(capsys, ["analyze", str(tmp_path / "traces_x.jsonl")], "traces_x.jsonl", "no such file")


def test_trace_without_called_tokens(tmp_path, capsys):
    path = tmp_path / "traces_1.jsonl"
    rec = {"task": "t", **trace_to_json(make_trace([0.1, 0.2], [False, False], llm_called=[False, False]))}
    path.write_text(json.dumps(rec) + "\n")
    _one_line_error(capsys, ["analyze", str(path)], "llm_called")


@pytest.mark.parametrize("content, problem", [
    ("", "CSV file is empty"),
    ("large_params,small_params,collaboration_rate\n", "header but no rows"),
    ("large_params,small_params,collaboration_rate,colour\n1,2,0.1,red\n", "unknown column(s) colour"),
    ("large_params,collaboration_rate\n1,0.1\n", "missing column(s) small_params"),
    ("large_params,small_params,collaboration_rate\n10,1,0.2\n20,1,abc\n", ":3: column 'collaboration_rate' is not a number"),
])
def test_bad_csv(tmp_path, capsys, content, problem):
    path = tmp_path / "points.csv"
    path.write_text(content)
    _one_line_error(capsys, ["fit", str(path)], str(path), problem)


def test_missing_csv(tmp_path, capsys):
    _one_line_error(capsys, ["fit", str(tmp_path / "none.csv")], "none.csv", "no such file")


def test_fit_with_too_few_points_says_so(tmp_path, capsys):
    path = tmp_path / "points.csv"
    path.write_text("large_params,small_params,collaboration_rate\n10,1,0.2\n20,1,0.3\n")
    err = _one_line_error(capsys, ["fit", str(path)], "at least 3 pairs", "2 distinct")
    assert "a=" not in err and "R2" not in err  # no number in place of a fit


def test_unknown_model_in_results(tmp_path, capsys):
    write_run(tmp_path / "r", "who/small", "who/large", summary_override={"gsm8k": {"collaboration_rate": 0.2}})
    _one_line_error(capsys, ["fit", str(tmp_path / "r")], "results_", "no parameter count for model 'who/small'")


def test_results_without_collaboration_rate(tmp_path, capsys):
    write_run(tmp_path / "r", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B")  # no traces: rates are None
    _one_line_error(capsys, ["fit", str(tmp_path / "r")], "results_", "no collaboration_rate for task 'gsm8k'")


def test_malformed_params_yaml(tmp_path, capsys):
    write_run(tmp_path / "r", "s", "l")
    bad = tmp_path / "p.yaml"
    bad.write_text("- just\n- a list\n")
    _one_line_error(capsys, ["fit", str(tmp_path / "r"), "--params", str(bad)], "p.yaml", "expected")


@pytest.mark.parametrize("row, problem", [
    ("nan,1,0.1", "column 'large_params' is not a finite number: 'nan'"),
    ("10,inf,0.1", "column 'small_params' is not a finite number: 'inf'"),
    ("0,1,0.1", "column 'large_params' must be a parameter count > 0, got '0'"),
    ("10,-5,0.1", "column 'small_params' must be a parameter count > 0, got '-5'"),
    ("10,1,-0.5", "column 'collaboration_rate' must be a rate in [0, 1], got '-0.5'"),
    ("10,1,1.7", "column 'collaboration_rate' must be a rate in [0, 1], got '1.7'"),
])
def test_csv_values_out_of_range(tmp_path, capsys, row, problem):
    path = tmp_path / "points.csv"
    path.write_text(f"large_params,small_params,collaboration_rate\n10,1,0.2\n20,1,0.3\n{row}\n")
    _one_line_error(capsys, ["fit", str(path)], f"{path}:4: {problem}")


@pytest.mark.parametrize("change, problem", [
    ({"schema_version": 99}, "schema_version 99 is not one this fsgen_eval reads (1)"),
    ({"handoff": [2, False]}, "trace field 'handoff', token 0: 2 is not true, false, 0, 1 or null"),
    ({"s1_entropy": ["0.1", 0.2]}, "trace field 's1_entropy', token 0: '0.1' is not a finite number or null"),
    ({"s1_entropy": [0.1, -3.0]}, "trace field 's1_entropy', token 1: -3.0 is not a number >= 0"),
    ({"s1_top1_prob": [0.5, 1.5]}, "trace field 's1_top1_prob', token 1: 1.5 is not in [0, 1]"),
    ({"source": ["x", 1]}, "trace field 'source', token 0: 'x' is not 1 or 2"),
    ({"token_id": [1, -4]}, "trace field 'token_id', token 1: -4 is not a token id"),
    ({"llm_called": [None, True]}, "trace field 'llm_called', token 0: None is not true, false, 0, 1"),
])
def test_trace_field_types_and_ranges(tmp_path, capsys, change, problem):
    path = tmp_path / "traces_1.jsonl"
    path.write_text(json.dumps(_good_record()) + "\n" + json.dumps({**_good_record(), **change}) + "\n")
    _one_line_error(capsys, ["analyze", str(path)], f"{path}:2: {problem}")


def test_handoff_may_be_null_and_versioned_records_read(tmp_path, capsys):
    path = tmp_path / "traces_1.jsonl"
    # another document: with null read as false this record's tokens equal the first's, a copy otherwise
    rec = {**_good_record(), "schema_version": 1, "handoff": [1, None], "doc_id": 1}
    path.write_text(json.dumps(_good_record()) + "\n" + json.dumps(rec) + "\n")
    assert main(["analyze", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_handoffs"] == 2


def _torn_run(tmp_path):
    """A finished run whose trace file ends in a torn line (a kill mid-write after lm-eval's results)."""
    from analysis_helpers import random_traces

    folder = write_run(tmp_path / "runs", "s", "l", traces={"gsm8k": random_traces(4, 10, seed=1)}, ts="A")
    with (folder / "traces_A.jsonl").open("a") as fh:
        fh.write('{"task": "gsm8k", "doc_id": 9, "hand')
    return folder


@pytest.mark.parametrize("command", ["analyze", "report", "check"])
def test_a_torn_final_line_is_skipped_with_a_warning_everywhere(tmp_path, caplog, capsys, command):
    folder = _torn_run(tmp_path)
    baseline = tmp_path / "baseline.json"
    if command == "check":
        assert main(["check", str(tmp_path / "runs"), "--baseline", str(baseline), "--update-baseline"]) == 0
    argv = {"analyze": ["analyze", str(folder), "--json"],
            "report": ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "rep"), "--n-boot", "10"],
            "check": ["check", str(tmp_path / "runs"), "--baseline", str(baseline)]}[command]
    caplog.clear()
    assert main(argv) == 0, capsys.readouterr().err
    assert f"{folder / 'traces_A.jsonl'}:5: torn final line" in caplog.text
    if command == "analyze":
        assert json.loads(capsys.readouterr().out)["n_tokens"] == 4 * 10


def test_a_broken_line_that_is_not_the_last_is_still_an_error(tmp_path, capsys):
    path = tmp_path / "traces_1.jsonl"
    path.write_text(json.dumps(_good_record()) + '\n{"task": "t", "hand\n' + json.dumps(_good_record()) + "\n")
    _one_line_error(capsys, ["analyze", str(path)], f"{path}:2: not valid JSON")
