"""The acceptance profile of replayed runs: per draft length, the speed-up bound, the report's figure/table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fsgen_eval.analysis.files import Run
from fsgen_eval.analysis.report import build_report, to_html, to_markdown
from fsgen_eval.analysis.speculative import acceptance_profiles
from fsgen_eval.core.schema import RunInfo


def run_with_profile() -> Run:
    def counters(d, a, s):
        return {"drafted_tokens": d, "accepted_tokens": a, "verification_steps": s,
                "acceptance_rate": a / d, "mean_acceptance_length": 1 + a / s}

    by_k = {"1": {"per_task": {"gsm8k": counters(10, 8, 10)}}, "2": {"per_task": {"gsm8k": {
        **counters(12, 9, 6), "per_position_acceptance_rate": [0.875, 0.625], "macro_acceptance_rate": 0.7,
        "macro_mean_acceptance_length": 2.4}}}}
    fsgen = RunInfo(small="s", large="l", method="oracle", router="always",
                    speculative={"draft_lengths": by_k})
    return Run(Path("r/results_1.json"), fsgen, {"gsm8k": {}})


def test_profile_and_speedup_bound_by_hand():
    (p,) = acceptance_profiles([run_with_profile()])
    assert p.task == "gsm8k" and list(p.k) == [1, 2] and p.cost_ratio is None and p.speedup_bound() is None
    np.testing.assert_allclose(p.acceptance_rate, [0.8, 0.75])
    np.testing.assert_allclose(p.mean_acceptance_length, [1.8, 2.5])
    # k drafts at cost c each plus one verification: 1.8 / (1 * 0.1 + 1), 2.5 / (2 * 0.1 + 1)
    np.testing.assert_allclose(p.speedup_bound(0.1), [1.8 / 1.1, 2.5 / 1.2])


def test_report_shows_the_profile(tmp_path):
    pytest.importorskip("matplotlib")
    rep = build_report([run_with_profile()], cost_ratio=0.1)
    fig = next(f for f in rep.figures if "draft length" in f.title)
    head, rows = fig.data
    # per-request means and per-position rates beside the pooled ones; "–" where a run has none (k = 1)
    assert fig.png.startswith(b"\x89PNG") and ["s -> l", "gsm8k", "2", "0.7500", "0.7000", "2.500", "2.400",
                                               "0.88 0.62", "0.1", "2.08"] in rows
    assert ["s -> l", "gsm8k", "1", "0.8000", "–", "1.800", "–", "–", "0.1", "1.64"] in rows
    assert "| s -> l | gsm8k | 2 | 0.7500 | 0.7000 | 2.500 | 2.400 | 0.88 0.62 | 0.1 | 2.08 |" in to_markdown(
        rep, [f"f{i}.png" for i in range(len(rep.figures))])
    assert "<td>2.08</td>" in to_html(rep) and head[-1] == "speed-up bound"
    assert not any("draft length" in f.title for f in build_report([Run(Path("x.json"), RunInfo(
        small="s", large="l", method="oracle", router="always"), {"gsm8k": {}})]).figures)
