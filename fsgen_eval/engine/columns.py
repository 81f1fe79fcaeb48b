"""The trace record's columns, once: what one model's log-probs give, and a record from both models'.

The decoding loop (``state.Recorder``), teacher-forced scoring (``engine/score.py``) and replay
(``engine/replay.py``) all build their per-token columns here, so a lockstep trace and a replayed one are
the same function of the same log-probs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fsgen_eval.core.sampling import stats
from fsgen_eval.engine.backend import chunks

STAT_FIELDS = ("argmax", "entropy", "top1_prob", "margin")  # one model's columns, without its top-K


def model_columns(logp: Tensor, topk: int = 0, with_stats: bool = True) -> dict[str, Tensor]:
    """One model's columns at ``N`` positions from its log-probs ``[N, V]``: ``argmax`` (int64), ``entropy``,
    ``top1_prob``, ``margin`` ``[N]`` (fp32; left out when not ``with_stats``), and with ``topk`` = K > 0
    ``topk_ids`` (int32) and ``topk_probs`` (fp32) ``[N, K]``, descending.

    Taken a chunk of rows at a time, so the temporaries are chunk-sized (a row's values do not depend on
    the rows beside it)."""
    parts: dict[str, list[Tensor]] = {}
    for sl in chunks(logp.shape[0], logp.shape[-1]) or [slice(0, 0)]:
        lp = logp[sl]
        cols = {"argmax": lp.argmax(-1)}
        if with_stats:
            cols.update(zip(STAT_FIELDS[1:], stats(lp)))
        if topk:
            top, ids = lp.topk(topk, -1)
            cols["topk_ids"], cols["topk_probs"] = ids.int(), top.exp().float()
        for k, v in cols.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def trace_columns(token: Tensor, source: Tensor, called: Tensor, handoff: Tensor, s1: dict[str, Tensor],
                  s2: dict[str, Tensor] | None, accepted: Tensor | None = None,
                  base_handoff: Tensor | None = None) -> dict[str, Tensor]:
    """A trace's columns ``[N]`` (top-K ``[N, K]``) from the emitted tokens, who emitted them and both
    models' :func:`model_columns` (``s2`` ``None``: System 2 never evaluated).

    System 2's statistics are NaN and its top-K -1 / NaN where it was not ``called``; ``accepted`` and
    ``base_handoff`` are -1 where not given (no speculative draft, no untuned base). System 1's statistics
    and top-K appear only where ``s1`` has them.
    """
    minus1 = torch.full_like(token, -1)
    cols = {"token_id": token, "source": source, "llm_called": called, "handoff": handoff,
            "accepted": accepted if accepted is not None else minus1,
            "base_handoff": base_handoff if base_handoff is not None else minus1}
    if "entropy" in s1:
        nan = torch.full(token.shape, math.nan, device=token.device)
        for k in STAT_FIELDS[1:]:
            cols[f"s1_{k}"] = s1[k]
            cols[f"s2_{k}"] = torch.where(called, s2[k], nan) if s2 is not None else nan
    if "topk_ids" in s1:
        ids = s1["topk_ids"]
        cols["s1_topk_ids"], cols["s1_topk_probs"] = ids, s1["topk_probs"]
        if s2 is None:
            cols["s2_topk_ids"] = torch.full_like(ids, -1, dtype=torch.int32)
            cols["s2_topk_probs"] = torch.full(ids.shape, math.nan, device=ids.device)
        else:
            cols["s2_topk_ids"] = torch.where(called[:, None], s2["topk_ids"].int(), -1)
            cols["s2_topk_probs"] = torch.where(called[:, None], s2["topk_probs"].float(), math.nan)
    return cols
