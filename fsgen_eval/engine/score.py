"""Teacher forcing: the method and router applied at every position of given token ids, in one pass.

Memory: at a 151936-token vocabulary a ``[B, T, V]`` fp32 tensor is 4.6 GiB at 8 x 1024 tokens, so the
pass holds as few of them as it can: log-softmax is taken in place on each model's logits, the oracle's
System 2 *is* the large model's log-probs (no copy), the router's mix is written in place, and the trace's
statistics are taken over chunks of positions. Peak: System 1's and the large model's ``[B, T, V]`` (plus
``small_base``'s and the method's output for proxy tuning / contrastive) and chunk-sized temporaries —
``benchmarks/bench_memory.py`` measures it beside lm-eval's ``hf`` path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fsgen_eval.core import schema
from fsgen_eval.core.sampling import stats
from fsgen_eval.engine.backend import chunks, log_softmax_
from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.engine.state import positions_from_mask


@dataclass
class ScoreResult:
    logprobs: Tensor  # (B, T, V) System 2's log-probs at t for token t+1 (System 1's where not called)
    trace: dict[str, np.ndarray]  # field -> (B, T), aligned with logprobs; token_id = input_ids[t+1]


def chunked_stats(logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``sampling.stats`` of ``[N, V]`` rows, a chunk at a time (its temporaries are chunk-sized)."""
    parts = [stats(logp[sl]) for sl in chunks(logp.shape[0], logp.shape[-1])]
    if not parts:
        empty = logp.new_zeros(0)
        return empty, empty, empty
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def score_batch(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig) -> ScoreResult:
    """Teacher-forced: the method and router applied at every position of ``input_ids`` ``[B, T]``."""
    from fsgen_eval.engine.decode import check_topk

    check_topk(pair, cfg)
    v, (b, t) = pair.vocab_size, input_ids.shape
    ids, mask = input_ids.to(pair.device), attention_mask.to(pair.device)
    pos = positions_from_mask(mask)
    spec = cfg.method_spec
    with torch.inference_mode():
        flat1 = pair.backends["small"].score(ids, mask, pos).reshape(-1, v)  # (B*T, V)
        if spec.speculative and not cfg.lossy:  # every token is verified unless System 2 is never asked
            called = torch.full((b * t,), not cfg.router_spec.never_calls, dtype=torch.bool, device=ids.device)
        else:
            # a router using the position gets each token's position in its row (the continuation's start
            # is not known here)
            called = cfg.route_at(flat1, pos.reshape(-1))
        s2 = large = base_greedy = None
        if called.any():
            large = pair.backends["large"].score(ids, mask, pos).reshape(-1, v)
            base = pair.backends["small_base"].score(ids, mask, pos).reshape(-1, v) if spec.needs_small_base else None
            s2 = spec.fn(flat1, large, base, **cfg.params)
            base_greedy = base.argmax(-1) if base is not None else None  # proxy tuning's FS-GEN count
            del base
            if s2 is not large:  # the oracle returns the large model's log-probs, already normalised
                s2 = log_softmax_(s2)
        trace = _score_trace(ids, flat1, s2, large, base_greedy, called, cfg)
        del large
        out = _mix(called, s2, flat1)
    return ScoreResult(out.view(b, t, v), {k: x.reshape(b, t, *x.shape[1:]) for k, x in trace.items()})


def _mix(called: Tensor, s2: Tensor | None, s1: Tensor) -> Tensor:
    """System 2's rows where called, System 1's elsewhere, written into ``s2`` (no third tensor)."""
    if s2 is None:
        return s1
    if not bool(called.all()):
        keep = (~called).nonzero().flatten()
        s2.index_copy_(0, keep, s1.index_select(0, keep))
    return s2


def _score_trace(ids: Tensor, s1: Tensor, s2: Tensor | None, large: Tensor | None, base_greedy: Tensor | None,
                 called: Tensor, cfg: DecodeConfig) -> dict[str, np.ndarray]:
    """Trace fields over flattened positions ``[B*T]``; System 2's token is its greedy prediction."""
    nxt = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1).reshape(-1)
    g1 = s1.argmax(-1)
    handoff = called & (s2.argmax(-1) != g1) if s2 is not None else torch.zeros_like(called)
    accepted = torch.full_like(nxt, -1)
    source = 1 + called.long()
    if cfg.method_spec.speculative and large is not None:
        agree = large.argmax(-1) == g1  # would System 1's greedy draft be accepted?
        accepted = torch.where(called, agree.long(), accepted)
        source = torch.where(called & agree, torch.ones_like(source), source)
    base_handoff = torch.full_like(nxt, -1)
    if cfg.method_spec.needs_small_base:  # FS-GEN's proxy count: System 2's token vs the base's greedy one
        base_handoff = (called & (s2.argmax(-1) != base_greedy) if base_greedy is not None and s2 is not None
                        else torch.zeros_like(called)).long()
    cols = {"token_id": nxt, "source": source, "llm_called": called, "handoff": handoff, "accepted": accepted,
            "base_handoff": base_handoff}
    cols.update(zip(("s1_entropy", "s1_top1_prob", "s1_margin"), chunked_stats(s1)))
    nan = torch.full(nxt.shape, math.nan, device=nxt.device)
    s2_stats = chunked_stats(s2) if s2 is not None else (nan, nan, nan)
    cols.update((k, torch.where(called, x, nan)) for k, x in zip(("s2_entropy", "s2_top1_prob", "s2_margin"),
                                                                 s2_stats))
    out = {k: cols[k].cpu().numpy().astype(schema.FIELD_DTYPES[k]) for k in schema.TOKEN_FIELDS}
    if cfg.trace_topk:
        out.update(_topk_fields(s1, s2, called, cfg.trace_topk))
    return out


def _topk_fields(s1: Tensor, s2: Tensor | None, called: Tensor, k: int) -> dict[str, np.ndarray]:
    """Top-K ids (int32) and probabilities (float32) ``[N, K]`` of both systems (System 2's -1 / NaN where
    not called), as the decoding loop's ``Recorder`` records them."""
    lp, ids = s1.topk(k, -1)
    out = {"s1_topk_ids": ids.int(), "s1_topk_probs": lp.exp().float()}
    if s2 is None:
        out["s2_topk_ids"] = torch.full_like(ids, -1, dtype=torch.int32)
        out["s2_topk_probs"] = torch.full(ids.shape, math.nan, device=ids.device)
    else:
        lp2, ids2 = s2.topk(k, -1)
        out["s2_topk_ids"] = torch.where(called[:, None], ids2.int(), -1)
        out["s2_topk_probs"] = torch.where(called[:, None], lp2.exp().float(), math.nan)
    return {name: x.cpu().numpy() for name, x in out.items()}
