"""The adapter as a thin HFLM subclass: request identity with each batch, no side channels, no global side
effects, one typed run record, trace files that are never shared by accident, launches it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import fsgen_eval.lm_eval  # noqa: F401  (registers --model fsgen)
from fsgen_eval.core.schema import RunInfo
from fsgen_eval.lm_eval import args as margs
from fsgen_eval.lm_eval.model import FSGenLM
from fsgen_eval.lm_eval.traces import SummaryBook

REPO = Path(__file__).resolve().parents[1]


def gen(i: int, context: str, max_gen_toks: int) -> Instance:
    return Instance("generate_until", {}, (context, {"until": [], "max_gen_toks": max_gen_toks, "do_sample": False}),
                    idx=0, metadata=("ident_task", i, 1))


@pytest.fixture(scope="module")
def lm(llama_pair, tmp_path_factory):
    large, small = llama_pair
    trace = tmp_path_factory.mktemp("hooks") / "t.jsonl"
    return FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,batch_size=2,trace={trace}"), trace


def records(trace: Path, task: str) -> list[dict]:
    return [r for r in map(json.loads, trace.read_text().splitlines()) if r["task"] == task]


def test_side_channels_are_gone():
    for hook in ("tok_batch_encode", "tok_decode", "_model_generate"):
        assert getattr(FSGenLM, hook) is getattr(HFLM, hook), hook


def test_each_record_belongs_to_its_request_when_contexts_repeat_across_kwargs_groups(lm):
    """Same context, two generation-kwargs groups: lm-eval's Collator batches doc 0 with doc 2 and doc 1
    alone; the records must still name the document each generation was made for."""
    model, trace = lm
    context = "Question: What is 3 + 4?"
    reqs = [gen(0, context, 2), gen(1, context, 6), gen(2, context, 2)]
    out = model.generate_until(reqs)
    by_doc = {r["doc_id"]: r for r in records(trace, "ident_task")}
    assert sorted(by_doc) == [0, 1, 2]
    assert len(by_doc[0]["token_id"]) <= 2 and len(by_doc[2]["token_id"]) <= 2
    assert len(by_doc[1]["token_id"]) > 2  # the 6-token request's record, not a 2-token one
    assert [model.tok_decode(by_doc[i]["token_id"]) for i in range(3)] == out


def test_every_record_carries_the_run_id_of_the_results(lm):
    model, trace = lm
    model.generate_until([gen(5, "The answer is", 3)])
    model.loglikelihood([Instance("loglikelihood", {}, ("The answer is", " 7"), idx=0, metadata=("ll_task", 0, 1))])
    info = model.fsgen_info()
    assert isinstance(info["run_id"], str) and len(info["run_id"]) >= 8
    recs = [json.loads(x) for x in trace.read_text().splitlines()]
    assert recs and {r["run_id"] for r in recs} == {info["run_id"]}
    run = RunInfo.from_json(info)
    assert run.run_id == info["run_id"] and run.method == "oracle" and run.batch_size == 2
    for key in ("small", "large", "small_base", "method", "router", "threshold", "params", "summary", "per_task",
                "tokens_per_second", "traces"):
        assert key in info  # the keys written before RunInfo existed


def test_run_info_round_trip_and_bad_records():
    run = RunInfo(small="s", large="l", method="oracle", router="entropy", threshold=0.5, run_id="abc",
                  summary={"generated_tokens": 3}, per_task={"gsm8k": {"generated_tokens": 3}})
    back = RunInfo.from_json(json.loads(json.dumps(run.to_json())))
    assert back == run and back.task_summary("mbpp") == {"generated_tokens": 3}
    old = {"small": "s", "large": "l", "method": "oracle", "router": "always", "traces": ["t.jsonl"]}
    assert RunInfo.from_json(old).run_id is None  # a results file written before run ids
    with pytest.raises(ValueError, match=r"X: config\['fsgen'\] lacks 'router'"):
        RunInfo.from_json({"small": "s", "large": "l", "method": "oracle"}, where="X: config['fsgen']")
    with pytest.raises(ValueError, match=r"\['threshold'\] is not a number"):
        RunInfo.from_json({**old, "threshold": "high"})


def test_an_existing_trace_file_is_refused_before_any_model_loads(llama_pair, tmp_path, monkeypatch):
    large, small = llama_pair
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"run_id": "other"}\n')
    monkeypatch.setattr(HFLM, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(margs.ModelArgsError, match="t.jsonl exists; pass trace_append=true") as err:
        FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,trace={trace}")
    assert "\n" not in err.value.code


def test_trace_append_adds_a_second_run_and_each_summary_counts_its_own(llama_pair, tmp_path):
    large, small = llama_pair
    trace = tmp_path / "t.jsonl"
    runs = []
    for k, router in enumerate(("always", "never")):
        append = ",trace_append=true" if k else ""
        lm = FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,router={router},"
                                            f"trace={trace}{append}")
        lm.generate_until([gen(k, "Question: 1 + 1 =", 3)])
        runs.append(lm.fsgen_info())
    recs = [json.loads(x) for x in trace.read_text().splitlines()]
    assert [r["run_id"] for r in recs] == [runs[0]["run_id"], runs[1]["run_id"]] and runs[0]["run_id"] != runs[1]["run_id"]
    own = SummaryBook.from_files([trace], run_id=runs[1]["run_id"]).summary()["summary"]
    assert own == runs[1]["summary"] and own["llm_call_rate"] == 0.0


@pytest.mark.parametrize("env, cuda, refused", [({}, 0, False), ({"WORLD_SIZE": "1"}, 0, False),
                                                ({"WORLD_SIZE": "2"}, 0, True), ({"WORLD_SIZE": "2"}, 1, True),
                                                ({"WORLD_SIZE": "2"}, 2, False)])
def test_a_launch_lm_eval_would_not_shard_is_refused(env, cuda, refused):
    if refused:
        with pytest.raises(margs.ModelArgsError, match="2 processes were launched.*every process would evaluate"):
            margs.check_launch(env, cuda)
    else:
        margs.check_launch(env, cuda)


def test_custom_code_names_the_switch(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.M"}}))
    with pytest.raises(margs.ModelArgsError, match="pass trust_remote_code=true"):
        margs.check_remote_code("large", str(tmp_path), trust_remote_code=False)
    margs.check_remote_code("large", str(tmp_path), trust_remote_code=True)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_import_replaces_no_hook_and_patches_nothing_of_lm_eval():
    code = ("import sys; before = sys.excepthook; import fsgen_eval.lm_eval; "
            "import lm_eval.loggers.evaluation_tracker as et, lm_eval.api.registry as r; r.get_model('fsgen'); "
            "print(sys.excepthook is before, et.EvaluationTracker.__init__.__module__, "
            "et.GeneralConfigTracker.log_experiment_args.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "lm_eval.loggers.evaluation_tracker", "lm_eval.loggers.evaluation_tracker"]


def test_one_line_error_without_an_excepthook():
    code = "from fsgen_eval.lm_eval.args import ModelArgsError; raise ModelArgsError('needs large=PATH')"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "lm_eval --model fsgen: error: needs large=PATH"


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun_stop_in_one_line(llama_pair):
    import socket

    large, small = llama_pair
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "fsgen_eval.cli", "run", "--model", "fsgen", "--model_args", f"small={small},large={large},device=cpu",
           "--tasks", "gsm8k", "--limit", "1"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    prefixes = ("lm_eval --model fsgen: error: ", "fsgen-eval run: error: ")  # the model's check, as the CLI says it
    ours = [line for line in proc.stderr.splitlines() if line.startswith(prefixes)]
    # each worker stops in one line; torchrun terminates the other worker once one fails, so the second line
    # appears only when it got there first
    assert 1 <= len(ours) <= 2, proc.stderr[-3000:]
    assert all("2 processes were launched (WORLD_SIZE=2)" in line for line in ours)
    assert "ModelArgsError" not in proc.stderr  # no worker's traceback, only the one line
    assert "Running generate_until" not in proc.stderr + proc.stdout


def test_mbpp_without_the_code_eval_switch_is_one_line():
    """lm-eval's mbpp runs code_eval once when it loads the task: offline, evaluate finds the sandboxed script in
    its module cache (conftest filled it) by itself, which refuses in one line naming both switches."""
    env = {k: v for k, v in _env().items() if k != "HF_ALLOW_CODE_EVAL"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    code = "import lm_eval.tasks.mbpp.utils"  # no fsgen_eval import: evaluate's own offline cache
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "HF_ALLOW_CODE_EVAL=1" in last and "--confirm_run_unsafe_code" in last


def test_auto_batch_size_probes_the_models_not_the_collaboration_and_is_recorded(llama_pair, monkeypatch, capsys):
    """The probe is HFLM's; each of its calls is one forward pass per model (not score_batch with its
    statistics over the vocabulary), and what it picked lands in the run record and is printed."""
    import fsgen_eval.engine.score as score

    large, small = llama_pair
    lm = FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,batch_size=auto,max_batch_size=4,"
                                        "max_length=32,trace=false")
    real = score.score_batch
    monkeypatch.setattr(score, "score_batch", lambda *a, **k: pytest.fail("the probe ran the collaboration"))
    assert lm._detect_batch_size() == 4
    monkeypatch.setattr(score, "score_batch", real)
    lm.generate_until([gen(0, "Question: 2 + 2 =", 2)])
    assert "Determined Largest batch size: 4" in capsys.readouterr().out
    info = lm.fsgen_info()
    assert info["batch_size"] == "auto" and info["auto_batch_sizes"] == [4, 4]


def test_auto_n_schedules_loglikelihood_batches_as_hf(llama_pair):
    """batch_size=auto:3 through Collator's batch_fn: three parts, sized at their first batch, the third taken
    from the second (already at max_batch_size) without a probe; lm-eval's batch_sizes equal --model hf's."""
    large, small = llama_pair
    kw = "device=cpu,batch_size=auto:3,max_batch_size=4,max_length=64"
    ours = FSGenLM.create_from_arg_string(f"small={small},large={large},{kw},trace=false")
    hf = HFLM.create_from_arg_string(f"pretrained={large},{kw}")
    reqs = [Instance("loglikelihood", {}, (f"Question: {i} + {i} ={' ' * (i % 3)}", f" {2 * i}"), idx=0,
                     metadata=("sched_task", i, 1)) for i in range(12)]
    scores = ours.loglikelihood(reqs)
    assert [s[0] for s in scores] == pytest.approx([s[0] for s in hf.loglikelihood(reqs)], abs=1e-4)
    assert ours.batch_sizes == hf.batch_sizes == {0: 4, 1: 4, 2: 4}
    assert ours.fsgen_info()["auto_batch_sizes"] == [4, 4]  # parts 0 and 1 probed, part 2 not


def test_sandbox_layers_are_each_runs_own(llama_pair, monkeypatch):
    """Two runs in one process: the first's metric runs a program under the full sandbox; the second, under the
    fallback, records the fallback's layers, and a third, where code may not run, none (the layers were once a
    module global: the last program's, whichever run ran it)."""
    from fsgen_eval.lm_eval.code_eval import CodeEval
    from fsgen_eval.lm_eval.sandbox import protections

    large, small = llama_pair
    args = {"small": str(small), "large": str(large), "device": "cpu", "trace": "false"}
    monkeypatch.setenv("HF_ALLOW_CODE_EVAL", "1")
    monkeypatch.setenv("FSGEN_CODE_EVAL_SANDBOX", "auto")
    first = FSGenLM.create_from_arg_obj(args)
    scores, _ = CodeEval().compute(predictions=[["def f():\n    return 1"]], references=["assert f() == 1"], k=[1])
    assert scores == {"pass@1": 1.0}
    assert first.fsgen_info()["code_eval_sandbox"] == list(protections("auto"))
    monkeypatch.setenv("FSGEN_CODE_EVAL_SANDBOX", "basic")
    second = first.for_run(**args)
    assert second.fsgen_info()["code_eval_sandbox"] == list(protections("basic"))
    assert "fallback_no_namespaces" in second.fsgen_info()["code_eval_sandbox"]
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL")
    assert first.for_run(**args).fsgen_info()["code_eval_sandbox"] is None
    assert first.fsgen_info()["code_eval_sandbox"] is None  # asked when written, never kept from before


@pytest.fixture
def made(monkeypatch) -> list:
    """Every DecodeConfig ``make_config`` makes from here on, in order."""
    import fsgen_eval.engine.config as config

    out: list = []
    real = config.make_config
    monkeypatch.setattr(config, "make_config", lambda **kw: out.append(real(**kw)) or out[-1])
    return out


def entropy_run(llama_pair) -> dict[str, str | float]:
    large, small = llama_pair
    return {"small": str(small), "large": str(large), "device": "cpu", "trace": "false", "router": "entropy",
            "threshold": 0.5}


def test_one_decode_config_per_run(llama_pair, made):
    """The run's config is made once, where the arguments are checked, and every batch derives from it."""
    args = entropy_run(llama_pair)
    lm = FSGenLM.create_from_arg_obj(args)
    assert len(made) == 1 and lm.state.config is made[0]
    other = lm.for_run(**{**args, "threshold": 0.25})
    assert len(made) == 2 and other.state.config is made[1] and other.state.config.threshold == 0.25
    assert lm.state.config.threshold == 0.5
    lm.generate_until([gen(0, "Question: 2 + 2 =", 2)])
    assert len(made) == 2  # batches derive their settings (for_request), nothing made again


def test_reused_weights_check_each_runs_arguments_once(llama_pair, made):
    """Under ``reusing_weights`` (the sweep's in-process cells) the first run of a group loads the models and
    each run — the first included — checks its arguments once: one DecodeConfig each (the first was once
    checked twice, by the group's key and again by the constructor)."""
    args = entropy_run(llama_pair)
    with FSGenLM.reusing_weights():
        first = FSGenLM.create_from_arg_obj(args)
        assert len(made) == 1 and first.state.config is made[0]
        second = FSGenLM.create_from_arg_obj({**args, "threshold": 0.25})
        assert len(made) == 2 and second.state.config is made[1]
    assert second.pair is first.pair and second.state.config.threshold == 0.25  # the weights were reused
