"""Label statistics on a tiny example computed by hand: stratum weights, necessary rates with clustered
intervals, directions, weighted AUROC, and independence of row order."""

from __future__ import annotations

import math

import pytest

from fsgen_eval.analysis import labels as A

Z = 1.959964


def _rec(doc, pos, stratum, label, direction, ent, top1, margin):
    return {"run_id": "r", "task": "t", "doc_id": doc, "position": pos, "stratum": stratum, "label": label,
            "direction": direction, "s1_entropy": ent, "s1_top1_prob": top1, "s1_margin": margin}


RUN = {"run_id": "r", "small": "/m/s", "large": "/m/l", "sample": 3, "seed": 0,
       "strata": [2, 2] + [0] * 8, "handoffs": 4, "tokens": {"t|0": 10, "t|1": 10},
       "handoffs_per_request": {"t|0": 3, "t|1": 1},
       "cost": {"labelled": 3, "s2_tokens_decoded": 30, "continuation_seconds": 2.0, "system1_seconds": 1.0,
                "system2_run_seconds": "12.0"}}
# stratum 0: both of its 2 handoffs labelled (weight 1 each); stratum 1: one of its 2 (weight 2)
RECS = [_rec(0, 0, 0, "necessary", "correct->wrong", 2.0, 0.3, 0.1),
        _rec(1, 1, 0, "neutral", None, 1.5, 0.5, 0.2),
        _rec(0, 5, 1, "necessary", "wrong->other wrong", 1.0, 0.6, 0.4)]


def test_rates_weights_and_clustered_intervals_by_hand():
    s = A.run_statistics(RUN, RECS, n_boot=100)
    # estimated necessary handoffs: doc 0 = 1 * 1 + 2 * 1 = 3, doc 1 = 0
    assert s["necessary_handoffs_estimated"] == pytest.approx(3.0)
    assert s["necessary_rate"] == pytest.approx(3 / 20)
    assert s["collaboration_rate"] == pytest.approx(4 / 20)
    assert s["necessary_per_request"] == pytest.approx(1.5)
    assert s["necessary_share"] == pytest.approx(3 / 4)  # weights 1 + 1 + 2 in all
    # delta method, requests as clusters: num = [3, 0], den = [10, 10], r = 0.15
    se = math.sqrt(((3 - 1.5) ** 2 + (0 - 1.5) ** 2) / (2 * 1)) * 2 / 20
    assert s["necessary_rate_ci"] == pytest.approx((0.15 - Z * se, 0.15 + Z * se), rel=1e-5)
    assert s["directions"] == {"correct->wrong": 1, "wrong->correct": 0, "wrong->other wrong": 1}
    assert s["strata_unsampled"] == 0


def test_weighted_auroc_by_hand():
    s = A.run_statistics(RUN, RECS, n_boot=100)
    # entropy: necessary 2.0 (w 1) and 1.0 (w 2) against neutral 1.5 (w 1): (1*1*1 + 2*1*0) / (3*1) = 1/3
    assert s["auroc"]["entropy"]["value"] == pytest.approx(1 / 3)
    # 1 - top-1: necessary 0.7 (w 1), 0.4 (w 2) vs 0.5: 1/3 again; -margin: -0.1 (w 1), -0.4 (w 2) vs -0.2: 1/3
    assert s["auroc"]["1 - top-1"]["value"] == pytest.approx(1 / 3)
    assert s["auroc"]["-margin"]["value"] == pytest.approx(1 / 3)


def test_row_order_does_not_matter_and_cost():
    a = A.run_statistics(RUN, RECS, n_boot=100)
    b = A.run_statistics(RUN, list(reversed(RECS)), n_boot=100)
    assert a == b
    assert a["cost"]["s2_tokens_per_label"] == pytest.approx(10.0)
    assert a["cost"]["seconds_per_label"] == pytest.approx(1.0)
    assert a["cost"]["all_handoffs_vs_system2_run"] == pytest.approx(4 * 1.0 / 12.0)
    assert "arith" not in A.format_markdown([a]) and "s -> l" in A.format_markdown([a])


def test_one_class_has_no_auroc():
    s = A.run_statistics(RUN, [dict(r, label="neutral", direction=None) for r in RECS], n_boot=100)
    assert s["auroc"]["entropy"] == {"value": None, "ci": None}
    assert s["necessary_rate"] == 0.0


def test_bootstrap_auroc_kernel_equals_scikit_learn():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=40), 1)  # ties included
    y = rng.random(40) < 0.4
    w = rng.integers(1, 4, 40).astype(float)
    got = A.weighted_aurocs(A.pair_matrix(scores, y), y, w[None, :])[0]
    assert got == pytest.approx(roc_auc_score(y, scores, sample_weight=w))
    lo, hi = A.auroc_ci(scores, y, w, np.arange(40) // 4, 500, 0)
    assert lo <= got <= hi
