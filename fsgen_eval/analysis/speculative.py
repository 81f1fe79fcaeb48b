"""Greedy speculative decoding's acceptance profile per draft length, from replayed runs (numpy only).

``fsgen-eval replay --draft-lengths 1,...,8`` (or the sweep's ``--draft-lengths``) writes, per draft length
``k``, the counters of batch-1 greedy speculative decoding into ``config["fsgen"]["speculative"]``
(``RunInfo.speculative``). With a cost ratio ``c`` (one System 1 forward pass / one large-model pass), ``k``
drafts and one verification cost ``k·c + 1`` large-model passes and emit ``mean_acceptance_length`` tokens, so the wall-time speed-up over the
large model alone is at most ``mean_acceptance_length / (k·c + 1)`` (Leviathan et al. 2023, eq. 1, with the
measured tokens per verification instead of the i.i.d. estimate).

Beside the pooled (per-token) rates the table shows the per-request (macro) means and vLLM's per-position
acceptance rates (rounds whose i-th draft was accepted / rounds; :mod:`fsgen_eval.core.spec_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsgen_eval.analysis.files import Run
from fsgen_eval.analysis.params import ParamTable


@dataclass
class AcceptanceProfile:
    """One (pair, task): per draft length ``k`` [K] the acceptance rate and mean acceptance length."""

    pair: str
    task: str
    k: np.ndarray  # [K] int
    acceptance_rate: np.ndarray  # [K]
    mean_acceptance_length: np.ndarray  # [K]
    cost_ratio: float | None  # N_small / N_large, when both are known
    # per request (macro) means beside the pooled ones, and per k the per-position acceptance rates [k]
    # (core.spec_metrics; NaN / empty for runs written before them)
    macro_acceptance_rate: np.ndarray | None = None  # [K]
    macro_mean_acceptance_length: np.ndarray | None = None  # [K]
    per_position: list[list[float]] | None = None  # K lists, the k-th of length k

    def speedup_bound(self, cost_ratio: float | None = None) -> np.ndarray | None:
        """``mean_acceptance_length / (k·c + 1)`` [K]; ``None`` without a cost ratio."""
        c = self.cost_ratio if cost_ratio is None else cost_ratio
        return None if c is None else self.mean_acceptance_length / (self.k * c + 1.0)


def _ratio(run: Run, params: ParamTable | None) -> float | None:
    if params is None:
        return None
    try:
        return params.get(run.fsgen.small) / params.get(run.fsgen.large)
    except (ValueError, KeyError, ZeroDivisionError):
        return None


def _floats(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)


def acceptance_profiles(runs: list[Run], params: ParamTable | None = None) -> list[AcceptanceProfile]:
    """Every (run, task) whose ``config["fsgen"]`` holds per-draft-length speculative counters."""
    out = []
    for run in runs:
        by_k = (run.fsgen.speculative or {}).get("draft_lengths") or {}
        if not by_k:
            continue
        ks = sorted(by_k, key=int)
        tasks = sorted({t for k in ks for t in (by_k[k].get("per_task") or {})})
        for task in tasks:
            rows = [by_k[k]["per_task"].get(task) or {} for k in ks]
            rate = [np.nan if r.get("acceptance_rate") is None else r["acceptance_rate"] for r in rows]
            length = [np.nan if r.get("mean_acceptance_length") is None else r["mean_acceptance_length"] for r in rows]
            out.append(AcceptanceProfile(run.pair, task, np.array([int(k) for k in ks]), np.array(rate, float),
                                         np.array(length, float), _ratio(run, params),
                                         _floats(rows, "macro_acceptance_rate"),
                                         _floats(rows, "macro_mean_acceptance_length"),
                                         [list(r.get("per_position_acceptance_rate") or []) for r in rows]))
    return out


def profile_table(profiles: list[AcceptanceProfile],
                  cost_ratio: float | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per (pair, task, k) with acceptance rate, mean acceptance length, cost ratio and
    speed-up bound, formatted (a report ``Plot``'s ``data``, drawn as a Markdown and an HTML table)."""
    head = ["pair", "task", "k", "acceptance rate", "per request", "mean acceptance length", "per request",
            "per-position acceptance rates", "cost ratio", "speed-up bound"]
    rows = []

    def fmt(a: np.ndarray | None, i: int, digits: int) -> str:
        return "–" if a is None or np.isnan(a[i]) else f"{a[i]:.{digits}f}"

    for p in profiles:
        bound = p.speedup_bound(cost_ratio)
        c = p.cost_ratio if cost_ratio is None else cost_ratio
        for i, k in enumerate(p.k):
            pos = (p.per_position or [[]] * len(p.k))[i]
            rows.append([p.pair, p.task, str(k), f"{p.acceptance_rate[i]:.4f}", fmt(p.macro_acceptance_rate, i, 4),
                         f"{p.mean_acceptance_length[i]:.3f}", fmt(p.macro_mean_acceptance_length, i, 3),
                         " ".join(f"{r:.2f}" for r in pos) or "–",
                         "–" if c is None else f"{c:.3g}", "–" if bound is None else f"{bound[i]:.2f}"])
    return head, rows


def lockstep_metrics(records: list[dict], k: int) -> dict:
    """The engines' metrics (:func:`fsgen_eval.core.spec_metrics.round_metrics`) of a lockstep
    ``method=speculative`` run (router ``always``, draft length ``k``) from its trace records: each record's
    rounds from its ``accepted`` field, its drafted tokens from its counters. The rounds are those of the
    tokens the trace keeps (a round cut at EOS or a stop string counts the drafts the trace holds)."""
    from fsgen_eval.core.spec_metrics import round_metrics, rounds_from_accepted

    rounds = [rounds_from_accepted([-1 if a is None else int(a) for a in r["trace"]["accepted"]]) for r in records]
    return round_metrics(rounds, [int(r.get("drafted_tokens", 0)) for r in records], k)
