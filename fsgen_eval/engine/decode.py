"""One batched, KV-cached collaborative decoding loop; speculative draft-and-verify runs beside it.

The loop returns tokens and traces as data; it never prints and never writes files.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.core.sampling import pick
from fsgen_eval.engine.speculative import speculative_round
from fsgen_eval.engine.state import DecodeState, RowResult, collect_rows, compact, drop_finished, init_state, make_generator


def system2_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, s1: Tensor) -> Tensor:
    """System 2's log-probs ``[B, V]`` at the next position (the large model catches up first)."""
    v = pair.vocab_size
    large = st.large.advance(st.seq, 1, v)[:, -1]
    base = st.small_base.advance(st.seq, 1, v)[:, -1] if cfg.method_spec.needs_small_base else None
    return cfg.method_spec.fn(s1, large, base, **cfg.params).log_softmax(-1)


def plain_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig) -> None:
    """Emit one token per row: System 2's where the router asks for it, System 1's elsewhere."""
    s1 = st.small.advance(st.seq, 1, pair.vocab_size)[:, -1]  # (B, V)
    called = cfg.route(s1) & ~st.seq.finished
    s2 = system2_step(st, pair, cfg, s1) if called.any() else None
    dist = torch.where(called[:, None], s2, s1) if s2 is not None else s1
    tok = pick(dist, cfg.temperature, cfg.top_k, cfg.top_p, st.generator)
    handoff = called & (tok != s1.argmax(-1))
    tok = st.fin.emit(st.seq, tok)
    st.rec.add(tok, 1 + called.to(torch.int8), called, handoff, s1, s2)


# a method's registry entry names its loop (core.registry.LOOPS); each runs one round per call
ROUNDS = {"step": plain_step, "speculative": speculative_round}


def decode_batch(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig,
                 generator: torch.Generator | None = None) -> list[RowResult]:
    """Decode a left-padded batch ``input_ids``/``attention_mask`` ``[B, T]``; one ``RowResult`` per row.

    ``generator`` drives sampling; by default a new one seeded with ``cfg.seed``.
    """
    st = init_state(pair, input_ids, attention_mask, cfg, generator or make_generator(pair, cfg))
    # a router that never calls System 2 leaves System 1 alone: nothing to draft or verify
    step = plain_step if cfg.router_spec.never_calls else ROUNDS[cfg.method_spec.loop]
    with torch.inference_mode():
        # a row finishes at EOS, a stop string or max_new_tokens (Finisher), then leaves the batch
        while not bool(st.seq.finished.all()):
            step(st, pair, cfg)
            drop_finished(st)
            compact(st)
    return collect_rows(pair, st, cfg)
