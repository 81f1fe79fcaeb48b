"""FS-GEN's counting conventions beside ours: hand-checkable summaries and brute-force decoding checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsgen_eval import ModelPair, generate
from fsgen_eval.core import schema
from fsgen_eval.engine.api import encode
from fsgen_eval.engine.config import make_config
from fsgen_eval.lm_eval.traces import SummaryBook, conventions_note, format_summary, make_record

PROMPTS = ["Question: What is 3 + 4? Answer:", "def add(a, b):", "Natalia sold clips to 48 of her friends"]
N = 20


PAIR_WITH_BASE = True  # the `pair` fixture (conftest.py) loads llama_base as small_base


def _trace(**fields) -> dict[str, np.ndarray]:
    t = schema.empty_trace()
    n = len(next(iter(fields.values())))
    for k in schema.TOKEN_FIELDS:
        t[k] = np.zeros(n, schema.FIELD_DTYPES[k]) - (1 if k in ("accepted", "base_handoff") else 0)
    t["source"] = np.ones(n, np.int8)
    t.update({k: np.asarray(v, schema.FIELD_DTYPES[k]) for k, v in fields.items()})
    return t


def test_summary_conventions_by_hand():
    # 5 tokens, System 2 called at 4 of them, 2 handoffs: ours 2/5, FS-GEN's 2/4
    a = _trace(handoff=[1, 0, 0, 1, 0], llm_called=[1, 1, 0, 1, 1], accepted=[1, 0, -1, 0, 1])
    s = schema.summarize([a], [{"drafted_tokens": 6, "accepted_tokens": 2, "verification_steps": 3}])
    assert s["collaboration_rate"] == 2 / 5 and s["llm_call_rate"] == 4 / 5
    assert s["handoffs_per_call"] == 2 / 4
    assert s["rejections_per_round"] == 2 / 3  # two tokens replaced a rejected draft, three rounds
    assert s["base_collaboration_rate"] is None  # no base model
    proxy = _trace(handoff=[0, 1, 0, 0], llm_called=[1, 1, 1, 0], base_handoff=[1, 1, 0, 0])
    s = schema.summarize([proxy])
    assert s["base_collaboration_rate"] == 2 / 4 and s["collaboration_rate"] == 1 / 4
    assert s["rejections_per_round"] is None and s["handoffs_per_call"] == 1 / 3
    never = _trace(handoff=[0, 0], llm_called=[0, 0])
    assert schema.summarize([never])["handoffs_per_call"] is None
    assert set(schema.SUMMARY_KEYS) == set(s)


def test_summary_book_and_json_round_trip_keep_the_conventions():
    a = _trace(handoff=[1, 0, 0], llm_called=[1, 1, 1], accepted=[0, 1, -1], base_handoff=[1, 0, 0])
    c = {"drafted_tokens": 2, "accepted_tokens": 1, "verification_steps": 2}
    rec = make_record({"task": "x", "doc_id": 0}, a, c)
    assert rec["base_handoff"] == [True, False, False]
    book = SummaryBook()
    book.add_record(rec)
    assert book.summary()["summary"] == schema.summarize([a], [c])
    back = schema.trace_from_json(rec)
    assert back["base_handoff"].tolist() == [1, 0, 0]
    old = {k: v for k, v in rec.items() if k != "base_handoff"}  # a file from before the field
    assert schema.trace_from_json(old)["base_handoff"].tolist() == [-1, -1, -1]


def test_printed_summary_names_the_conventions():
    info = {"small": "s", "large": "l", "method": "speculative", "router": "margin", "threshold": 0.3,
            "params": {"num_draft": 5, "speculative_variant": "fsgen"},
            "summary": schema.summarize([_trace(handoff=[1, 0], llm_called=[1, 1])])}
    text = format_summary(info)
    for key in ("handoffs_per_call", "rejections_per_round", "base_collaboration_rate"):
        assert key in text
    assert "LOSSY" in text and "(p1 - p2)/2 < t" in text and "t = 0.15" in text
    plain = conventions_note({"method": "oracle", "router": "always", "params": {}})
    assert len(plain) == 1 and "LOSSY" not in plain[0]


def _argmax_along(model, ids: list[int]) -> list[int]:
    """Greedy next token at every position of ``ids`` (one teacher-forced pass)."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].argmax(-1).tolist()


def test_proxy_base_handoff_equals_a_brute_force_count(pair):
    out = generate(pair, PROMPTS, method="proxy", max_new_tokens=N)
    total = 0
    for p, ids, t in zip(PROMPTS, out.token_ids, out.traces):
        ctx = encode(pair, p)
        base = _argmax_along(pair.small_base, ctx + ids)[len(ctx) - 1: len(ctx) - 1 + len(ids)]
        expected = [int(a != b) for a, b in zip(ids, base)]
        assert t["base_handoff"].tolist() == expected
        total += sum(expected)
    assert out.summary["base_collaboration_rate"] == total / out.summary["generated_tokens"]
    oracle = generate(pair, PROMPTS[:1], max_new_tokens=4)
    assert oracle.summary["base_collaboration_rate"] is None


def test_base_handoff_is_handoff_when_the_base_is_system1(llama_pair):
    """small_base = small: System 2 is the large model and the base's greedy token is System 1's."""
    large, small = llama_pair
    same = ModelPair.load(small=str(small), large=str(large), small_base=str(small))
    out = generate(same, PROMPTS, method="proxy", max_new_tokens=N)
    for t in out.traces:
        assert t["base_handoff"].tolist() == t["handoff"].astype(int).tolist()
    s = out.summary
    assert 0 < s["collaboration_rate"] < 1 and s["base_collaboration_rate"] == s["collaboration_rate"]


def test_speculative_rejections_per_round(pair):
    out = generate(pair, PROMPTS, method="speculative", num_draft=4, max_new_tokens=N, batch_size=1)
    steps = sum(c["verification_steps"] for c in out.counters)
    rejected = sum(int((t["accepted"] == 0).sum()) for t in out.traces)
    assert 0 < rejected < steps and out.summary["rejections_per_round"] == rejected / steps
    for ids, t, c in zip(out.token_ids, out.traces, out.counters):
        if len(ids) == N:  # no EOS cut a round short: each round ends in a correction or a bonus token
            assert int((t["accepted"] == 0).sum()) + int((t["accepted"] == -1).sum()) == c["verification_steps"]


def test_bad_speculative_variant_is_refused():
    with pytest.raises(ValueError, match="speculative_variant"):
        make_config("speculative", speculative_variant="lossless")
    with pytest.raises(ValueError, match="does not use"):
        make_config("oracle", speculative_variant="fsgen")


def test_fsgen_variant_emits_system1_unverified_off_the_router(pair):
    free = generate(pair, PROMPTS, max_new_tokens=N)
    thr = float(np.median(np.concatenate([t["s1_entropy"] for t in free.traces])))
    lossy = generate(pair, PROMPTS, method="speculative", speculative_variant="fsgen", num_draft=3,
                     router="entropy", threshold=thr, max_new_tokens=N, batch_size=1)
    ours = generate(pair, PROMPTS, method="speculative", num_draft=3, router="entropy", threshold=thr,
                    max_new_tokens=N, batch_size=1)
    assert ours.summary["llm_call_rate"] == 1.0
    assert 0 < lossy.summary["llm_call_rate"] < 1
    for p, ids, t in zip(PROMPTS, lossy.token_ids, lossy.traces):
        ctx = encode(pair, p)
        small = _argmax_along(pair.small, ctx + ids)[len(ctx) - 1: len(ctx) - 1 + len(ids)]
        large = _argmax_along(pair.large, ctx + ids)[len(ctx) - 1: len(ctx) - 1 + len(ids)]
        called = t["llm_called"]
        # unverified tokens are System 1's greedy ones; verified ones are the large model's greedy ones
        assert all(ids[j] == small[j] for j in np.flatnonzero(~called))
        assert all(ids[j] == large[j] for j in np.flatnonzero(called))
        assert (t["source"][~called] == 1).all()
    # row by row: in a batch each row gives what it gives alone (some rows verify in a round, others not)
    batch = generate(pair, PROMPTS, method="speculative", speculative_variant="fsgen", num_draft=3,
                     router="entropy", threshold=thr, max_new_tokens=N, batch_size=len(PROMPTS))
    assert batch.token_ids == lossy.token_ids and batch.counters == lossy.counters
    for got, want in zip(batch.traces, lossy.traces):
        for f in ("source", "llm_called", "handoff", "accepted"):
            assert np.array_equal(got[f], want[f]), f
    assert batch.summary == lossy.summary
    # router always / never: the variant changes nothing
    for router in ("always", "never"):
        a = generate(pair, PROMPTS, method="speculative", speculative_variant="fsgen", router=router, max_new_tokens=N)
        b = generate(pair, PROMPTS, method="speculative", router=router, max_new_tokens=N)
        assert a.token_ids == b.token_ids
