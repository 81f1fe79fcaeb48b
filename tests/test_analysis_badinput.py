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
    err = _one_line_error(capsys, ["fit", str(path)], "at least 3 points", "got 2")
    assert "0." not in err.split("got 2")[1]  # no number in place of a fit


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
