"""The engines' speculative metrics from per-round accepted counts, on cases checkable by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fsgen_eval.core.spec_metrics import round_metrics, rounds_from_accepted


def test_rounds_from_a_trace_accepted_field():
    # round 1: two drafts accepted, then the large model's token after a rejection (0);
    # round 2: both drafts accepted, bonus token (-1); round 3: rejected at once; round 4 cut by a stop string
    acc = [1, 1, 0, 1, 1, -1, 0, 1]
    assert rounds_from_accepted(acc) == [2, 2, 0, 1]
    assert rounds_from_accepted([]) == []


def test_per_position_rates_histograms_and_macro_means_by_hand():
    # request A: rounds accepting 3, 0, 1 of k = 3 (drafted 9); request B: one round accepting 3 (drafted 3)
    m = round_metrics([[3, 0, 1], [3]], drafted=[9, 3], k=3)
    # position 1: rounds with n >= 1 = 3 of 4; position 2: 2 of 4; position 3: 2 of 4
    assert m["per_position_acceptance_rate"] == [0.75, 0.5, 0.5]
    assert m["accepted_length_histogram"] == [1, 1, 0, 2]
    # pooled mean acceptance length 1 + 7/4 = sum of per-position rates + 1 (vLLM's identity)
    assert sum(m["per_position_acceptance_rate"]) + 1 == pytest.approx(1 + 7 / 4)
    # macro: A 4/9, B 3/3 -> mean 13/18 (pooled 7/12 weighs A's 9 drafts more)
    assert m["macro_acceptance_rate"] == pytest.approx((4 / 9 + 1.0) / 2)
    assert m["macro_mean_acceptance_length"] == pytest.approx(((1 + 4 / 3) + (1 + 3)) / 2)
    # 4/9 = 0.44 falls in [0.4, 0.5); 1.0 in the last bin, closed at 1
    counts = m["request_acceptance_histogram"]["counts"]
    assert counts[4] == 1 and counts[9] == 1 and sum(counts) == 2


def test_a_request_that_drafted_nothing_is_left_out_of_the_macro_rate():
    m = round_metrics([[0], [2, 2]], drafted=[0, 4], k=2)
    assert m["macro_acceptance_rate"] == 1.0 and sum(m["request_acceptance_histogram"]["counts"]) == 1
    no_drafts = round_metrics([[2]], k=2)
    assert no_drafts["macro_acceptance_rate"] is None and no_drafts["request_acceptance_histogram"] is None


def test_a_round_longer_than_the_draft_length_is_refused():
    with pytest.raises(ValueError, match="more than the draft length 2"):
        round_metrics([[3]], k=2)


def test_random_rounds_keep_the_identity_and_the_ordering():
    rng = np.random.default_rng(1)
    rounds = [list(rng.integers(0, 5, rng.integers(1, 20))) for _ in range(50)]
    m = round_metrics(rounds, k=4)
    flat = [n for rs in rounds for n in rs]
    assert sum(m["per_position_acceptance_rate"]) == pytest.approx(np.mean(flat))
    rates = m["per_position_acceptance_rate"]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # a later position is accepted only after earlier ones


def test_lockstep_metrics_from_trace_records():
    from fsgen_eval.analysis.speculative import lockstep_metrics

    # two records as the trace file holds them (JSON: -1 written as null)
    recs = [{"trace": {"accepted": [1, 1, 0, 1, None]}, "drafted_tokens": 4},
            {"trace": {"accepted": [0, 0]}, "drafted_tokens": 4}]
    m = lockstep_metrics(recs, k=2)
    # rounds: [2, 1] and [0, 0]: position 1 accepted in 2 of 4 rounds, position 2 in 1 of 4
    assert m["per_position_acceptance_rate"] == [0.5, 0.25]
    assert m["macro_acceptance_rate"] == pytest.approx((3 / 4 + 0) / 2)
