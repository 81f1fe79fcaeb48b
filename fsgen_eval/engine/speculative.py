"""Speculative decoding's draft-and-verify round, beside the main loop (``engine/decode.py``).

Batched in lockstep: every row drafts the same number of tokens, the large model verifies all drafts in one
forward pass, and every row then emits ``min(accepted) + 1`` tokens — rows that accepted more emit their
own accepted drafts up to that length. Each emitted token is still distributed as the large model's (its
acceptance test only ever looked at its own prefix), and both caches stay the same length for every row,
so rejected drafts are dropped with one ``crop`` per cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.state import DecodeState
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.core.sampling import pick, warp


def draft(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, k: int) -> tuple[Tensor, Tensor]:
    """System 1 proposes up to ``k`` tokens per row.

    Drafting stops early (BiLD-style) at a position where the router asks for System 2 on any live row;
    with router ``always`` drafts have the fixed length ``k``.

    Returns drafts ``[B, d]`` and System 1's log-probs ``[B, d+1, V]`` at the d drafted positions and at
    the one after them (the bonus position), fed into System 1's cache as they are made.
    """
    early = not cfg.router_spec.always_calls  # an always-calling router means fixed-length drafts
    s1 = st.small.advance(st.seq, 1, pair.vocab_size)[:, -1]
    dists, drafts = [s1], []
    while len(drafts) < k and not (early and bool((cfg.route_at(s1, st.seq.generated) & ~st.seq.finished).any())):
        tok = pick(s1, cfg.temperature, cfg.top_k, cfg.top_p, st.generator)
        drafts.append(tok)
        st.seq.push(tok)
        s1 = st.small.advance(st.seq, 1, pair.vocab_size)[:, -1]
        dists.append(s1)
    b = st.seq.tokens.shape[0]
    x = torch.stack(drafts, 1) if drafts else st.seq.tokens.new_zeros(b, 0)
    return x, torch.stack(dists, 1)


def leading(accept: Tensor) -> Tensor:
    """Number of leading True per row of ``[B, d]`` → ``[B]``."""
    return accept.long().cumprod(-1).sum(-1)


def verify_greedy(p: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy: a draft survives while it equals the large model's argmax.

    ``p`` ``[B, d+1, V]`` large log-probs, ``x`` ``[B, d]`` drafts → (accepted count ``[B]``, the large
    model's token at the first rejected or the bonus position ``[B]``).
    """
    top = p.argmax(-1)  # (B, d+1)
    n = leading(x == top[:, : x.shape[1]])
    return n, top.gather(1, n[:, None]).squeeze(1)


def verify_sampling(p: Tensor, q: Tensor, x: Tensor, cfg: DecodeConfig, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023) on warped distributions.

    ``p``/``q`` ``[B, d+1, V]`` large/small log-probs, ``x`` ``[B, d]`` drafts drawn from warped q.
    """
    pw = warp(p, cfg.temperature, cfg.top_k, cfg.top_p).exp()
    qw = warp(q, cfg.temperature, cfg.top_k, cfg.top_p).exp()
    d = x.shape[1]
    px = pw[:, :d].gather(-1, x[..., None]).squeeze(-1)
    qx = qw[:, :d].gather(-1, x[..., None]).squeeze(-1)
    u = torch.rand(px.shape, generator=gen, device=px.device)
    # Keep draft x ~ q with probability min(1, p(x)/q(x)); after the first rejection draw from
    # norm(max(0, p − q)). Then P(emit y) = min(p,q)(y) + (1 − Σ min(p,q))·(p−q)⁺(y)/Σ(p−q)⁺ = p(y).
    n = leading(u * qx < px)
    idx = n.view(-1, 1, 1).expand(-1, 1, pw.shape[-1])
    pj, qj = pw.gather(1, idx).squeeze(1), qw.gather(1, idx).squeeze(1)
    resid = torch.where((n < d)[:, None], (pj - qj).clamp_min(0), pj)  # bonus position: plain p
    resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, pj)  # p == q exactly: nothing to correct
    return n, torch.multinomial(resid, 1, generator=gen).squeeze(1)


def speculative_round(st: DecodeState, pair: ModelPair, cfg: DecodeConfig) -> None:
    """Draft, verify in one large-model pass, emit ``min(accepted)+1`` tokens per row, crop both caches."""
    start = st.seq.length
    k = min(int(cfg.params["num_draft"]), cfg.max_new_tokens - st.seq.generated - 1)
    x, q = draft(st, pair, cfg, k)
    d = x.shape[1]
    p = st.large.advance(st.seq, d + 1, pair.vocab_size)  # (B, d+1, V): verifies all drafts at once
    n_acc, final = verify_greedy(p, x) if cfg.temperature == 0 else verify_sampling(p, q, x, cfg, st.generator)
    live = ~st.seq.finished
    st.counters[st.rows] += live.long()[:, None] * torch.stack([torch.full_like(n_acc, d), n_acc, torch.ones_like(n_acc)], 1)
    n_emit = int(n_acc[live].min()) + 1
    # positions before the last emitted one are drafts every live row accepted: keep their cache entries
    st.seq.truncate(start)
    st.small.rewind(start + n_emit - 1)
    st.large.rewind(start + n_emit - 1)
    for j in range(n_emit):
        is_draft = j < n_acc  # (B,)
        tok = torch.where(is_draft, x[:, min(j, d - 1)], final) if d else final
        accepted = torch.where(is_draft, 1, torch.where(n_acc < d, 0, -1)).to(torch.int8)
        handoff = ~is_draft & (tok != q[:, j].argmax(-1))
        source = torch.where(is_draft, 1, 2).to(torch.int8)
        tok = st.fin.emit(st.seq, tok)
        st.rec.add(tok, source, torch.ones_like(is_draft), handoff, q[:, j], p[:, j], accepted)
        if bool(st.seq.finished.all()):
            break
