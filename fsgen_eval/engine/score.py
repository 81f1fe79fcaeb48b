"""Teacher forcing: the method and router applied at every position of given token ids, in one pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedModel

from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.engine.state import Recorder, positions_from_mask


@dataclass
class ScoreResult:
    logprobs: Tensor  # (B, T, V) System 2's log-probs at t for token t+1 (System 1's where not called)
    trace: dict[str, np.ndarray]  # field -> (B, T), aligned with logprobs; token_id = input_ids[t+1]


def full_logprobs(model: PreTrainedModel, ids: Tensor, mask: Tensor, vocab: int) -> Tensor:
    """Log-probs ``[B, T, vocab]`` of one uncached forward pass."""
    dev = model.get_input_embeddings().weight.device
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                position_ids=positions_from_mask(mask).to(dev), use_cache=False)
    return out.logits[..., :vocab].float().log_softmax(-1).to(ids.device)


def score_batch(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig) -> ScoreResult:
    """Teacher-forced: the method and router applied at every position of ``input_ids`` ``[B, T]``."""
    from fsgen_eval.engine.decode import check_topk

    check_topk(pair, cfg)
    v, (b, t) = pair.vocab_size, input_ids.shape
    ids, mask = input_ids.to(pair.device), attention_mask.to(pair.device)
    spec = cfg.method_spec
    with torch.inference_mode():
        s1 = full_logprobs(pair.small, ids, mask, v)  # (B, T, V)
        flat1 = s1.reshape(-1, v)
        lossy = spec.speculative and cfg.params.get("speculative_variant") == "fsgen"
        if spec.speculative and not lossy:  # every token is verified unless System 2 is never asked
            called = torch.full((b * t,), not cfg.router_spec.never_calls, dtype=torch.bool, device=ids.device)
        else:
            # a router using the position gets each token's position in its row (the continuation's start
            # is not known here)
            called = cfg.route_at(flat1, positions_from_mask(mask).reshape(-1))
        s2 = large = base = None
        if called.any():
            large = full_logprobs(pair.large, ids, mask, v).reshape(-1, v)
            base = full_logprobs(pair.small_base, ids, mask, v).reshape(-1, v) if spec.needs_small_base else None
            s2 = spec.fn(flat1, large, base, **cfg.params).log_softmax(-1)
        out = torch.where(called[:, None], s2, flat1) if s2 is not None else flat1
        trace = _score_trace(ids, flat1, s2, large, base, called, cfg)
    return ScoreResult(out.view(b, t, v), {k: x.reshape(b, t, *x.shape[1:]) for k, x in trace.items()})


def _score_trace(ids: Tensor, s1: Tensor, s2: Tensor | None, large: Tensor | None, base: Tensor | None,
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
    base_handoff = None
    if cfg.method_spec.needs_small_base:  # FS-GEN's proxy count: System 2's token vs the base's greedy one
        base_handoff = (called & (s2.argmax(-1) != base.argmax(-1)) if base is not None
                        else torch.zeros_like(called)).to(torch.int8)
    rec = Recorder(True, torch.arange(len(nxt), device=ids.device), cfg.trace_topk)
    rec.add(nxt, source, called, handoff, s1, s2, accepted, base_handoff=base_handoff)
    return {k: v[:, 0] for k, v in rec.finish(len(nxt), ids.device).items()}
