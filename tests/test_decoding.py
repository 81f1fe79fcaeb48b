"""The decoding loop on tiny fp32 pairs: exact equalities with transformers' own generate."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fsgen_eval import ModelPair, generate, loglikelihood
from fsgen_eval.core import schema
from fsgen_eval.engine.api import encode

PROMPTS = [
    "Question: What is 3 + 4? Answer:",
    "def add(a, b):",
    "Natalia sold clips to 48 of her friends in April",
    "A.",
]
N = 24


PAIR_WITH_BASE = True  # the `pair` fixture (conftest.py) loads llama_base as small_base


@pytest.fixture(scope="module")
def neox(neox_pair):
    large, small = neox_pair
    return ModelPair.load(small=str(small), large=str(large))


def hf_greedy(pair: ModelPair, model, prompt: str, n: int = N, **kw) -> list[int]:
    ids = torch.tensor([encode(pair, prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=pair.pad_token_id, **kw)
    return out[0, ids.shape[1]:].tolist()


def median_entropy(pair: ModelPair, prompts: list[str] = PROMPTS, n: int = N, near: float = 0.5,
                   band: float = 0.25) -> float:
    """A threshold near the median (quantile ``near``) of System 1's entropies that no entropy sits on.

    The plain median of an odd count *is* one token's entropy, and whether ``>`` holds there then depends on
    the last bit of a batched vs a single-row forward pass (it flipped with two torch threads): take the
    midpoint of the widest gap between sorted entropies within ``band`` of the quantile instead.
    """
    out = generate(pair, prompts, max_new_tokens=n)
    e = np.sort(np.concatenate([t["s1_entropy"] for t in out.traces]))
    lo, hi = int((near - band) * len(e)), min(int((near + band) * len(e)), len(e) - 2)
    i = lo + int(np.argmax(np.diff(e[lo:hi + 1])))
    return float((e[i] + e[i + 1]) / 2)


@pytest.mark.parametrize("which", ["pair", "neox"])
@pytest.mark.parametrize("method,params", [("oracle", {}), ("speculative", {"num_draft": 1}),
                                           ("speculative", {"num_draft": 3}), ("speculative", {})])
def test_oracle_and_greedy_speculative_equal_large_generate(request, which, method, params):
    p = request.getfixturevalue(which)
    out = generate(p, PROMPTS, method=method, max_new_tokens=N, batch_size=3, **params)
    for prompt, got in zip(PROMPTS, out.token_ids):
        assert got == hf_greedy(p, p.large, prompt)


@pytest.mark.parametrize("method", ["oracle", "speculative", "contrastive"])
def test_router_never_equals_small_generate(pair, method):
    out = generate(pair, PROMPTS, method=method, router="never", max_new_tokens=N, batch_size=4)
    for prompt, got in zip(PROMPTS, out.token_ids):
        assert got == hf_greedy(pair, pair.small, prompt)
    assert out.summary["llm_call_rate"] == 0 and out.summary["collaboration_rate"] == 0


def test_pair_agrees_on_some_tokens_and_not_others(pair):
    rate = generate(pair, PROMPTS, max_new_tokens=N).summary["collaboration_rate"]
    assert 0.05 < rate < 0.9


METHOD_CASES = [("oracle", {}), ("speculative", {"num_draft": 3}), ("contrastive", {}),
                ("contrastive", {"contrastive_variant": "fsgen", "beta": 0.7}), ("proxy", {"alpha": 0.5})]
ROUTER_CASES = ["always", "never", "max_prob", "margin", "entropy"]


@pytest.mark.parametrize("method,params", METHOD_CASES)
@pytest.mark.parametrize("router", ROUTER_CASES)
def test_ragged_batch_equals_rows_alone(pair, method, params, router):
    thresholds = {"max_prob": 0.1, "margin": 0.03, "entropy": median_entropy(pair)}
    kw = dict(method=method, router=router, threshold=thresholds.get(router), max_new_tokens=16, **params)
    batch = generate(pair, PROMPTS, batch_size=len(PROMPTS), **kw)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(pair, [prompt], **kw)
        assert batch.token_ids[i] == alone.token_ids[0]
        assert batch.counters[i] == alone.counters[0]
        assert_same_trace(batch.traces[i], alone.traces[0])


def assert_same_trace(got: schema.Trace, want: schema.Trace) -> None:
    """Integer fields equal; float fields equal up to fp32 reduction order (a batched forward pass)."""
    assert list(got) == list(want)
    for field, w in want.items():
        if w.dtype.kind == "f":
            np.testing.assert_allclose(got[field], w, rtol=1e-4, atol=1e-6, err_msg=field)
        else:
            assert np.array_equal(got[field], w), field


def test_threshold_router_gates_the_large_model(pair):
    thr = median_entropy(pair)
    out = generate(pair, PROMPTS, router="entropy", threshold=thr, max_new_tokens=N)
    s = out.summary
    assert 0 < s["llm_call_rate"] < 1
    for t in out.traces:
        called = t["llm_called"]
        assert np.array_equal(called, t["s1_entropy"] > thr)
        assert not t["handoff"][~called].any()
        assert np.isnan(t["s2_entropy"][~called]).all() and not np.isnan(t["s2_entropy"][called]).any()
        assert np.array_equal(t["source"], np.where(called, 2, 1))


def brute_force_handoffs(pair: ModelPair, prompt: str, generated: list[int]) -> int:
    """Teacher-forced: how many generated positions the two models' argmax differ at."""
    ids = torch.tensor([encode(pair, prompt) + generated])
    with torch.no_grad():
        a = pair.small(ids).logits[0, :, : pair.vocab_size].argmax(-1)
        b = pair.large(ids).logits[0, :, : pair.vocab_size].argmax(-1)
    n_prompt = ids.shape[1] - len(generated)
    return int((a != b)[n_prompt - 1: -1].sum())


def test_oracle_collaboration_rate_equals_brute_force_count(pair):
    out = generate(pair, PROMPTS, max_new_tokens=N, batch_size=2)
    handoffs = sum(brute_force_handoffs(pair, p, ids) for p, ids in zip(PROMPTS, out.token_ids))
    total = sum(len(ids) for ids in out.token_ids)
    assert out.summary["generated_tokens"] == total
    assert out.summary["collaboration_rate"] == pytest.approx(handoffs / total)
    assert handoffs > 0


def test_trace_fields_and_dtypes(pair):
    out = generate(pair, PROMPTS[:2], method="speculative", max_new_tokens=N)
    for t, ids in zip(out.traces, out.token_ids):
        assert list(t) == list(schema.TOKEN_FIELDS)
        assert all(len(v) == len(ids) for v in t.values())
        assert t["token_id"].tolist() == ids
        assert all(t[k].dtype == schema.FIELD_DTYPES[k] for k in t)
        acc = t["accepted"]
        # accepted drafts came from System 1 and are not handoffs; corrections are handoffs at greedy
        assert np.array_equal(t["source"] == 1, acc == 1)
        assert t["handoff"][acc == 0].all() and not t["handoff"][acc == 1].any()
        assert t["llm_called"].all()
        assert ((t["s1_top1_prob"] > 0) & (t["s1_top1_prob"] <= 1)).all()
        assert (t["s1_margin"] <= t["s1_top1_prob"]).all()
    s = out.summary
    assert 0 < s["acceptance_rate"] < 1 and 1 < s["mean_acceptance_length"] <= 1 + 5


def test_record_trace_off_keeps_summary(pair):
    on = generate(pair, PROMPTS, method="speculative", max_new_tokens=N)
    off = generate(pair, PROMPTS, method="speculative", max_new_tokens=N, record_trace=False)
    assert on.token_ids == off.token_ids and on.summary == off.summary
    assert np.isnan(off.traces[0]["s1_entropy"]).all()


def test_stop_strings_trim_text_and_tokens(pair):
    free = generate(pair, PROMPTS[:1], max_new_tokens=N)
    text = free.texts[0]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip(), "pick a stop string that is visible text"
    out = generate(pair, PROMPTS[:1], max_new_tokens=N, stop=[stop, "\u2603never"])
    cut = text[: text.find(stop)]
    assert out.texts[0] == cut
    ids = out.token_ids[0]
    assert pair.tokenizer.decode(ids).startswith(cut) and not pair.tokenizer.decode(ids[:-1]).startswith(cut) or not cut
    assert ids == free.token_ids[0][: len(ids)] and len(ids) < len(free.token_ids[0])
    assert out.summary["generated_tokens"] == len(ids) == len(out.traces[0]["token_id"])


@pytest.mark.parametrize("method,router", [("speculative", "always"), ("oracle", "always"), ("oracle", "entropy")])
def test_eos_ends_a_row_like_generate(pair, method, router):
    # declare a token the large model does emit as an EOS of its generation config: rows must stop there,
    # exactly where transformers' generate stops; finished rows leave the batch (and every cache) while
    # the others go on
    free = generate(pair, PROMPTS, max_new_tokens=N)
    eos = free.token_ids[0][5]
    cfg = pair.large.generation_config
    saved = cfg.eos_token_id
    cfg.eos_token_id = [saved, eos]
    try:
        thr = {"entropy": median_entropy(pair)}.get(router)
        out = generate(pair, PROMPTS, method=method, router=router, threshold=thr, max_new_tokens=N, batch_size=4)
        alone = [generate(pair, [p], method=method, router=router, threshold=thr, max_new_tokens=N) for p in PROMPTS]
        want = [hf_greedy(pair, pair.large, p) for p in PROMPTS]
    finally:
        cfg.eos_token_id = saved
    assert out.token_ids == [a.token_ids[0] for a in alone]
    assert out.counters == [a.counters[0] for a in alone]
    for got, one in zip(out.traces, alone):
        assert_same_trace(got, one.traces[0])
    if router == "entropy":
        return  # System 1 emits some tokens: the output is no longer the large model's
    assert out.token_ids == want
    assert out.token_ids[0][-1] == eos and len(out.token_ids[0]) <= 6
    assert any(len(ids) == N for ids in out.token_ids), "rows without that token run to max_new_tokens"
    assert out.summary["generated_tokens"] == sum(len(ids) for ids in want)


def test_sampling_is_seeded(pair):
    a = generate(pair, PROMPTS, method="speculative", temperature=0.8, top_p=0.9, seed=3, max_new_tokens=N)
    b = generate(pair, PROMPTS, method="speculative", temperature=0.8, top_p=0.9, seed=3, max_new_tokens=N)
    c = generate(pair, PROMPTS, method="speculative", temperature=0.8, top_p=0.9, seed=4, max_new_tokens=N)
    assert a.token_ids == b.token_ids and a.token_ids != c.token_ids


def test_loglikelihood_oracle_is_large_and_never_is_small(pair):
    reqs = [("Question: What is 3 + 4? Answer:", " 7"), ("def add(a, b):", "\n    return a + b")]
    ora = loglikelihood(pair, reqs)
    nev = loglikelihood(pair, reqs, router="never")
    for (ctx, cont), lo, ln in zip(reqs, ora.logprobs, nev.logprobs):
        c, x = encode(pair, ctx), encode(pair, ctx + cont)[len(encode(pair, ctx)):]
        ids = torch.tensor([c + x])
        with torch.no_grad():
            for model, got in ((pair.large, lo), (pair.small, ln)):
                logp = model(ids).logits[0, :, : pair.vocab_size].log_softmax(-1)
                want = sum(logp[len(c) - 1 + j, x[j]].item() for j in range(len(x)))
                assert got == pytest.approx(want, abs=1e-4)
    assert ora.summary["llm_call_rate"] == 1 and nev.summary["llm_call_rate"] == 0
    assert [len(t["token_id"]) for t in ora.traces] == [len(t) for t in ora.token_logprobs]


def test_loglikelihood_router_mixes_systems(pair):
    reqs = [("Natalia sold clips to 48 of her friends", " in April, and then she sold half")]
    thr = median_entropy(pair)
    mixed = loglikelihood(pair, reqs, router="entropy", threshold=thr)
    big, small = loglikelihood(pair, reqs), loglikelihood(pair, reqs, router="never")
    called = mixed.traces[0]["llm_called"]
    assert 0 < called.sum() < len(called)
    want = np.where(called, big.token_logprobs[0], small.token_logprobs[0])
    np.testing.assert_allclose(mixed.token_logprobs[0], want, atol=1e-5)


def test_proxy_alpha_zero_generates_like_large(pair):
    out = generate(pair, PROMPTS[:2], method="proxy", alpha=0.0, max_new_tokens=N)
    assert out.token_ids == [hf_greedy(pair, pair.large, p) for p in PROMPTS[:2]]


def test_skipped_tokens_are_caught_up_in_one_pass_without_recompute(pair):
    thr = median_entropy(pair)
    fed: list[int] = []
    hook = pair.large.register_forward_hook(lambda mod, args, kwargs, out: fed.append(kwargs["input_ids"].shape[1]),
                                            with_kwargs=True)
    try:
        out = generate(pair, PROMPTS[:1], router="entropy", threshold=thr, max_new_tokens=N)
    finally:
        hook.remove()
    called = out.traces[0]["llm_called"]
    assert len(fed) == int(called.sum()), "one large forward pass per System 2 call"
    last = int(np.flatnonzero(called)[-1])
    n_prompt = len(encode(pair, PROMPTS[0]))
    # every position up to the last call went through the large model exactly once
    assert sum(fed) == n_prompt + last
    assert max(fed[1:], default=1) > 1, "at least one call caught up on a skipped span"


def test_speculative_router_ends_drafts_early_and_still_equals_large(pair):
    thr = median_entropy(pair)
    fixed = generate(pair, PROMPTS, method="speculative", max_new_tokens=N)
    early = generate(pair, PROMPTS, method="speculative", router="entropy", threshold=thr, max_new_tokens=N)
    assert early.token_ids == fixed.token_ids == [hf_greedy(pair, pair.large, p) for p in PROMPTS]
    drafted = lambda o: sum(c["drafted_tokens"] for c in o.counters) / sum(c["verification_steps"] for c in o.counters)
    assert drafted(early) < drafted(fixed) <= 5


def test_unseeded_sampling_follows_torch_manual_seed(pair):
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(generate(pair, PROMPTS[:2], temperature=1.0, max_new_tokens=8).token_ids)
    assert runs[0] == runs[1]


# ------------------------------------------------------------------ speculative decoding row by row
# prompts of very different lengths (left padding from 0 to 20 tokens) that accept drafts at different rates
RAGGED = PROMPTS + [
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "The following are",
    "x",
    "Let's think step by step. First, we add",
]


@pytest.fixture(scope="module")
def ragged_threshold(pair):
    return median_entropy(pair, RAGGED, 32)


@pytest.mark.slow
@pytest.mark.parametrize("params", [{"num_draft": 1}, {"num_draft": 3}, {"num_draft": 5},
                                    {"num_draft": 5, "router": "entropy"}], ids=["k1", "k3", "k5", "entropy"])
def test_speculative_rows_equal_rows_alone(pair, ragged_threshold, params):
    # every row accepts its own drafts, so its tokens, trace (sources, acceptances) and counters are exactly
    # what it gives alone, in batches of 1, 3 (ragged 3-3-2) and 8 prompts
    kw = dict(method="speculative", max_new_tokens=32, **params)
    if params.get("router") == "entropy":
        kw["threshold"] = ragged_threshold
    alone = generate(pair, RAGGED, batch_size=1, **kw)
    for bs in (3, 8):
        batch = generate(pair, RAGGED, batch_size=bs, **kw)
        assert batch.token_ids == alone.token_ids
        assert batch.counters == alone.counters
        for got, want in zip(batch.traces, alone.traces):
            assert_same_trace(got, want)
        assert batch.summary == alone.summary
    accepted = [c["accepted_tokens"] / c["verification_steps"] for c in alone.counters]
    assert max(accepted) > min(accepted), "rows accept at different rates: lockstep would differ"


def test_compaction_keeps_output_and_bounds_the_caches(pair, monkeypatch):
    import fsgen_eval.engine.decode as decode
    from fsgen_eval.engine import state

    seen: list[tuple[int, int, int]] = []  # per round: columns, most real columns of a row, compactions so far

    def checked(st, fraction=None):
        before = st.seq.length
        state.compact(st, fraction)
        for runner in st.runners():
            assert runner.cache.get_seq_length() == runner.fed <= st.seq.length
        real = int(st.seq.mask.sum(-1).max())
        seen.append((st.seq.length, real, int(st.seq.length < before)))

    monkeypatch.setattr(decode, "compact", checked)
    kw = dict(method="speculative", num_draft=5, max_new_tokens=32)
    alone = generate(pair, RAGGED, batch_size=1, **kw)
    for fraction in (0.0, 0.25, 1.0):
        seen.clear()
        monkeypatch.setattr(state, "COMPACT_FRACTION", fraction)
        batch = generate(pair, RAGGED, batch_size=8, **kw)
        assert batch.token_ids == alone.token_ids and batch.counters == alone.counters
        for got, want in zip(batch.traces, alone.traces):
            assert_same_trace(got, want)
        compactions = sum(c for _, _, c in seen)
        if fraction == 1.0:
            assert compactions == 0
            assert max(cols - real for cols, real, _ in seen) > 4, "rejected drafts pile up uncompacted"
        else:
            assert compactions > 0
            # after each round, masked columns beyond the longest row's (plus the unfed last one) stay bounded
            assert all(cols - real <= fraction * cols + 1 for cols, real, _ in seen)


def test_eos_and_stop_string_mid_draft_end_just_that_row(pair):
    kw = dict(method="speculative", num_draft=5, max_new_tokens=32)
    free = generate(pair, RAGGED, batch_size=1, **kw)
    # a token of row 0 accepted as a draft with another accepted draft after it: ending there is mid-draft
    acc = free.traces[0]["accepted"]
    j = next(i for i in range(2, len(acc) - 1) if acc[i] == 1 and acc[i + 1] == 1)
    eos = free.token_ids[0][j]
    cfg = pair.large.generation_config
    saved = cfg.eos_token_id
    cfg.eos_token_id = [saved, eos]
    try:
        alone = generate(pair, RAGGED, batch_size=1, **kw)
        batch = generate(pair, RAGGED, batch_size=8, **kw)
    finally:
        cfg.eos_token_id = saved
    assert alone.token_ids[0] == free.token_ids[0][: free.token_ids[0].index(eos) + 1]
    assert batch.token_ids == alone.token_ids and batch.counters == alone.counters
    for got, want in zip(batch.traces, alone.traces):
        assert_same_trace(got, want)
    assert any(len(ids) > len(alone.token_ids[0]) for ids in batch.token_ids), "other rows went on"

    text = free.texts[0]
    stop = pair.tokenizer.decode(free.token_ids[0][j: j + 1]).strip() or text[len(text) // 2:][:2]
    alone = generate(pair, RAGGED, batch_size=1, stop=stop, **kw)
    batch = generate(pair, RAGGED, batch_size=8, stop=stop, **kw)
    assert alone.texts[0] == text[: text.find(stop)] and len(alone.token_ids[0]) < len(free.token_ids[0])
    assert batch.texts == alone.texts and batch.token_ids == alone.token_ids and batch.counters == alone.counters
    for got, want in zip(batch.traces, alone.traces):
        assert_same_trace(got, want)
    assert any(len(ids) > len(alone.token_ids[0]) for ids in batch.token_ids), "other rows went on"


def test_batched_router_catches_up_in_one_pass_per_column(pair):
    # when only some rows call System 2, the large model still runs once per column (catching every row up)
    thr = median_entropy(pair, RAGGED, 32, near=0.9, band=0.05)
    fed: list[int] = []
    hook = pair.large.register_forward_hook(lambda mod, args, kwargs, out: fed.append(kwargs["input_ids"].shape[1]),
                                            with_kwargs=True)
    try:
        out = generate(pair, RAGGED, router="entropy", threshold=thr, max_new_tokens=32, batch_size=8)
    finally:
        hook.remove()
    called = [t["llm_called"] for t in out.traces]
    width = max(len(c) for c in called)
    some = [any(j < len(c) and c[j] for c in called) for j in range(width)]
    every = [all(j < len(c) and c[j] for c in called if j < len(c)) for j in range(width)]
    assert len(fed) == sum(some), "one large forward pass per column where any row calls System 2"
    assert sum(some) > sum(every), "some columns call System 2 for only some rows"
    assert max(fed[1:]) > 1, "a pass catches up on the columns skipped since the last one"
