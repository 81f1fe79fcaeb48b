"""Outcome labels: batched continuations equal independent greedy decodings, labels equal an independent
decoding from the prefix with System 1's token swapped in, seeded stratified sampling, resume without
duplicates."""

from __future__ import annotations

import collections

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fsgen_eval.engine.continuation import continue_greedy
from fsgen_eval.experiments import label as LB

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def large(llama_pair):
    path = llama_pair[0]
    return AutoModelForCausalLM.from_pretrained(path).float().eval(), AutoTokenizer.from_pretrained(path)


def _independent(model, prefix, budget):
    with torch.no_grad():
        out = model.generate(torch.tensor([prefix]), attention_mask=torch.ones(1, len(prefix), dtype=torch.long),
                             max_new_tokens=budget, do_sample=False, pad_token_id=0)
    return out[0, len(prefix):].tolist()


def test_batched_continuations_equal_independent_greedy(large):
    model, tok = large
    prefixes = [tok.encode("Question: What is 3 + 4?"), tok.encode("def add(a, b):"), tok.encode("Natalia sold")]
    budgets = [6, 3, 0]
    got = continue_greedy(model, tok, prefixes, budgets, batch_size=2)
    for p, b, (ids, _) in zip(prefixes, budgets, got):
        ref = _independent(model, p, b) if b else []
        eos = tok.eos_token_id
        ref = ref[:ref.index(eos) + 1] if eos in ref else ref  # the engine stops after EOS
        assert ids == ref


def _setup(model, tok, budget=8):
    prompts = {0: tok.encode("Question: What is 3 + 4? Answer:"), 1: tok.encode("Weng earns $12 an hour")}
    gens = {d: _independent(model, p, budget) for d, p in prompts.items()}
    docs = {("t", d): LB.Doc(p, gens[d], budget, ()) for d, p in prompts.items()}
    # the "answer" is the generation's first 4 characters: a swap early changes it, one late does not
    target = {d: tok.decode(g)[:4] for d, g in gens.items()}

    def score(key, text):
        return float(text[:4] == target[key[1]]), text[:4]
    return prompts, gens, docs, score


def test_label_equals_independent_decoding_with_the_token_swapped(large, tmp_path):
    model, tok = large
    prompts, gens, docs, score = _setup(model, tok)
    hs = [LB.Handoff("r", d, pos, s1, gens[d][pos], len(gens[d]), "t") for d in gens for pos in (1, 4)
          for s1 in (5, 17, 40) if s1 != gens[d][pos]]
    cost = LB.label_handoffs(model, tok, hs, docs, score, tmp_path / "l.jsonl", batch_size=3)
    labels = {(r["doc_id"], r["position"], r["s1_token"]): r for r in LB.read_labels(tmp_path / "l.jsonl")}
    assert len(labels) == len(hs) == cost["labelled"]
    kinds = set()
    for h in hs:
        head = gens[h.doc_id][:h.position] + [h.s1_token]
        cont = _independent(model, prompts[h.doc_id] + head, 8 - h.position - 1)
        new = score(("t", h.doc_id), tok.decode(head + cont))
        want = LB.outcome(score(("t", h.doc_id), tok.decode(gens[h.doc_id])), new)
        got = labels[(h.doc_id, h.position, h.s1_token)]
        assert (got["label"], got["direction"]) == want
        kinds.add(want[0])
    assert kinds == {"necessary", "neutral"}  # the fixture has both: a swap that changes the end, one that does not
    assert cost["s2_tokens_decoded"] == sum(r["s2_tokens_decoded"] for r in labels.values())


def test_system1_eos_ends_the_continuation(large, tmp_path):
    model, tok = large
    _, gens, docs, score = _setup(model, tok)
    h = LB.Handoff("r", 0, 2, tok.eos_token_id, gens[0][2], 8, "t")
    LB.label_handoffs(model, tok, [h], docs, score, tmp_path / "l.jsonl")
    (rec,) = LB.read_labels(tmp_path / "l.jsonl")
    assert rec["s2_tokens_decoded"] == 0  # the engine stops at EOS: System 2 has nothing to continue


def test_killed_run_resumes_without_duplicates(large, tmp_path):
    model, tok = large
    _, gens, docs, score = _setup(model, tok)
    hs = [LB.Handoff("r", d, pos, 9, gens[d][pos], 8, "t") for d in gens for pos in range(0, 6)]
    out = tmp_path / "l.jsonl"
    LB.label_handoffs(model, tok, hs[:5], docs, score, out, batch_size=4)
    with out.open("a") as fh:
        fh.write('{"run_id": "r", "task": "t", "doc_id": 1, "posi')  # killed mid-line
    LB.label_handoffs(model, tok, hs, docs, score, out, batch_size=4)
    keys = [LB.record_key(r) for r in LB.read_labels(out)]
    assert len(keys) == len(set(keys)) == len(hs)


def test_sampling_is_seeded_and_stratified():
    hs = [LB.Handoff("r", d, p, 1, 2, 100, t) for t in ("a", "b") for d in range(5) for p in range(0, 100, 3)]
    a = LB.sample_handoffs(hs, 30, seed=4)
    assert a == LB.sample_handoffs(list(reversed(hs)), 30, seed=4)  # input order does not matter
    assert a != LB.sample_handoffs(hs, 30, seed=5)
    per = collections.Counter(LB.stratum(h.position, h.length) for h in a)
    total = collections.Counter(10 * h.position // h.length for h in hs)
    for s in range(10):  # each decile gets its share of the sample, within one (largest remainders)
        assert abs(per[s] - 30 * total[s] / len(hs)) < 1
    assert len(set(a)) == 30
    assert LB.sample_handoffs(hs, None, 0) == sorted(hs, key=lambda h: (h.task, h.doc_id, h.position))
