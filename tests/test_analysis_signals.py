"""AUROC on hand-computed cases, pooling of llm_called tokens, distributions, position rates, the CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from analysis_helpers import make_trace, random_traces, write_run
from fsgen_eval.analysis.signals import auroc, called_tokens, rate_by_decile, rate_by_position, summarize_signal
from fsgen_eval.cli import main


@pytest.mark.parametrize("scores, labels, expected", [
    ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),     # perfectly separated
    ([0.8, 0.9, 0.1, 0.2], [0, 0, 1, 1], 0.0),     # perfectly reversed
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),     # all tied: every pair counts 1/2
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),   # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>both -> 3/4
    ([1.0, 1.0, 2.0], [0, 1, 1], 0.75),            # one tie (1/2) and one win (1) over 2 pairs
])
def test_auroc_hand_cases(scores, labels, expected):
    assert auroc(np.array(scores), np.array(labels, bool)) == pytest.approx(expected)


def test_auroc_matches_pair_count_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, 30).astype(float)  # many ties
    y = rng.random(30) < 0.4
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
    assert auroc(s, y) == pytest.approx(np.mean(pairs))


def test_auroc_undefined_without_both_classes():
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))


def test_only_llm_called_tokens_are_used():
    # 4 tokens, System 2 evaluated at the 2nd and 4th only; the 1st token's (undefined) handoff is ignored
    t = make_trace([0.1, 0.2, 0.3, 0.4], [True, True, False, False], llm_called=[False, True, False, True])
    tok = called_tokens([t])
    assert tok.n_tokens == 4 and tok.n_called == 2
    assert tok.handoff.tolist() == [True, False]
    assert tok.scores["s1_entropy"].tolist() == pytest.approx([0.2, 0.4])
    assert tok.position.tolist() == [1, 3]


def test_signal_orientation():
    t = make_trace([0.5], [True], top1=[0.7], margin=[0.3])
    tok = called_tokens([t])
    assert tok.scores["1-s1_top1_prob"][0] == pytest.approx(0.3)
    assert tok.scores["-s1_margin"][0] == pytest.approx(-0.3)


def test_rate_by_decile_and_position_by_hand():
    # one generation of 10 tokens, handoffs at the first and last: deciles 0 and 9 have rate 1
    t = make_trace([0.1] * 10, [True] + [False] * 8 + [True])
    rate, count = rate_by_decile(called_tokens([t]))
    assert count.tolist() == [1] * 10
    assert rate.tolist() == [1.0] + [0.0] * 8 + [1.0]
    # absolute positions with 4 bins: the last bin pools positions 3..9 (1 handoff in 7 tokens)
    rate, count = rate_by_position(called_tokens([t]), 4)
    assert count.tolist() == [1, 1, 1, 7] and rate[3] == pytest.approx(1 / 7)


def test_decile_of_a_short_generation():
    # 5 tokens: position i is in decile floor(10 i / 5) = 0, 2, 4, 6, 8; the odd deciles are empty (NaN)
    rate, count = rate_by_decile(called_tokens([make_trace([0.1] * 5, [False, True, False, False, False])]))
    assert count.tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert rate[2] == 1.0 and np.isnan(rate[1])


def test_summarize_signal_distributions():
    s = summarize_signal("x", np.array([1.0, 2.0, 3.0, 10.0, 20.0, np.nan]),
                         np.array([False, False, False, True, True, True]), bins=4)
    assert s.n_handoff == 2 and s.n_agree == 3  # the NaN score is dropped
    assert s.quantiles_agree[2] == pytest.approx(2.0) and s.quantiles_handoff[2] == pytest.approx(15.0)
    assert s.hist_agree.sum() == 3 and s.hist_handoff.sum() == 2 and s.auroc == 1.0


def test_analyze_cli(tmp_path, capsys):
    folder = write_run(tmp_path, "s", "l", traces={"gsm8k": random_traces(6, 40, seed=1)})
    assert main(["analyze", str(folder), "--json", "--target-call-rate", "0.3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_called"] == res["n_tokens"] == 240
    ent = next(s for s in res["signals"] if s["signal"] == "s1_entropy")
    assert ent["auroc"] > 0.6  # handoffs were drawn more often at high entropy
    assert len(res["by_decile"]["rate"]) == 10
    at = {t["signal"]: t for t in res["whatif"]["at_target"]}
    assert at["s1_entropy"]["call_rate"] <= 0.3 and at["s1_entropy"]["caught"] > 0.3
    assert main(["analyze", str(folder)]) == 0
    assert "llm_called" in capsys.readouterr().out
    assert main(["analyze", str(folder), "--request-type", "loglikelihood"]) == 2  # all are generate_until
    assert "no trace records of request type 'loglikelihood'" in capsys.readouterr().err


def test_analyze_cli_skips_whatif_for_routed_traces(tmp_path, capsys):
    folder = write_run(tmp_path, "s", "l", router="entropy", threshold=1.0,
                       traces={"gsm8k": random_traces(4, 30, seed=2, router="entropy")})
    assert main(["analyze", str(folder), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_called"] < res["n_tokens"] and "router=always" in res["whatif"]["skipped"]
    assert main(["analyze", str(folder), "--target-call-rate", "0.2"]) == 2
    assert "router=always" in capsys.readouterr().err
