"""``--model fsgen`` through lm-eval itself, against lm-eval's own ``--model hf``, on tiny local models.

Every run goes through ``lm_eval.simple_evaluate`` with lm-eval's unchanged gsm8k / mmlu / mbpp tasks,
read offline from FSGEN_DATASETS_DIR.
"""

from __future__ import annotations

import json

import lm_eval
import pytest
from lm_eval.loggers import EvaluationTracker
from lm_eval.utils import hash_string

from _lm_eval_helpers import offline_env, task_manager
from fsgen_eval.core.runs import run_layout
from fsgen_eval.lm_eval.args import ModelArgsError

pytestmark = pytest.mark.slow

GSM = dict(tasks=["gsm8k"], limit=3, num_fewshot=1, gen_kwargs="max_gen_toks=12")


def run(model: str, model_args: str, tracker: EvaluationTracker | None = None, **kw) -> dict:
    offline_env()
    kw = {**GSM, "batch_size": 2, **kw}
    return lm_eval.simple_evaluate(model=model, model_args=model_args, log_samples=True,
                                   task_manager=task_manager(), evaluation_tracker=tracker, **kw)


def responses(results: dict, task: str) -> dict:
    return {(s["doc_id"], s["filter"]): s["resps"] for s in results["samples"][task]}


def fsgen_args(pair, **extra) -> str:
    large, small = pair
    args = {"small": small, "large": large, "device": "cpu", "trace": "false", **extra}
    return ",".join(f"{k}={v}" for k, v in args.items())


@pytest.fixture(scope="module")
def hf_large(llama_pair):
    return run("hf", f"pretrained={llama_pair[0]},device=cpu", tasks=["gsm8k", "mmlu_abstract_algebra"])


def test_oracle_equals_hf_large_and_writes_traces_beside_results(llama_pair, hf_large, tmp_path):
    # the layout fsgen-eval run gives it: results and traces in output_path/<pair>
    folder, lm_eval_path, model_args = run_layout(tmp_path, fsgen_args(llama_pair, method="oracle", trace="None"))
    tracker = EvaluationTracker(output_path=str(lm_eval_path))
    out = run("fsgen", model_args, tracker,
              tasks=["gsm8k", "mmlu_abstract_algebra"])
    assert responses(out, "gsm8k") == responses(hf_large, "gsm8k")
    ours, theirs = responses(out, "mmlu_abstract_algebra"), responses(hf_large, "mmlu_abstract_algebra")
    assert ours.keys() == theirs.keys()
    for key in ours:
        pairs = zip((r[0] for r in ours[key]), (r[0] for r in theirs[key]), strict=True)
        for (ll, greedy), (ll_hf, greedy_hf) in pairs:
            assert ll == pytest.approx(ll_hf, abs=1e-4) and greedy == greedy_hf

    # as lm-eval's CLI saves them
    samples = out.pop("samples")
    tracker.save_results_aggregated(results=out, samples=samples)
    for task in out["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    assert folder == tmp_path / "llama-small__llama-large"  # the pair, not lm-eval's random name
    (results_file,) = folder.glob("results_*.json")
    info = json.loads(results_file.read_text())["config"]["fsgen"]
    assert info["method"] == "oracle" and set(info["per_task"]) == {"gsm8k", "mmlu_abstract_algebra"}
    assert info["summary"]["llm_call_rate"] == 1.0

    (trace_file,) = folder.glob("traces_*.jsonl")
    assert info["traces"] == [str(trace_file)]  # which trace files belong to this results file
    records = [json.loads(line) for line in trace_file.read_text().splitlines()]
    logged = {}
    for task in ("gsm8k", "mmlu_abstract_algebra"):
        for line in next(folder.glob(f"samples_{task}_*.jsonl")).read_text().splitlines():
            s = json.loads(line)
            logged[(task, s["doc_id"])] = s
    assert sum(r["request_type"] == "generate_until" for r in records) == 3
    assert sum(r["request_type"] == "loglikelihood" for r in records) == 3 * 4
    for rec in records:
        sample = logged[(rec["task"], rec["doc_id"])]
        assert rec["prompt_hash"] == sample["prompt_hash"] == hash_string(sample["arguments"]["gen_args_0"]["arg_0"])
        assert len(rec["token_id"]) == len(rec["handoff"]) == len(rec["s1_entropy"])
        if rec["request_type"] == "loglikelihood":
            logprobs = [float(r[0][0]) for r in sample["resps"]]  # stored as strings
            assert any(rec["logprob"] == pytest.approx(lp, abs=1e-4) for lp in logprobs), (rec["logprob"], sample["resps"], rec["token_id"])
    tokens = sum(len(r["token_id"]) for r in records)
    assert info["summary"]["generated_tokens"] == tokens


def test_greedy_speculative_equals_hf_large(llama_pair, hf_large):
    out = run("fsgen", fsgen_args(llama_pair, method="speculative", num_draft=3))
    assert responses(out, "gsm8k") == responses(hf_large, "gsm8k")
    info = out["config"]["fsgen"]
    assert info["params"]["num_draft"] == 3 and info["summary"]["acceptance_rate"] is not None


def test_router_never_equals_hf_small(llama_pair):
    hf_small = run("hf", f"pretrained={llama_pair[1]},device=cpu")
    out = run("fsgen", fsgen_args(llama_pair, router="never"))
    assert responses(out, "gsm8k") == responses(hf_small, "gsm8k")
    assert out["config"]["fsgen"]["summary"]["llm_call_rate"] == 0.0


def test_mbpp_runs_end_to_end_and_scores(llama_pair):
    out = run("fsgen", fsgen_args(llama_pair, method="contrastive"), tasks=["mbpp"], limit=2, num_fewshot=None,
              gen_kwargs="max_gen_toks=8", confirm_run_unsafe_code=True)
    assert out["results"]["mbpp"]["pass_at_1,none"] == 0.0  # 8 tokens of a random model pass no test
    assert out["config"]["fsgen"]["per_task"]["mbpp"]["generated_tokens"] > 0
    from fsgen_eval.lm_eval.sandbox import protections

    assert out["config"]["fsgen"]["code_eval_sandbox"] == list(protections())  # the results say how it ran


@pytest.fixture
def no_task_loading(monkeypatch):
    """Fail the test if lm-eval gets as far as loading a task."""
    tm = task_manager()

    def refuse(*a, **k):
        raise AssertionError("a task was loaded before the model arguments were refused")

    names = [n for n in ("load", "load_task_or_group") if hasattr(tm, n)]  # 0.4.13 has both, 0.4.10 the second
    assert names
    for name in names:
        monkeypatch.setattr(tm, name, refuse)


def bad_args(request, llama_pair, llama_base, other_vocab_model, tmp_path) -> tuple[str, str]:
    large, small = llama_pair
    return {
        "missing_large": (f"small={small}", "needs large=PATH"),
        "not_a_model": (f"small={small},large={tmp_path}", "not a transformers model"),
        "other_vocab": (f"small={small},large={other_vocab_model}", "different vocabularies"),
        "proxy_without_base": (f"small={small},large={large},method=proxy", "needs small_base"),
        "unknown_key": (f"small={small},large={large},pretrained={large}", "valid keys: small, large"),
    }[request]


@pytest.mark.parametrize("case", ["missing_large", "not_a_model", "other_vocab", "proxy_without_base", "unknown_key"])
def test_bad_pairs_fail_before_any_task_loads(case, llama_pair, llama_base, other_vocab_model, tmp_path, no_task_loading):
    model_args, message = bad_args(case, llama_pair, llama_base, other_vocab_model, tmp_path)
    with pytest.raises(ModelArgsError, match=message) as err:
        run("fsgen", model_args + ",device=cpu")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def chat_small(llama_pair, tmp_path_factory):
    """System 1 with a chat template (the tiny tokenizer has none)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "llama-small-chat"
    import shutil

    shutil.copytree(llama_pair[1], folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    tok.save_pretrained(folder)
    return folder


def test_chat_template_and_multiturn_fewshot(llama_pair, chat_small):
    chat = dict(apply_chat_template=True, fewshot_as_multiturn=True, limit=2)
    hf = run("hf", f"pretrained={llama_pair[0]},tokenizer={chat_small},device=cpu", **chat)
    out = run("fsgen", fsgen_args((llama_pair[0], chat_small)), **chat)
    assert responses(out, "gsm8k") == responses(hf, "gsm8k")
    prompt = json.dumps(out["samples"]["gsm8k"][0]["arguments"], default=str)
    assert "<user>" in prompt and "<assistant>" in prompt


def test_automatic_batch_size(llama_pair):
    out = run("fsgen", fsgen_args(llama_pair, batch_size="auto", max_batch_size=4, max_length=256),
              tasks=["mmlu_abstract_algebra"], limit=2, batch_size=None)
    assert out["config"]["batch_sizes"] and max(out["config"]["batch_sizes"]) <= 4


def test_paper_tasks_run_with_fsgen(llama_pair):
    tasks = ["fsgen_gsm8k_cot", "fsgen_mmlu_stem_cot_anatomy", "fsgen_mbpp"]
    out = run("fsgen", fsgen_args(llama_pair, method="oracle"), tasks=tasks, limit=1, num_fewshot=None,
              gen_kwargs="max_gen_toks=4", confirm_run_unsafe_code=True)
    assert set(out["config"]["fsgen"]["per_task"]) == set(tasks)
    assert out["results"]["fsgen_mbpp"]["pass_at_1,none"] == 0.0
    assert "exact_match,strict-match" in out["results"]["fsgen_gsm8k_cot"]
