"""What a newcomer meets first (issue 25): one-line refusals before any work, and docs that say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fsgen_eval.cli import main
from fsgen_eval.core.jsonl import read_json
from fsgen_eval.lm_eval.args import ModelArgsError, check_distinct_pair

REPO = Path(__file__).resolve().parents[1]


def test_malformed_json_names_the_position_once(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"a": "unterminated')
    with pytest.raises(ValueError) as err:
        read_json(bad)
    assert "at at" not in str(err.value)
    assert "Unterminated string starting at: line 1 column 7" in str(err.value)


def test_analysis_doc_says_a_folder_of_runs_is_analysed_run_by_run():
    text = (REPO / "docs" / "analysis.md").read_text()
    assert "several runs is refused" not in text
    assert "analysed run by run" in text


def test_readme_study_time_is_the_scripts():
    script = (REPO / "scripts" / "study.sh").read_text()  # micro_study.sh is study.sh with FAMILY=micro
    (minutes,) = re.findall(r"LIMIT=all: the sweep takes (\d+) minutes", script)
    readme = (REPO / "README.md").read_text()
    said = re.findall(r"LIMIT=all[^\n]*?micro_study\.sh[^\n]*?(\d+) min", readme)
    assert said and set(said) == {minutes}, said


def test_same_model_twice_is_refused_unless_system1_alone(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    for method, router in (("oracle", "always"), ("speculative", "always"), ("oracle", "entropy")):
        with pytest.raises(ModelArgsError, match="same model"):
            check_distinct_pair(str(model), str(model) + "/", method, router)
    check_distinct_pair(str(model), str(model), "oracle", "never")  # System 2 alone, for a replay
    check_distinct_pair(str(model), str(model), "proxy", "always")  # large + a(small - small_base) differs
    check_distinct_pair(str(model), str(tmp_path), "oracle", "always")


def test_lm_eval_check_pair_refuses_same_model_before_loading(llama_pair):
    from fsgen_eval.lm_eval.model import check_pair

    _, large = llama_pair
    with pytest.raises(ModelArgsError, match="same model"):
        check_pair(str(large), str(large), None, "oracle", "always", None, {}, False)


def test_fixed_batch_size_is_in_lm_evals_record(llama_pair):
    """lm-eval reads ``batch_sizes`` into config.batch_sizes and its header line."""
    from fsgen_eval.lm_eval.model import FSGenLM

    small, large = llama_pair
    lm = FSGenLM.create_from_arg_obj({"small": str(small), "large": str(large), "device": "cpu", "batch_size": 8},
                                     {"batch_size": 1, "max_batch_size": None, "device": None})
    assert lm.batch_sizes == {0: 8}


def test_sweep_unknown_model_says_no_such_model(tmp_path, capsys):
    assert main(["sweep", "--family", "micro", "--models", "micro-m,micro-q", "--tasks", "gsm8k",
                 "--output-path", str(tmp_path / "s"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such model 'micro-q'" in err and len(err.splitlines()) == 1


def test_sweep_unknown_model_args_extra_key_before_any_cell(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--family", "micro", "--models", "micro-xs,micro-s", "--tasks", "gsm8k",
                 "--output-path", str(out), "--model-args-extra", "dtype=float32,bacth_size=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no key 'bacth_size'" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_sweep_unknown_task_before_any_cell(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--family", "micro", "--models", "micro-xs,micro-s", "--tasks", "gsm8k,gsm8kk",
                 "--output-path", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no task 'gsm8kk'" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_readme_test_command_leaves_the_chromium_tests_runnable():
    """The tests that need a browser skip without one (outside CI), so README's test command installs it."""
    readme = (REPO / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if "pytest" in line and line.endswith("# ci")]
    assert "command -v chromium" in command and "apt-get install" in command and "chromium))" in command
    needs = [p.name for p in (REPO / "tests").glob("test_*.py") if "CHROMIUM is None" in p.read_text()]
    assert needs  # the reason for the install
