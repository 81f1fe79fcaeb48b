"""Replay on tiny fp32 pairs: a teacher-forced pass equals the lockstep loop, field by field.

The lockstep runs here are the engine's own ``generate_ids`` (oracle, batched and left-padded as lm-eval's
batches are) and batch-1 greedy speculative decoding; stop strings that the random models do emit make the
stop-trimming and tail paths run.
"""

from __future__ import annotations

import numpy as np
import pytest

from fsgen_eval.core import schema
from fsgen_eval.core.spec_metrics import rounds_from_accepted
from fsgen_eval.engine import replay as rp
from fsgen_eval.engine.api import encode, generate_ids
from fsgen_eval.engine.config import make_config

PROMPTS = ["Question: What is 3 + 4? Answer:", "def add(a, b):", "Natalia sold clips to 48 of her friends in April",
           "A.", "Weng earns $12"]
N = 40
STOP = ("The",)  # the random fixture models emit it now and then: some rows stop early, some run to N
FLOATS = [k for k in schema.TOKEN_FIELDS if schema.FIELD_DTYPES[k] is np.float32]


def trajectories(pair, rows, prompts, large=True, lookahead=0):
    return [rp.complete(r.token_ids, p, pair.tokenizer, pair.eos_token_ids(), STOP, N,
                        pair.backends["large"] if large else None, lookahead) for r, p in zip(rows, prompts)]


def test_oracle_replay_equals_lockstep_trace(pair):
    prompts = [encode(pair, p) for p in PROMPTS]
    out = generate_ids(pair, prompts, make_config(method="oracle", max_new_tokens=N, stop=STOP), batch_size=3)
    lengths = [len(ids) for ids in out.token_ids]
    assert min(lengths) < N and max(lengths) == N  # both ends of a generation are exercised
    rows = [type("Row", (), {"token_ids": ids}) for ids in out.token_ids]
    trajs = trajectories(pair, rows, prompts)
    assert any(t.finish > t.emitted for t in trajs)  # a stop string's tail was decoded again
    s1 = rp.score_trajectories(pair.backends["small"], trajs, pair.pad_token_id, batch_size=2)
    s2 = rp.score_trajectories(pair.backends["large"], trajs, pair.pad_token_id, batch_size=2)
    for t, a, b, lock in zip(trajs, s1, s2, out.traces):
        got = rp.oracle_trace(t, a, b)
        for k in ("token_id", "handoff", "llm_called", "source", "accepted"):
            np.testing.assert_array_equal(got[k], lock[k], err_msg=k)
        for k in FLOATS:
            np.testing.assert_allclose(got[k], lock[k], atol=1e-5, rtol=0, err_msg=k)
        # without the large model the handoffs are the same: the oracle's token is the large model's argmax
        alone = rp.oracle_trace(t, a, None)
        np.testing.assert_array_equal(alone["handoff"], lock["handoff"])
        assert np.isnan(alone["s2_entropy"]).all()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_speculative_counters_equal_engine_batch1(pair, k):
    prompts = [encode(pair, p) for p in PROMPTS]
    oracle = generate_ids(pair, prompts, make_config(method="oracle", max_new_tokens=N, stop=STOP), batch_size=8)
    rows = [type("Row", (), {"token_ids": ids}) for ids in oracle.token_ids]
    trajs = trajectories(pair, rows, prompts, lookahead=k)
    s1 = rp.score_trajectories(pair.backends["small"], trajs, pair.pad_token_id)
    cfg = make_config(method="speculative", num_draft=k, max_new_tokens=N, stop=STOP)
    compared = 0
    for p, t, a in zip(prompts, trajs, s1):
        lock = generate_ids(pair, [p], cfg, batch_size=1)
        got = rp.speculative_counters(a["argmax"] == t.tokens, t.finish, N, k)
        assert {c: got[c] for c in schema.COUNTERS} == lock.counters[0]
        assert sum(got["accepted_per_round"]) == got["accepted_tokens"]
        assert len(got["accepted_per_round"]) == got["verification_steps"]
        # the lockstep trace's rounds (accepted 1s closed by the large model's token) are the replayed ones
        # wherever the trace holds every round whole (not cut at EOS or a stop string inside a round)
        from_trace = rounds_from_accepted(lock.traces[0]["accepted"])
        if sum(from_trace) == got["accepted_tokens"] and len(from_trace) == got["verification_steps"]:
            assert from_trace == got["accepted_per_round"]
            compared += 1
    assert compared > 0


def test_speculative_counters_by_hand():
    match = np.array([True, True, False, True, True, True, False])
    # k=2: round at 0 accepts 2 (emits 3) -> g=3: accepts 2 -> g=6: d=min(2, 8-6-1)=1, position 6 rejects
    assert rp.speculative_counters(match, 7, 8, 2) == {"drafted_tokens": 5, "accepted_tokens": 4,
                                                       "verification_steps": 3, "accepted_per_round": [2, 2, 0]}
    prof = rp.speculative_profile([rp.speculative_counters(match, 7, 8, 2)], k=2)
    assert prof["acceptance_rate"] == 4 / 5 and prof["mean_acceptance_length"] == 1 + 4 / 3
    # rounds accepting 2, 2, 0: position 1 accepted in 2 of 3 rounds, position 2 in 2 of 3
    assert prof["per_position_acceptance_rate"] == [2 / 3, 2 / 3]
    assert prof["accepted_length_histogram"] == [1, 0, 2]
    assert prof["macro_acceptance_rate"] == 4 / 5 and prof["macro_mean_acceptance_length"] == 1 + 4 / 3


def test_finish_index_mirrors_the_finisher(pair):
    tok = pair.tokenizer
    ids = tok("ab The cd")["input_ids"]
    fin = rp.finish_index(tok, ids, [], ("The",), 100)
    assert fin is not None and "The" in tok.decode(ids[:fin]) and "The" not in tok.decode(ids[:fin - 1])
    assert rp.finish_index(tok, ids[:fin - 1], [], ("The",), 100) is None
    assert rp.finish_index(tok, ids, [ids[0]], ("The",), 100) == 1  # EOS first
    assert rp.finish_index(tok, ids, [], (), 3) == 3  # max_new_tokens


SHOTS = "Question: 1 + 1? Answer: 2. Question: 2 + 2? Answer: 4. Question: 3 + 3? Answer: 6. "


@pytest.mark.parametrize("lookahead,shots", [(0, ""), (3, ""), (3, SHOTS)])
def test_batched_tails_equal_the_reference(pair, lookahead, shots):
    """score_and_complete (one scoring pass per batch, tails from its cache; with a shared few-shot prefix
    too) = complete + score_trajectories."""
    prompts = [encode(pair, shots + p) for p in PROMPTS]
    assert (rp.shared_prefix(prompts)[0] > 0) == bool(shots)
    out = generate_ids(pair, prompts, make_config(method="oracle", max_new_tokens=N, stop=STOP), batch_size=3)
    rows = [type("Row", (), {"token_ids": ids}) for ids in out.token_ids]
    ref = trajectories(pair, rows, prompts, lookahead=lookahead)
    ref_stats = rp.score_trajectories(pair.backends["large"], ref, pair.pad_token_id, batch_size=2)
    got, stats = rp.score_and_complete(pair.backends["large"], out.token_ids, prompts, pair.tokenizer,
                                       pair.eos_token_ids(), [STOP] * len(prompts), [N] * len(prompts),
                                       pair.pad_token_id, lookahead, batch_size=2)
    assert any(len(t.tokens) > len(g) for t, g in zip(got, out.token_ids))  # some tails were decoded
    for t, r, s, rs, g in zip(got, ref, stats, ref_stats, out.token_ids):
        assert (t.tokens, t.emitted, t.finish) == (r.tokens, r.emitted, r.finish)
        np.testing.assert_array_equal(s["argmax"], rs["argmax"][:len(g)])
        for k in ("entropy", "top1_prob", "margin"):
            np.testing.assert_allclose(s[k], rs[k][:len(g)], atol=1e-5, rtol=0, err_msg=k)


def test_shared_prefix_is_computed_once_and_changes_nothing(pair):
    """Prompts that open alike (few-shot examples) share a prefix; one cut from the left is scored alone."""
    prompts = [encode(pair, SHOTS + p) for p in PROMPTS] + [encode(pair, PROMPTS[0])]
    p, shares = rp.shared_prefix(prompts)
    assert p >= rp.MIN_SHARED and shares == [True] * len(PROMPTS) + [False]
    assert all(q[:p] == prompts[0][:p] and len(q) > p for q, s in zip(prompts, shares) if s)
    out = generate_ids(pair, prompts, make_config(method="oracle", max_new_tokens=N, stop=STOP), batch_size=3)
    trajs = [rp.Trajectory(q, ids, len(ids), len(ids), N) for q, ids in zip(prompts, out.token_ids)]
    shared = rp.score_trajectories(pair.backends["small"], trajs, pair.pad_token_id, batch_size=4)
    alone = [rp.score_trajectories(pair.backends["small"], [t], pair.pad_token_id)[0] for t in trajs]
    for t, a, b, lock in zip(trajs, shared, alone, out.traces):
        np.testing.assert_array_equal(a["argmax"], b["argmax"])
        np.testing.assert_allclose(a["entropy"], lock["s1_entropy"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(a["top1_prob"], b["top1_prob"], atol=1e-5, rtol=0)


def test_speculative_counters_match_a_round_by_round_count():
    """The run-length form equals counting each round's leading matches one by one, on random patterns."""
    def by_hand(match, finish, max_new, k):
        drafted = accepted = steps = g = 0
        while g < finish and g < max_new:
            d = min(k, max_new - g - 1)
            n = 0
            while n < d and g + n < len(match) and match[g + n]:
                n += 1
            drafted, accepted, steps, g = drafted + d, accepted + n, steps + 1, g + n + 1
        return {"drafted_tokens": drafted, "accepted_tokens": accepted, "verification_steps": steps}

    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(0, 30))
        match = rng.random(n) < rng.random()
        finish = int(rng.integers(0, n + 1))
        max_new, k = int(rng.integers(max(finish, 1), 40)), int(rng.integers(1, 9))
        got = rp.speculative_counters(match, finish, max_new, k)
        assert {c: got[c] for c in schema.COUNTERS} == by_hand(match, finish, max_new, k)
