"""``fsgen-eval replay`` through lm-eval runs on tiny fp32 models (GSM8K and MBPP prompts).

System 2 runs: ``--model fsgen`` with router ``never`` and System 1 the large model itself (input a: exact
token ids) and lm-eval's own ``--model hf`` (input b: re-tokenized text); the reference is the lockstep
``--model fsgen method=oracle`` run of the same pair on the same prompts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _lm_eval_helpers import lm_eval_run
from fsgen_eval.analysis.files import find_runs, read_trace_file
from fsgen_eval.cli import main
from fsgen_eval.core import schema

pytestmark = pytest.mark.slow

FLOATS = [k for k in schema.TOKEN_FIELDS if schema.FIELD_DTYPES[k] is np.float32]
EXACT = ("token_id", "handoff", "llm_called", "source", "accepted")


@pytest.fixture(scope="module")
def runs(llama_pair, tmp_path_factory):
    large, small = llama_pair
    root = tmp_path_factory.mktemp("replay")
    fs = "device=cpu,dtype=float32,trace=None"
    return {
        "lockstep": lm_eval_run(root / "lockstep", "fsgen",
                                f"small={small},large={large},method=oracle,trace_topk=5,{fs}"),
        "system2": lm_eval_run(root / "system2", "fsgen", f"small={large},large={large},router=never,{fs}"),
        "hf": lm_eval_run(root / "hf", "hf", f"pretrained={large},device=cpu,dtype=float32"),
        "root": root,
    }


def records(folder: Path) -> dict:
    (tf,) = folder.rglob("traces_*.jsonl")
    return {(r["task"], r["doc_id"]): r for r in read_trace_file(tf)}


def replayed(runs, name: str, out: str, *extra: str, small=None) -> Path:
    large, small_default = (Path(p) for p in runs["pair"])
    args = ["replay", str(runs[name]), "--small", str(small or small_default), "-o", str(runs["root"] / out),
            *(extra or ("--large", str(large)))]
    assert main(args) == 0
    return runs["root"] / out


@pytest.fixture(scope="module", autouse=True)
def _pair(runs, llama_pair):
    runs["pair"] = llama_pair


@pytest.mark.parametrize("rescore", [False, True])
def test_replay_from_traces_equals_lockstep_field_by_field(runs, rescore):
    """System 2's statistics from its own trace (default) or a teacher-forced pass of the large model
    (--rescore-large): either way the lockstep oracle's trace, field by field."""
    out = replayed(runs, "system2", f"from-traces-{rescore}", "--large", str(runs["pair"][0]),
                   "--draft-lengths", "1,2,3", *(["--rescore-large"] if rescore else []))
    ref, got = records(runs["lockstep"]), records(out)
    assert ref.keys() == got.keys() and {t for t, _ in ref} == {"gsm8k", "mbpp"}
    for key, r in ref.items():
        for k in EXACT:
            np.testing.assert_array_equal(got[key]["trace"][k], r["trace"][k], err_msg=f"{key} {k}")
        for k in FLOATS:
            np.testing.assert_allclose(got[key]["trace"][k], r["trace"][k], atol=1e-5, rtol=0, err_msg=f"{key} {k}")
    (run,), (lock,) = find_runs([out]), find_runs([runs["lockstep"]])
    assert run.fsgen.per_task == lock.fsgen.per_task
    assert run.results == lock.results  # lm-eval's metrics: the oracle's are System 2's
    assert run.fsgen.replay["replayed"] and run.fsgen.replay["source"] == "trace"
    assert run.fsgen.replay["large_statistics"] == ("teacher_forced" if rescore else "system2_trace")
    spec = run.fsgen.speculative["draft_lengths"]
    assert set(spec) == {"1", "2", "3"} and all(s["summary"]["verification_steps"] > 0 for s in spec.values())


def test_replay_without_large_keeps_handoffs_and_nulls_s2(runs):
    out = replayed(runs, "system2", "no-large", "--no-large")
    ref, got = records(runs["lockstep"]), records(out)
    for key, r in ref.items():
        np.testing.assert_array_equal(got[key]["trace"]["handoff"], r["trace"]["handoff"])
        assert np.isnan(got[key]["trace"]["s2_entropy"]).all()
    (run,) = find_runs([out])
    assert run.fsgen.large == str(runs["pair"][0]) and run.fsgen.replay["large_loaded"] is False


def test_replay_from_hf_samples_counts_retokenization(runs):
    out = replayed(runs, "hf", "from-hf")
    (run,), (lock,) = find_runs([out]), find_runs([runs["lockstep"]])
    rep = run.fsgen.replay
    assert rep["source"] == "samples" and rep["system2_backend"] == "hf"
    for task, c in rep["tokenization"].items():
        assert c["requests"] == 3 and c["retokenized_exactly"] + len(c["mismatched_doc_ids"]) == 3
        moved = abs(run.fsgen.per_task[task]["collaboration_rate"] - lock.fsgen.per_task[task]["collaboration_rate"])
        if c["retokenized_exactly"] == 3 and not rep["not_large_greedy"][task]:
            assert moved < 1e-12, (task, moved)


def test_two_small_models_one_folder_each(runs, llama_base):
    large, small = runs["pair"]
    out = runs["root"] / "two"
    assert main(["replay", str(runs["system2"]), "--small", f"{small},{llama_base}", "--large", str(large),
                 "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{Path(small).name}__{Path(large).name}",
                                                            f"{Path(llama_base).name}__{Path(large).name}"])


# ------------------------------------------------------------------------------------------ bad input
def copy_run(runs, name: str, to: str) -> Path:
    dst = runs["root"] / to
    shutil.copytree(runs[name], dst)
    return dst


def edit_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def edit_samples(folder: Path, fn) -> None:
    for f in folder.glob("samples_*.jsonl"):
        lines = [json.loads(x) for x in f.read_text().splitlines()]
        for x in lines:
            fn(x)
        f.write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def no_weights(monkeypatch):
    import fsgen_eval.engine.pair as pair

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(pair, "load_model", refuse)


def refused(runs, folder: Path, capsys, *extra: str) -> str:
    large, small = runs["pair"]
    assert main(["replay", str(folder), "--small", str(small), "--large", str(large), "-o",
                 str(runs["root"] / "never"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_before_any_model_loads(runs, capsys, no_weights, other_vocab_model):
    assert "no such file" in refused(runs, runs["root"] / "absent", capsys)

    sampled = copy_run(runs, "hf", "sampled")
    edit_samples(sampled, lambda x: x["arguments"]["gen_args_0"]["arg_1"].update(do_sample=True, temperature=0.7))
    err = refused(runs, sampled, capsys)
    assert "was sampled" in err and "temperature=0.7" in err and "samples_" in err

    other = copy_run(runs, "hf", "other-tok")
    (res,) = other.glob("results_*.json")
    edit_json(res, lambda o: o["config"].update(model_args=f"pretrained={other_vocab_model},device=cpu"))
    assert "another tokenizer" in refused(runs, other, capsys)

    short = copy_run(runs, "hf", "truncated")
    (res,) = short.glob("results_*.json")
    edit_json(res, lambda o: o.update(max_length=40))
    edit_json(res, lambda o: o["config"].update(model="vllm"))  # a backend whose cut the replay does not know
    assert "the vllm backend cut it" in refused(runs, short, capsys)

    mc = copy_run(runs, "hf", "loglikelihood")
    (res,) = mc.glob("results_*.json")
    edit_json(res, lambda o: o["configs"]["gsm8k"].update(output_type="multiple_choice"))
    assert "nothing to replay" in refused(runs, mc, capsys)

    torn = copy_run(runs, "hf", "torn")
    (f, *_) = sorted(torn.glob("samples_*.jsonl"))
    f.write_text(f.read_text() + "{not json\n")
    assert f.name in refused(runs, torn, capsys)

    gone = copy_run(runs, "system2", "no-samples")
    for f in gone.glob("samples_*.jsonl"):
        f.unlink()
    assert "--log_samples" in refused(runs, gone, capsys)

    other_model = copy_run(runs, "hf", "vllm-of-another-model")
    (res,) = other_model.glob("results_*.json")
    edit_json(res, lambda o: o["config"].update(model="vllm", model_args=f"pretrained={runs['pair'][1]}"))
    assert "not --large" in refused(runs, other_model, capsys)


def test_vllm_scoring_bad_input_is_one_line_before_any_model_loads(runs, capsys, no_weights, monkeypatch):
    """--scoring vllm without vLLM names the extra; with it, a max_logprobs below the vocabulary an exact
    scoring needs (or below --scoring-topk) is refused before an engine starts."""
    from fsgen_eval.engine.backends import vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    assert "fsgen-eval[vllm]" in refused(runs, runs["hf"], capsys, "--scoring", "vllm")
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    monkeypatch.setattr(vllm_backend.VLLMBackend, "load", no_engine)
    err = refused(runs, runs["hf"], capsys, "--scoring", "vllm", "--vllm-args", "max_logprobs=5")
    assert "max_logprobs=5" in err and "whole vocabulary" in err
    err = refused(runs, runs["hf"], capsys, "--scoring", "vllm", "--scoring-topk", "50", "--vllm-args",
                  "max_logprobs=20")
    assert "--scoring-topk 50" in err
    assert "--scoring vllm" in refused(runs, runs["hf"], capsys, "--scoring-topk", "50")


def no_engine(*a, **k):
    raise AssertionError("a vLLM engine was started before the bad input was refused")


def test_trace_records_of_another_run_in_the_file_are_left_out(runs):
    """A trace file several runs appended to (``trace_append``): only the results' run_id counts."""
    from fsgen_eval.lm_eval.samples import read_system2_run

    shared = copy_run(runs, "system2", "shared-trace")
    (tf,) = shared.glob("traces_*.jsonl")
    (res,) = shared.glob("results_*.json")
    run_id = json.loads(res.read_text())["config"]["fsgen"]["run_id"]
    lines = tf.read_text().splitlines()
    assert run_id and all(json.loads(x)["run_id"] == run_id for x in lines)
    other = [json.loads(x) | {"run_id": "another-run", "doc_id": 1000 + i} for i, x in enumerate(lines)]
    tf.write_text("\n".join(lines + [json.dumps(x) for x in other]) + "\n")
    assert len(read_system2_run(shared).requests) == len(lines)


def test_missing_trace_file_is_refused(runs, capsys, no_weights):
    gone = copy_run(runs, "system2", "no-trace")
    for f in gone.glob("traces_*.jsonl"):
        f.unlink()
    # the copy's results still name the original's trace files (recorded where the run wrote them, found
    # there when not beside the results): name one that exists nowhere
    (results,) = gone.glob("results_*.json")
    edit_json(results, lambda o: o["config"]["fsgen"].update(traces=[str(gone / "traces_gone_rank0.jsonl")]))
    err = refused(runs, gone, capsys)
    assert "trace file" in err and "is missing" in err


def _side_rows(folder: Path) -> dict:
    import pyarrow.parquet as pq

    (tf,) = folder.rglob("traces_*.jsonl")
    keys = list(records(folder))  # the JSONL's lines, in order: the side file's ``record``
    table = pq.read_table(schema.topk_path(tf)).to_pylist()
    return {(*keys[r["record"]], r["token"]): r for r in table}


def test_replay_trace_topk_equals_the_lockstep_side_file(runs):
    out = replayed(runs, "system2", "topk", "--large", str(runs["pair"][0]), "--trace-topk", "5")
    ref, got = _side_rows(runs["lockstep"]), _side_rows(out)
    assert ref.keys() == got.keys() and len(ref) > 20
    for key, r in ref.items():
        g = got[key]
        for who in ("s1", "s2"):
            assert g[f"{who}_topk_ids"] == r[f"{who}_topk_ids"], key
            np.testing.assert_allclose(g[f"{who}_topk_probs"], r[f"{who}_topk_probs"], atol=1e-5, rtol=0)
    (run,) = find_runs([out])
    assert run.fsgen.trace_topk == 5
    assert main(["replay", str(runs["system2"]), "--small", str(runs["pair"][1]), "-o", str(runs["root"] / "bad"),
                 "--large", str(runs["pair"][0]), "--trace-topk", "-1"]) == 2


def test_a_prompt_hflm_cut_is_cut_the_same_way_and_listed(runs):
    short = copy_run(runs, "hf", "hflm-cut")
    (res,) = short.glob("results_*.json")
    obj = json.loads(res.read_text())
    window = obj.get("max_length") or 2048
    obj["max_length"] = 60  # shorter than the prompts: HFLM keeps the last 60 - max_gen_toks (40) tokens
    res.write_text(json.dumps(obj))
    runs["hflm-cut"] = short
    out = replayed(runs, "hflm-cut", "hflm-cut-out", "--no-large")
    (run,) = find_runs([out])
    cut = {t: c["truncated_doc_ids"] for t, c in run.fsgen.replay["tokenization"].items()}
    assert cut["gsm8k"] == [0, 1, 2] and window > 60


def test_a_samples_line_with_a_unicode_line_separator_is_one_line(runs):
    odd = copy_run(runs, "hf", "u2028")
    (f, *_) = sorted(odd.glob("samples_gsm8k_*.jsonl"))
    lines = f.read_text().split("\n")
    first = json.loads(lines[0])
    first["resps"][0][0] += "\u2028tail"  # as lm-eval writes it (ensure_ascii=False): a raw U+2028
    lines[0] = json.dumps(first, ensure_ascii=False)
    f.write_text("\n".join(lines))
    assert "\u2028" in f.read_text() and len(f.read_text().splitlines()) > len([x for x in lines if x.strip()])
    from fsgen_eval.lm_eval.samples import read_samples_file

    assert len(read_samples_file(f)) == len([x for x in lines if x.strip()])


def _edit_trace(folder: Path, fn) -> None:
    (tf,) = folder.glob("traces_*.jsonl")
    lines = [json.loads(x) for x in tf.read_text().splitlines()]
    fn(lines[0])
    tf.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_hostile_input_is_one_line_before_any_model_loads(runs, capsys, no_weights):
    """Issue 24: each of these was accepted, or ended in IndexError / OverflowError after the models loaded."""
    garbled = copy_run(runs, "hf", "args-string")
    (res,) = garbled.glob("results_*.json")
    edit_json(res, lambda o: o["config"].update(model_args="just some words"))
    assert "is not key=value" in refused(runs, garbled, capsys)

    huge = copy_run(runs, "hf", "max-gen-toks")
    edit_samples(huge, lambda x: x["arguments"]["gen_args_0"]["arg_1"].update(max_gen_toks=10**12))
    assert "max_gen_toks 1000000000000 is not an integer in [1, 1048576]" in refused(runs, huge, capsys)

    dict_doc = copy_run(runs, "hf", "dict-doc")
    edit_samples(dict_doc, lambda x: x.update(doc_id={"a": 1}))
    assert "doc_id {'a': 1} is not an integer >= 0" in refused(runs, dict_doc, capsys)

    outside = copy_run(runs, "system2", "outside-vocab")
    _edit_trace(outside, lambda r: r["token_id"].__setitem__(0, 10**6))
    assert "token_id 1000000 is outside" in refused(runs, outside, capsys)

    overflow = copy_run(runs, "system2", "overflow")
    _edit_trace(overflow, lambda r: r["token_id"].__setitem__(0, 10**20))
    assert "is not a token id" in refused(runs, overflow, capsys)

    (runs["root"] / "a-file").write_text("x")
    for out, problem in (("/proc/fsgen-replay", "under /proc"), (str(runs["root"] / "a-file"), "is a file")):
        large, small = runs["pair"]
        assert main(["replay", str(runs["hf"]), "--small", str(small), "--no-large", "-o", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and problem in err, err


def test_a_system2_tokenizer_that_cannot_be_loaded_is_said_and_recorded(runs, capsys):
    gone = copy_run(runs, "hf", "tokenizer-gone")
    (res,) = gone.glob("results_*.json")
    edit_json(res, lambda o: o["config"]["model_args"].update(pretrained="/nonexistent/fsgen-model")
              if isinstance(o["config"]["model_args"], dict) else o["config"].update(
                  model_args="pretrained=/nonexistent/fsgen-model,device=cpu"))
    runs["tokenizer-gone"] = gone
    out = replayed(runs, "tokenizer-gone", "tokenizer-gone-out", "--no-large")
    assert "WARNING: System 2's tokenizer (/nonexistent/fsgen-model) could not be loaded" in capsys.readouterr().out
    (run,) = find_runs([out])
    assert run.fsgen.replay["system2_tokenizer_compared"] is False
    (ok,) = find_runs([replayed(runs, "hf", "tokenizer-there-out", "--no-large")])
    assert ok.fsgen.replay["system2_tokenizer_compared"] is True
