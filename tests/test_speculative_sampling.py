"""Speculative sampling must produce the large model's (warped) distribution: a chi-square test over every
two-token outcome of a seven-word vocabulary, with the small model's distribution as the power check."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy import stats as sps

from fsgen_eval import ModelPair, generate
from fsgen_eval.experiments import fixtures as testing
from fsgen_eval.engine.api import encode
from fsgen_eval.core.sampling import warp

WORDS = ["a", "b", "c", "d", "e", "f", "g"]
SAMPLES = 3000


@pytest.fixture(scope="module")
def tiny_vocab_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinyvocab")
    tok = testing.word_tokenizer(d / "tok", WORDS)
    large, small = testing.build_pair(d, tok, hidden=16, heads=2, large_layers=3, init=0.8, late_scale=1.0, seed=5)
    return ModelPair.load(small=str(small), large=str(large))


def exact_two_token_probs(pair: ModelPair, model, prompt: list[int], temperature: float, top_k: int) -> dict:
    """P(first two generated tokens) under ``model``'s warped distribution; EOS first ends the row."""
    def dist(ids):
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0, -1, : pair.vocab_size].log_softmax(-1)
        return warp(logp[None], temperature, top_k).exp()[0].double()

    eos = pair.tokenizer.eos_token_id
    out = {}
    p1 = dist(prompt)
    for a in range(pair.vocab_size):
        if a == eos:
            out[(a,)] = float(p1[a])
            continue
        p2 = dist(prompt + [a])
        for b in range(pair.vocab_size):
            out[(a, b)] = float(p1[a] * p2[b])
    return out


def chi2_pvalue(counts: dict, probs: dict, n: int) -> float:
    keys = sorted(probs, key=lambda k: -probs[k])
    exp = np.array([probs[k] * n for k in keys])
    obs = np.array([counts.get(k, 0) for k in keys], dtype=float)
    big = exp >= 5  # pool sparse cells so the chi-square approximation holds
    exp_p = np.append(exp[big], exp[~big].sum())
    obs_p = np.append(obs[big], obs[~big].sum())
    if exp_p[-1] == 0:
        exp_p, obs_p = exp_p[:-1], obs_p[:-1]
    assert obs.sum() == n, "every sample falls in an enumerated outcome"
    return float(sps.chisquare(obs_p, exp_p * obs_p.sum() / exp_p.sum()).pvalue)


# batch 1 exercises multi-token acceptance; large batches rows that accept different numbers of drafts
# in the same round (their rejected drafts masked out, compacted away)
@pytest.mark.parametrize("temperature,top_k,batch_size", [(1.0, 0, 1), (1.0, 0, 50), (0.7, 4, 1000)])
def test_speculative_sampling_matches_large_distribution(tiny_vocab_pair, temperature, top_k, batch_size):
    pair = tiny_vocab_pair
    prompt = "a b c"
    ids = encode(pair, prompt)
    out = generate(pair, [prompt] * SAMPLES, method="speculative", num_draft=2, temperature=temperature,
                   top_k=top_k, max_new_tokens=2, batch_size=batch_size, seed=11)
    counts: dict = {}
    for t in out.token_ids:
        counts[tuple(t)] = counts.get(tuple(t), 0) + 1
    p_large = exact_two_token_probs(pair, pair.large, ids, temperature, top_k)
    p_small = exact_two_token_probs(pair, pair.small, ids, temperature, top_k)
    assert chi2_pvalue(counts, p_large, SAMPLES) > 1e-3
    assert chi2_pvalue(counts, p_small, SAMPLES) < 1e-6, "the test can tell the two models apart"
    s = out.summary
    assert 0 < s["acceptance_rate"] < 1
    if batch_size == 1:
        assert s["mean_acceptance_length"] > 1.2, "drafts were accepted several at a time"
