"""Router what-if on a hand-made router=always trace."""

from __future__ import annotations

import numpy as np
import pytest

from analysis_helpers import make_trace
from fsgen_eval.analysis.whatif import require_always, tradeoff_curve, tradeoff_curves


def _hand_trace():
    # entropies 0.9, 0.5, 0.5, 0.1 with handoffs at the 1st and 3rd token
    return make_trace([0.9, 0.5, 0.5, 0.1], [True, False, True, False])


def test_curve_by_hand():
    t = _hand_trace()
    c = tradeoff_curve("s1_entropy", t["s1_entropy"].astype(float), t["handoff"])
    # threshold inf: no call; 0.9: 1 of 4 tokens, 1 of 2 handoffs; 0.5: 3 of 4, 2 of 2; 0.1: all
    assert c.thresholds.tolist() == pytest.approx([np.inf, 0.9, 0.5, 0.1])
    assert c.call_rate.tolist() == [0.0, 0.25, 0.75, 1.0]
    assert c.caught.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_threshold_for_target_call_rate():
    t = _hand_trace()
    c = tradeoff_curve("s1_entropy", t["s1_entropy"].astype(float), t["handoff"])
    assert c.at_target(0.5)["threshold"] == pytest.approx(0.9)  # 0.75 would exceed the target
    assert c.at_target(0.75)["caught"] == 1.0
    assert c.at_target(0.0)["rule"] == "never call"
    with pytest.raises(ValueError, match="target call rate"):
        c.at_target(1.5)


def test_native_router_thresholds():
    t = make_trace([0.9, 0.5, 0.5, 0.1], [True, False, True, False], top1=[0.3, 0.6, 0.6, 0.9],
                   margin=[0.1, 0.2, 0.3, 0.8])
    curves = {c.signal: c for c in tradeoff_curves([t])}
    top = curves["1-s1_top1_prob"].at_target(0.5)  # 1 - top1 = 0.7, 0.4, 0.4, 0.1: only the first fits
    assert top["router"] == "max_prob" and top["router_threshold"] == pytest.approx(0.3)
    assert top["caught"] == 0.5
    mar = curves["-s1_margin"].at_target(0.5)  # margins 0.1, 0.2 are the two smallest
    assert mar["router"] == "margin" and mar["router_threshold"] == pytest.approx(0.2) and mar["call_rate"] == 0.5


def test_requires_router_always():
    t = make_trace([0.9, 0.5], [True, False], llm_called=[True, False])
    with pytest.raises(ValueError, match="1 of 2 tokens have llm_called false"):
        require_always([t])
