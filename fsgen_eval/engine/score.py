"""Teacher forcing: the method and router applied at every position of given token ids, in one pass.

Memory: at a 151936-token vocabulary a ``[B, T, V]`` fp32 tensor is 4.6 GiB at 8 x 1024 tokens, so the
pass holds as few of them as it can: log-softmax is taken in place on each model's logits, the oracle's
System 2 *is* the large model's log-probs (no copy), the router's mix is written in place, and the trace's
statistics are taken over chunks of positions. Peak: System 1's and the large model's ``[B, T, V]`` (plus
``small_base``'s and the method's output for proxy tuning / contrastive) and chunk-sized temporaries —
``benchmarks/bench_memory.py`` measures it beside lm-eval's ``hf`` path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fsgen_eval.core import schema
from fsgen_eval.engine.backend import log_softmax_
from fsgen_eval.engine.columns import model_columns, trace_columns
from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.engine.state import positions_from_mask


@dataclass
class ScoreResult:
    logprobs: Tensor  # (B, T, V) System 2's log-probs at t for token t+1 (System 1's where not called)
    trace: dict[str, np.ndarray]  # field -> (B, T), aligned with logprobs; token_id = input_ids[t+1]


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
    """Trace fields over flattened positions ``[B*T]`` (``columns.trace_columns``, as the loop and replay
    build them); System 2's token is its greedy prediction."""
    nxt = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1).reshape(-1)
    c1 = model_columns(s1, cfg.trace_topk)
    c2 = model_columns(s2, cfg.trace_topk) if s2 is not None else None
    g1 = c1["argmax"]
    handoff = called & (c2["argmax"] != g1) if c2 is not None else torch.zeros_like(called)
    accepted = torch.full_like(nxt, -1)
    source = 1 + called.long()
    if cfg.method_spec.speculative and large is not None:
        agree = large.argmax(-1) == g1  # would System 1's greedy draft be accepted?
        accepted = torch.where(called, agree.long(), accepted)
        source = torch.where(called & agree, torch.ones_like(source), source)
    base_handoff = torch.full_like(nxt, -1)
    if cfg.method_spec.needs_small_base:  # FS-GEN's proxy count: System 2's token vs the base's greedy one
        base_handoff = (called & (c2["argmax"] != base_greedy) if base_greedy is not None and c2 is not None
                        else torch.zeros_like(called)).long()
    cols = trace_columns(nxt, source, called, handoff, c1, c2, accepted, base_handoff)
    out = {k: cols[k].cpu().numpy().astype(schema.FIELD_DTYPES[k]) for k in schema.TOKEN_FIELDS}
    out.update({k: cols[k].cpu().numpy() for k in schema.TOPK_FIELDS if k in cols})
    return out
