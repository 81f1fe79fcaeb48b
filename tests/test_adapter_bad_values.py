"""Bad ``--model_args`` values and ``--gen_kwargs``: one line naming the key and the value, before any model loads.

Each case runs ``fsgen-eval run --model fsgen`` (lm-eval's own ``cli_evaluate`` behind the documented way to
type ``lm_eval --model fsgen``, which checks ``--gen_kwargs`` and ``--output_path`` before lm-eval starts) in one
subprocess that counts ``from_pretrained`` calls, so a check that only fires after the weights are read fails
the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from fsgen_eval.lm_eval import args as margs
from test_adapter_cli import env

pytestmark = pytest.mark.slow
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d:\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")

# model_args suffix / extra CLI arguments, and what the one error line must name
CASES: dict[str, tuple[str, list[str], str]] = {
    "batch_size": ("batch_size=abc", [], "batch_size=abc"),
    "dtype": ("dtype=float17", [], "dtype=float17"),
    "trace": ("trace=/proc/nope/x.jsonl", [], "trace=/proc/nope/x.jsonl"),
    "temperature": ("", ["--gen_kwargs", "do_sample=True,temperature=-1"], "temperature=-1"),
    "top_p": ("", ["--gen_kwargs", "do_sample=True,top_p=1.5"], "top_p=1.5"),
    "threshold": ("router=entropy,threshold=abc", [], "threshold=abc"),
    # output that cannot be written: refused before the weights, not after the whole run (issue 24)
    "output_under_proc": ("", ["--output_path", "/proc/fsgen-out"], "--output_path /proc/fsgen-out"),
    "output_under_a_file": ("", ["--output_path", "/etc/passwd/out"], "lies under /etc/passwd, which is a file"),
    # an unknown 120 KB key was echoed whole (240 KB on stderr): cut to its start and its length
    "huge_unknown_key": ("k" * 120_000 + "=1", [], "k" * 80 + "... (120000 characters)"),
}

# Runs every case in one interpreter, indexing lm-eval's tasks once (that indexing, not our checks, takes
# most of a failed run's minute). An uncaught exception is reported as the interpreter would: a SystemExit's
# message alone, anything else through sys.excepthook.
DRIVER = r"""
import contextlib, io, json, sys
import transformers
import fsgen_eval.lm_eval
import lm_eval.tasks
from fsgen_eval.cli import main as fsgen_eval_main

managers, Real = {}, lm_eval.tasks.TaskManager
lm_eval.tasks.TaskManager = lambda *a, **k: managers.get(repr((a, k))) or managers.setdefault(repr((a, k)), Real(*a, **k))

loads = []
real = transformers.PreTrainedModel.from_pretrained.__func__
transformers.PreTrainedModel.from_pretrained = classmethod(lambda cls, *a, **k: loads.append(str(a[0])) or real(cls, *a, **k))
out = []
for argv in json.loads(sys.argv[1]):
    err, code = io.StringIO(), 0
    loads.clear()
    with contextlib.redirect_stderr(err):
        try:
            code = fsgen_eval_main(["run", *argv]) or 0
        except SystemExit as exc:
            code = exc.code
            if code not in (None, 0) and not isinstance(code, int):
                print(code, file=sys.stderr)
        except BaseException as exc:
            code = 1
            sys.excepthook(type(exc), exc, exc.__traceback__)
    out.append({"code": str(code), "stderr": err.getvalue(), "loads": list(loads)})
print("RESULTS " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def outcomes(llama_pair, tmp_path_factory) -> dict[str, dict]:
    large, small = llama_pair
    out = tmp_path_factory.mktemp("bad-values")
    argvs = [["--model", "fsgen", "--model_args", ",".join(filter(None, [f"small={small},large={large},device=cpu", extra])),
              "--tasks", "gsm8k", "--limit", "1", "--output_path", str(out), *cli]
             for extra, cli, _ in CASES.values()]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], env=env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS "))
    return dict(zip(CASES, json.loads(line[len("RESULTS "):]), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_is_one_line_naming_key_and_value_before_any_model_loads(outcomes, case):
    got = outcomes[case]
    # lm-eval's own log lines (timestamped) go to stderr too; besides them there must be one line only
    lines = [x for x in got["stderr"].strip().splitlines() if not LOG_LINE.match(x)]
    assert got["code"] not in ("0", "None"), got
    assert len(lines) == 1 and "Traceback" not in got["stderr"], got["stderr"][-3000:]
    # the model's own checks, or fsgen-eval run's (--gen_kwargs, --output_path) before lm-eval starts
    assert lines[0].startswith(("lm_eval --model fsgen: error: ", "fsgen-eval run: error: ")), lines[0]
    assert CASES[case][2] in lines[0], lines[0]
    assert got["loads"] == [], f"a model was loaded before the error: {got['loads']}"


def test_request_time_gen_kwargs_are_checked_too():
    """A task's own YAML (merged with --gen_kwargs) is checked again at each request: same one line."""
    with pytest.raises(margs.ModelArgsError, match=r"generation kwarg top_k=-3 is not valid"):
        margs.sampling({"until": ["\n"], "do_sample": True, "temperature": 0.7, "top_k": -3})
    assert margs.sampling({"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 5}) == {
        "temperature": 0.7, "top_p": 0.9, "top_k": 5}
    assert margs.sampling({"do_sample": False, "temperature": 0.7})["temperature"] == 0.0


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("auto:4", "auto:4"), (8, 8), ("16", 16)])
def test_good_batch_sizes_pass(value, expected):
    assert margs.check_batch_size(value) == expected


@pytest.mark.parametrize("value", [0, -1, "abc", "auto:", "auto:x", True, "4.5"])
def test_bad_batch_sizes_are_refused(value):
    with pytest.raises(margs.ModelArgsError, match=f"batch_size={value} is not valid"):
        margs.check_batch_size(value)


def test_trace_folder_must_be_creatable(tmp_path):
    assert margs.check_trace_arg(str(tmp_path / "new" / "deeper" / "t.jsonl")).endswith("t.jsonl")
    assert not (tmp_path / "new").exists()  # probed, not created
    (tmp_path / "file").write_text("x")
    with pytest.raises(margs.ModelArgsError, match="is a file, not a folder"):
        margs.check_trace_arg(str(tmp_path / "file" / "t.jsonl"))
