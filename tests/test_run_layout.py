"""Where an fsgen run's files go, decided before lm-eval starts (``fsgen-eval run``'s argument rewrite), and the
one results-file discovery rule. Fast: no model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsgen_eval.lm_eval.run import fsgen_argv
from fsgen_eval.core.runs import recorded_trace, results_files, run_layout, with_trace
from fsgen_eval.lm_eval.args import ModelArgsError


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_output_path_becomes_the_pairs_folder_and_the_trace_location(tmp_path):
    argv, folder = fsgen_argv(["--model", "fsgen", "--model_args", "small=org/s,large=org/l,device=cpu",
                               "--tasks", "gsm8k", "-o", str(tmp_path), "--limit", "2"])
    assert folder == tmp_path / "org__s__org__l"
    assert _option(argv, "--output_path") == str(folder / "results.json")  # lm-eval writes results_<date>.json there
    assert _option(argv, "--model_args") == f"small=org/s,large=org/l,device=cpu,trace={folder}"
    assert _option(argv, "--tasks") == "gsm8k" and _option(argv, "--limit") == "2"
    assert not folder.exists()  # checked, not created


@pytest.mark.parametrize("trace, kept", [("trace=false", True), ("trace=/else/where", True), ("trace=true", False),
                                         ("trace=None", False)])
def test_a_trace_setting_of_the_user_wins_except_true(tmp_path, trace, kept):
    argv, folder = fsgen_argv(["--model", "fsgen", "--model_args", f"small=s,large=l,{trace}", "--output_path",
                               str(tmp_path)])
    args = _option(argv, "--model_args")
    assert (args == f"small=s,large=l,{trace}") == kept
    assert args.count("trace=") == 1 and (kept or args.endswith(f"trace={folder}"))


def test_split_and_json_model_args(tmp_path):
    argv, folder = fsgen_argv(["--model=fsgen", "--model_args", "small=s", "large=l", "--output_path", str(tmp_path)])
    assert _option(argv, "--model_args") == f"small=s,large=l,trace={folder}"  # one option: 0.4.10 keeps the last
    argv, folder = fsgen_argv(["--model", "fsgen", "--model_args", json.dumps({"small": "s", "large": "l"}),
                               "--output_path", str(tmp_path)])
    assert json.loads(_option(argv, "--model_args")) == {"small": "s", "large": "l", "trace": str(folder)}


def test_other_models_and_runs_without_output_are_passed_unchanged(tmp_path):
    argv = ["--model", "hf", "--model_args", "pretrained=x", "--output_path", str(tmp_path)]
    assert fsgen_argv(argv) == (argv, None)
    argv, folder = fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "--tasks", "gsm8k"])
    assert folder is None and "--output_path" not in argv and _option(argv, "--model_args") == "small=s,large=l"
    argv, folder = fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "-o", str(tmp_path / "r.json")])
    assert folder is None and _option(argv, "--output_path") == str(tmp_path / "r.json")  # the user's own file


def test_bad_gen_kwargs_and_unwritable_folders_stop_before_lm_eval(tmp_path):
    with pytest.raises(ModelArgsError, match="num_beams"):
        fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "--gen_kwargs", "num_beams=4"])
    with pytest.raises(ModelArgsError, match="temperature"):
        fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "--gen_kwargs", "temperature=-1"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--output_path .*file"):
        fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "-o", str(tmp_path / "file")])


def test_layout_from_python_and_with_trace():
    folder, lm_eval_path, args = run_layout("out", {"small": "a", "large": "b"})
    assert (folder, lm_eval_path, args) == (Path("out/a__b"), Path("out/a__b/results.json"),
                                            {"small": "a", "large": "b", "trace": "out/a__b"})
    assert run_layout("out", "small=a") is None
    assert with_trace("small=a,trace=x.jsonl", Path("f")) == "small=a,trace=x.jsonl"


def test_results_files_skip_unfinished_folders_below_but_not_the_folder_itself(tmp_path):
    for rel in ("a/results_1.json", "b.tmp/x/results_2.json", "c/d/results_3.json", "c/notes.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    assert results_files(tmp_path) == [tmp_path / "a/results_1.json", tmp_path / "c/d/results_3.json"]
    assert results_files(tmp_path / "b.tmp") == [tmp_path / "b.tmp/x/results_2.json"]  # a cell checking itself
    assert results_files(tmp_path / "a/results_1.json") == [tmp_path / "a/results_1.json"]


def test_recorded_traces_are_found_beside_a_moved_results_file(tmp_path):
    moved = tmp_path / "cell"
    moved.mkdir()
    (moved / "traces_t_rank0.jsonl").write_text("")
    results = moved / "results_1.json"
    recorded, found = recorded_trace(results, str(tmp_path / "cell.tmp" / "traces_t_rank0.jsonl"))
    assert found == moved / "traces_t_rank0.jsonl" and recorded == tmp_path / "cell.tmp" / "traces_t_rank0.jsonl"
    recorded, found = recorded_trace(results, "traces_gone.jsonl")
    assert found is None and recorded == moved / "traces_gone.jsonl"


@pytest.mark.parametrize("given, expected", [([], ["--batch_size", "8"]), (["--batch_size", "8"], []),
                                             (["-b", "4"], []), (["--batch_size=2"], [])])
def test_a_model_args_batch_size_reaches_lm_evals_own_record(tmp_path, given, expected):
    """lm-eval records its own --batch_size (1 unless given) as config.batch_size and in its header line:
    `fsgen-eval run` passes the model's batch_size on unless the command line already names one (issue 25)."""
    argv, _ = fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l,batch_size=8", "--output_path",
                          str(tmp_path), *given])
    assert argv.count("--batch_size") + argv.count("-b") + sum(a.startswith("--batch_size=") for a in argv) == 1
    if expected:
        assert argv[argv.index("--batch_size") + 1] == "8"
    argv, _ = fsgen_argv(["--model", "fsgen", "--model_args", "small=s,large=l", "--output_path", str(tmp_path)])
    assert "--batch_size" not in argv  # none given: lm-eval's default 1 and the model's default 1 agree
