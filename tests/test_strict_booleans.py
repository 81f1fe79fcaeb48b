"""Issue 24.1: a boolean model_arg accepts exactly true/false, 1/0, yes/no, on/off (any case); anything else is
refused in one line naming the key; a non-empty string is never true by being non-empty."""

from __future__ import annotations

import json
import shutil

import pytest

from fsgen_eval.core.runs import parse_bool, parse_model_args
from fsgen_eval.lm_eval import args as margs

TRUE = ["true", "TRUE", "True", "1", "yes", "YES", "on", " On ", True, 1]
FALSE = ["false", "FALSE", "0", "no", "No", "off", "OFF", False, 0]
REFUSED = ["nah", "y", "n", "t", "2", "", "truee", "1.0", None, 2, 1.0]


@pytest.mark.parametrize("value", TRUE)
def test_true_spellings(value):
    assert parse_bool("k", value) is True


@pytest.mark.parametrize("value", FALSE)
def test_false_spellings(value):
    assert parse_bool("k", value) is False


@pytest.mark.parametrize("value", REFUSED)
def test_other_values_are_refused_naming_the_key(value):
    with pytest.raises(ValueError, match=r"^trace_append=.* is not valid: expected one of true/false"):
        parse_bool("trace_append", value)
    with pytest.raises(margs.ModelArgsError, match=r"parallelize=.* is not valid"):
        margs.check_values({"parallelize": value})


def test_do_sample_gen_kwarg_reads_words_not_truthiness():
    assert margs.sampling({"do_sample": "no", "temperature": 0.7})["temperature"] == 0.0
    assert margs.sampling({"do_sample": "yes", "temperature": 0.7})["temperature"] == 0.7
    with pytest.raises(margs.ModelArgsError, match="do_sample=maybe is not valid"):
        margs.sampling({"do_sample": "maybe"})


def test_trace_arg_words():
    assert margs.check_trace_arg("off") == margs.check_trace_arg("NO") == margs.check_trace_arg(False) == "false"
    assert margs.check_trace_arg("on") is margs.check_trace_arg("true") is margs.check_trace_arg(None) is None


def test_model_args_parsing_is_one_rule():
    assert parse_model_args("small=a, large=b ,trace=") == {"small": "a", "large": "b", "trace": ""}
    assert parse_model_args({"small": 1}) == {"small": 1} and parse_model_args(None) == {}
    with pytest.raises(ValueError, match="key=value"):
        parse_model_args("small=a,oops")
    assert margs.pair_name_from_model_args("small=x/a,large=y/b") == "x__a__y__b"


# ------------------------------------------------------------------------ remote code, end to end
EVIL = """
from pathlib import Path
Path({marker!r}).write_text("custom code ran")
"""


@pytest.fixture()
def evil_model(llama_pair, tmp_path):
    """The small model's folder whose config.json's auto_map points at code that writes a marker file."""
    _, small = llama_pair
    folder = tmp_path / "evil"
    shutil.copytree(small, folder)
    marker = tmp_path / "MARKER"
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def _build(arg_string: str) -> None:
    from fsgen_eval.lm_eval.model import FSGenLM

    FSGenLM.create_from_arg_string(arg_string, {"device": "cpu"})


@pytest.mark.parametrize("value", ["no", "off", "OFF", "false", "0"])
def test_trust_remote_code_no_never_runs_the_folders_code(evil_model, value):
    folder, marker = evil_model
    with pytest.raises(margs.ModelArgsError, match="pass trust_remote_code=true"):
        _build(f"small={folder},large={folder},router=never,trust_remote_code={value}")
    assert not marker.exists()


@pytest.mark.parametrize("value", ["nah", "2", "y"])
def test_trust_remote_code_other_words_are_refused(evil_model, value):
    folder, marker = evil_model
    with pytest.raises(margs.ModelArgsError, match=f"trust_remote_code={value} is not valid"):
        _build(f"small={folder},large={folder},router=never,trust_remote_code={value}")
    assert not marker.exists()


def test_trust_remote_code_yes_does_run_it(evil_model):
    """The control: the marker is what the folder's code writes once transformers imports it."""
    folder, marker = evil_model
    with pytest.raises(Exception):  # noqa: B017 - the code has no classes; what matters is that it ran
        _build(f"small={folder},large={folder},router=never,trust_remote_code=yes")
    assert marker.read_text() == "custom code ran"


@pytest.mark.parametrize("value", ["no", "off"])
def test_trace_append_no_refuses_an_existing_file(llama_pair, tmp_path, value):
    large, small = llama_pair
    existing = tmp_path / "t.jsonl"
    existing.write_text('{"run_id": "old"}\n')
    with pytest.raises(margs.ModelArgsError, match="exists; pass trace_append=true"):
        _build(f"small={small},large={large},trace={existing},trace_append={value}")
    assert existing.read_text() == '{"run_id": "old"}\n'
