"""One batched, KV-cached collaborative decoding loop; speculative draft-and-verify runs beside it.

The loop returns tokens and traces as data; it never prints and never writes files.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from fsgen_eval.engine.backend import Backend
from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.core.sampling import pick
from fsgen_eval.engine.speculative import speculative_round
from fsgen_eval.engine.state import (DecodeState, Resume, RowResult, collect_rows, compact, drop_finished, init_state,
                                     make_generator)


def system2_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, s1: Tensor) -> tuple[Tensor, Tensor | None]:
    """System 2's log-probs ``[B, V]`` at the next position (the large model catches up first), and the
    untuned base's log-probs ``[B, V]`` for proxy tuning (``None`` otherwise)."""
    large = st.seq.feed(st.large, 1)[:, -1]
    base = st.seq.feed(st.small_base, 1)[:, -1] if cfg.method_spec.needs_small_base else None
    return system2_logprobs(cfg, s1, large, base), base


def system2_logprobs(cfg: DecodeConfig, s1: Tensor, large: Tensor, base: Tensor | None) -> Tensor:
    """System 2's log-probs ``[B, V]``: the method's output, normalised — unless the method hands back the
    large model's log-probs themselves (the oracle, speculative decoding): a backend returns them normalised
    already (``engine/backend.py``), and normalising again would move every value by float rounding. So the
    loop's System 2 under the oracle is the large model's log-probs, bit for bit what replay reads."""
    out = cfg.method_spec.fn(s1, large, base, **cfg.params)
    return out if out is large else out.log_softmax(-1)


def base_handoffs(called: Tensor, tok: Tensor, base: Tensor | None) -> Tensor | None:
    """FS-GEN's proxy-tuning count ``[B]`` int8: 1 where System 2's token differs from the untuned base's
    greedy token (0 where it does not or System 2 was not called); ``None`` without a base model."""
    if base is None:
        return None
    return (called & (tok != base.argmax(-1))).to(torch.int8)


def plain_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, s1: Tensor | None = None,
               called: Tensor | None = None) -> None:
    """Emit one token per row: System 2's where the router asks for it, System 1's elsewhere.

    ``s1``/``called``: System 1's log-probs ``[B, V]`` and the router's answer ``[B]`` when the caller has
    them already (``speculative_variant=fsgen``)."""
    if s1 is None:
        s1 = st.seq.feed(st.small, 1)[:, -1]  # (B, V)
    if called is None:
        called = cfg.route_at(s1, st.seq.lengths) & ~st.seq.finished
    s2, base = system2_step(st, pair, cfg, s1) if called.any() else (None, None)
    dist = torch.where(called[:, None], s2, s1) if s2 is not None else s1
    tok = pick(dist, cfg.temperature, cfg.top_k, cfg.top_p, st.generator)
    handoff = called & (tok != s1.argmax(-1))
    base_h = base_handoffs(called, tok, base)
    if base_h is None and cfg.method_spec.needs_small_base:  # proxy, System 2 not called at all
        base_h = torch.zeros_like(tok, dtype=torch.int8)
    tok = st.fin.emit(st.seq, tok)
    st.rec.add(tok, 1 + called.to(torch.int8), called, handoff, s1, s2, base_handoff=base_h)


def fsgen_speculative_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig) -> None:
    """FS-GEN's speculative decoding with a router (``speculative_variant=fsgen``; lossy).

    Where the router does not fire, System 1's token is emitted unverified; where it fires, System 1 drafts
    ``num_draft`` tokens from here and the large model verifies them (a full draft: the router does not
    end it early). Row by row: in a round where some rows verify, the others emit their unverified token
    in the round's last column, so each row gives what it gives alone (FS-GEN's loop is batch-1).
    """
    s1 = st.seq.feed(st.small, 1)[:, -1]  # (B, V)
    fire = cfg.route_at(s1, st.seq.lengths) & ~st.seq.finished
    if not bool(fire.any()):
        plain_step(st, pair, cfg, s1, fire)
        return
    st.small.rewind(st.seq.length - 1)  # the draft recomputes this position itself
    speculative_round(st, pair, replace(cfg, router="always", router_params={}), verify=fire)


# a method's registry entry names its loop (core.registry.LOOPS); each runs one round per call
ROUNDS = {"step": plain_step, "speculative": speculative_round}


def decode_batch(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig,
                 generator: torch.Generator | None = None, small: Backend | None = None,
                 resume: Resume | None = None) -> list[RowResult]:
    """Decode a left-padded batch ``input_ids``/``attention_mask`` ``[B, T]``; one ``RowResult`` per row.

    ``generator`` drives sampling; by default a new one seeded with ``cfg.seed``. ``small``: System 1's
    backend already holding the first ``small.fed`` columns of the batch (``Backend.fork`` of a prefix fed
    once); the loop feeds the rest (default: an empty cache, the whole prompt fed). ``resume``: rows that go
    on from tokens they generated already, the prompt's last columns (``state.Resume``: replay's tails).
    """
    check_topk(pair, cfg)
    st = init_state(pair, input_ids, attention_mask, cfg, generator or make_generator(pair, cfg), small, resume)
    step = choose_step(cfg)
    with torch.inference_mode():
        # a row finishes at EOS, a stop string or max_new_tokens (Finisher), then leaves the batch
        while not bool(st.seq.finished.all()):
            step(st, pair, cfg)
            drop_finished(st)
            compact(st)
    return collect_rows(pair, st, cfg)


def choose_step(cfg: DecodeConfig):
    """The loop's round for this method and router: its registered loop, or FS-GEN's lossy speculative one."""
    if cfg.router_spec.never_calls:  # System 1 alone: nothing to draft or verify
        return plain_step
    lossy = cfg.lossy and not cfg.router_spec.always_calls
    return fsgen_speculative_step if lossy else ROUNDS[cfg.method_spec.loop]


def check_topk(pair: ModelPair, cfg: DecodeConfig) -> None:
    if cfg.trace_topk > pair.vocab_size:
        raise ValueError(f"trace_topk={cfg.trace_topk} exceeds the vocabulary size {pair.vocab_size}")
