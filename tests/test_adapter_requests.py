"""FSGenLM's request methods called directly (as lm-eval's evaluator does), against lm-eval's HFLM."""

from __future__ import annotations

import json

import pytest
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import fsgen_eval.lm_eval  # noqa: F401
from fsgen_eval.lm_eval.model import FSGenLM


TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " * 3,
    "def add(a, b):\n    return a + b\n",
]


def instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, idx=0, metadata=("rolling_task", i, 1)) for i, a in enumerate(args)]


@pytest.fixture(scope="module")
def models(llama_pair, tmp_path_factory):
    large, small = llama_pair
    trace = tmp_path_factory.mktemp("traces") / "t.jsonl"
    fsgen = FSGenLM.create_from_arg_string(
        f"small={small},large={large},max_length=24,batch_size=3,trace={trace}", {"device": "cuda:0"})
    hf = HFLM(pretrained=str(large), device="cpu", max_length=24, batch_size=3)
    return fsgen, hf, trace


def test_rolling_loglikelihood_over_several_windows_equals_hf(models):
    fsgen, hf, trace = models
    ours = fsgen.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in TEXTS]))
    theirs = hf.loglikelihood_rolling(instances("loglikelihood_rolling", [(t,) for t in TEXTS]))
    assert ours == pytest.approx(theirs, abs=1e-4)
    records = [json.loads(x) for x in trace.read_text().splitlines() if '"loglikelihood_rolling"' in x]
    assert [r["doc_id"] for r in sorted(records, key=lambda r: r["doc_id"])] == [0, 1]
    for rec in records:  # one record per request, its windows joined: one entry per token of the text
        n_tokens = len(fsgen.tok_encode(TEXTS[rec["doc_id"]]))
        assert n_tokens > 24 or rec["doc_id"] == 1
        assert len(rec["token_id"]) == n_tokens
        assert rec["token_id"] == fsgen.tok_encode(TEXTS[rec["doc_id"]])
        assert rec["logprob"] == pytest.approx(ours[rec["doc_id"]], abs=1e-4)


def test_sampling_follows_the_generation_kwargs(models):
    fsgen, _, _ = models
    gen = {"until": ["\n\n"], "max_gen_toks": 8, "do_sample": True, "temperature": 1.5}
    reqs = instances("generate_until", [("Question: What is 3 + 4?", gen)] * 4)
    import torch

    torch.manual_seed(0)
    first = fsgen.generate_until(reqs)
    torch.manual_seed(0)
    again = fsgen.generate_until(reqs)
    greedy = fsgen.generate_until(instances("generate_until", [("Question: What is 3 + 4?", {**gen, "do_sample": False})]))
    assert first == again  # seeded: reproducible
    assert len(set(first)) > 1 or first[0] != greedy[0]  # but sampled, not greedy


def test_unsupported_generation_kwargs_are_refused(models):
    fsgen, _, _ = models
    with pytest.raises(ValueError, match="does not support generation kwarg.*num_beams"):
        fsgen.generate_until(instances("generate_until", [("Hi", {"until": ["\n"], "max_gen_toks": 4, "num_beams": 4})]))


def test_a_crash_keeps_every_finished_batch(llama_pair, tmp_path, monkeypatch):
    large, small = llama_pair
    trace = tmp_path / "crash.jsonl"
    lm = FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,batch_size=1,trace={trace}")
    import fsgen_eval.engine.decode as decoding

    real, calls = decoding.decode_batch, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "decode_batch", dies_on_third_batch)
    reqs = instances("generate_until", [(f"Question: {i} + {i} =", {"until": ["\n"], "max_gen_toks": 4}) for i in range(4)])
    with pytest.raises(RuntimeError, match="killed"):
        lm.generate_until(reqs)
    lines = trace.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["request_type"] == "generate_until" for x in lines)


def test_one_token_continuations_share_a_row_and_each_get_a_record(models):
    """lm-eval scores one-token continuations of one context with a single row (its logits cache)."""
    fsgen, hf, trace = models
    context = "Question: What is 3 + 4? Answer:"
    conts = [c for c in (" 7", " 8", "A", "B", "7") if len(fsgen._encode_request(context, c)[1]) == 1]
    assert len(conts) >= 2  # otherwise this test would not exercise the shared row
    reqs = [Instance("loglikelihood", {}, (context, c), idx=i, metadata=("mc_task", 0, 1)) for i, c in enumerate(conts)]
    ours = fsgen.loglikelihood(reqs)
    theirs = hf.loglikelihood([Instance("loglikelihood", {}, (context, c), idx=i, metadata=("mc_task", 0, 1))
                               for i, c in enumerate(conts)])
    assert [r[0] for r in ours] == pytest.approx([r[0] for r in theirs], abs=1e-4)
    assert [r[1] for r in ours] == [r[1] for r in theirs]
    records = [json.loads(x) for x in trace.read_text().splitlines() if '"mc_task"' in x]
    assert sorted(r["logprob"] for r in records) == pytest.approx(sorted(r[0] for r in ours), abs=1e-5)


# contexts ending in nothing, one or several spaces, a tab, newlines; continuations with and without a space
PAIRS = [(ctx, cont) for ctx in ("Question: What is 3 + 4? Answer:", "Answer: ", "Answer:  ", "x =\t", "[BEGIN]\n",
                                 "def f():\n    ", "Q:\n\n", "é ")
         for cont in (" 7", "7", "\n7", " seven eight", "é")]


def test_the_pair_split_is_hfs_on_contexts_with_trailing_whitespace(models):
    """loglikelihood's split (public tok_encode with the whitespace rule) equals --model hf's, token for token,
    and so do the scores: a context's trailing whitespace goes to the continuation."""
    fsgen, hf, _ = models
    for ctx, cont in PAIRS:
        assert fsgen._encode_request(ctx, cont) == hf._encode_pair(ctx, cont), (ctx, cont)  # lm-eval's own split
    moved = [(ctx, cont) for ctx, cont in PAIRS if ctx != ctx.rstrip()]
    assert len(moved) >= 6 and all(fsgen._encode_request(c, x)[0] == fsgen.tok_encode(c.rstrip()) for c, x in moved)
    reqs = [Instance("loglikelihood", {}, pair, idx=0, metadata=("split_task", i, 1)) for i, pair in enumerate(PAIRS)]
    ours, theirs = fsgen.loglikelihood(reqs), hf.loglikelihood(reqs)
    assert [r[0] for r in ours] == pytest.approx([r[0] for r in theirs], abs=1e-4)
    assert [r[1] for r in ours] == [r[1] for r in theirs]


def test_proxy_tuning_loads_the_base_model(llama_pair, llama_base):
    large, small = llama_pair
    lm = FSGenLM.create_from_arg_string(f"small={small},large={large},small_base={llama_base},method=proxy,"
                                        "alpha=0.5,device=cpu,trace=false")
    out = lm.generate_until(instances("generate_until", [("Question: 2 + 2 =", {"until": ["\n"], "max_gen_toks": 4})]))
    assert len(out) == 1
    info = lm.fsgen_info()
    assert info["small_base"] == str(llama_base) and info["params"]["alpha"] == 0.5
    assert info["summary"]["llm_call_rate"] == 1.0


def test_data_parallel_rank_files_and_summary_of_all_ranks(llama_pair, tmp_path):
    """Rank logic on the CPU: rank 0 of 2 writes its own file, skips lm-eval's padding copies, and
    summarises both ranks' files (rank 1's written here as that rank would)."""
    from fsgen_eval.lm_eval.traces import TraceWriter, trace_path

    large, small = llama_pair
    lm = FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,trace={tmp_path}")
    lm._rank, lm._world_size = 0, 2  # as HFLM sets them under accelerate launch
    reqs = instances("generate_until", [(f"Question: {i} + 1 =", {"until": ["\n"], "max_gen_toks": 3}) for i in range(2)])
    lm.generate_until(reqs + [reqs[-1]])  # lm-eval pads this rank with a copy of its last request
    own = tmp_path / f"traces_{lm.run_ts}_rank0.jsonl"
    mine = [json.loads(x) for x in own.read_text().splitlines()]
    assert [r["doc_id"] for r in mine] == [0, 1] and {r["rank"] for r in mine} == {0}
    other = dict(mine[0])
    other.update(rank=1, doc_id=5, handoff=[True] * 7, llm_called=[True] * 7, token_id=[1] * 7)
    TraceWriter(trace_path(tmp_path, lm.run_ts, 1, 2)).write_batch([other])
    info = lm.fsgen_info()
    assert info["traces"] == [str(own), str(tmp_path / f"traces_{lm.run_ts}_rank1.jsonl")]
    assert info["summary"]["generated_tokens"] == sum(len(r["token_id"]) for r in mine) + 7


@pytest.mark.parametrize("cut", [(3, 4), (4, 6), (6, 9)])
def test_stop_strings_cut_generations_as_hf_does(models, cut):
    fsgen, hf, _ = models
    prompts = ["Question: How many clips did Natalia sell?", "def add(a, b):", "The answer is"]

    def reqs(until):
        return instances("generate_until", [(p, {"until": until, "max_gen_toks": 10, "do_sample": False}) for p in prompts])

    free = fsgen.generate_until(reqs([]))
    stop = free[0][cut[0]:cut[1]]  # a piece of the first generation: it must be cut there
    assert stop.strip()
    ours, theirs = fsgen.generate_until(reqs([stop])), hf.generate_until(reqs([stop]))
    assert ours == theirs
    assert ours[0] == free[0].split(stop)[0] != free[0]
