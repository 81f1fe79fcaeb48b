"""Greedy speculative decoding's acceptance profile per draft length, from replayed runs (numpy only).

``fsgen-eval replay --draft-lengths 1,...,8`` (or the sweep's ``--draft-lengths``) writes, per draft length
``k``, the counters of batch-1 greedy speculative decoding into ``config["fsgen"]["speculative"]``
(``RunInfo.speculative``). With a cost ratio ``c`` (one System 1 forward pass / one large-model pass), ``k``
drafts and one verification cost ``k·c + 1`` large-model passes and emit ``mean_acceptance_length`` tokens, so the wall-time speed-up over the
large model alone is at most ``mean_acceptance_length / (k·c + 1)`` (Leviathan et al. 2023, eq. 1, with the
measured tokens per verification instead of the i.i.d. estimate).
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
                                         np.array(length, float), _ratio(run, params)))
    return out


def profile_table(profiles: list[AcceptanceProfile],
                  cost_ratio: float | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per (pair, task, k) with acceptance rate, mean acceptance length, cost ratio and
    speed-up bound, formatted (a report ``Plot``'s ``data``, drawn as a Markdown and an HTML table)."""
    head = ["pair", "task", "k", "acceptance rate", "mean acceptance length", "cost ratio", "speed-up bound"]
    rows = []
    for p in profiles:
        bound = p.speedup_bound(cost_ratio)
        c = p.cost_ratio if cost_ratio is None else cost_ratio
        for i, k in enumerate(p.k):
            rows.append([p.pair, p.task, str(k), f"{p.acceptance_rate[i]:.4f}", f"{p.mean_acceptance_length[i]:.3f}",
                         "–" if c is None else f"{c:.3g}", "–" if bound is None else f"{bound[i]:.2f}"])
    return head, rows
