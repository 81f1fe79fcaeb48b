"""Speculative decoding's draft-and-verify round, beside the main loop (``engine/decode.py``).

Row by row in a batch (as vLLM's batched speculative decoding and BASS, Qian et al. 2024): each row drafts
until its own router asks for System 2 or its draft is full, the large model verifies every row's drafts in
one forward pass, and each row emits its own accepted drafts plus one token of the large model's. A row
that accepted fewer drafts than another masks its rejected ones out of the sequence (attention and
position ids skip them) and goes on from its true prefix; columns no row accepted are cropped off both
caches, and ``state.compact`` squeezes the masked ones out once they take up too much. So every row's
tokens, trace and counters are what it gives alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.state import DecodeState
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.core.sampling import pick, warp


def ends_draft(cfg: DecodeConfig, s1: Tensor, position: Tensor) -> Tensor:
    """Rows ``[B]`` whose router asks for System 2 at System 1's log-probs ``s1`` ``[B, V]``: their draft
    ends here (BiLD-style); an always-calling router means full-length drafts. ``position`` ``[B]``: tokens
    each row has generated before this one (a learned router may use it)."""
    if cfg.router_spec.always_calls:
        return torch.zeros(s1.shape[0], dtype=torch.bool, device=s1.device)
    return cfg.route_at(s1, position)


def draft(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, room: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """System 1 proposes up to ``room`` ``[B]`` tokens per row, each row until its own router stops it.

    A draft column is real for the rows still drafting and masked for the others. Returns drafts ``[B, d]``
    (row r's first ``n[r]`` are real), their counts ``n`` ``[B]``, and System 1's log-probs ``[B, d+1, V]``
    at each row's drafted positions and the one after its last draft (row r's first ``n[r] + 1``), fed
    into System 1's cache as they are made.
    """
    s1 = st.seq.feed(st.small, 1)[:, -1]
    n = torch.zeros_like(room)
    going = ~st.seq.finished & (room > 0) & ~ends_draft(cfg, s1, st.seq.lengths)
    dists, drafts = [s1], []
    while bool(going.any()):
        tok = torch.where(going, pick(s1, cfg.temperature, cfg.top_k, cfg.top_p, st.generator), st.fin.pad)
        drafts.append(tok)
        st.seq.push(tok, going)
        n += going.long()
        s1 = st.seq.feed(st.small, 1)[:, -1]
        dists.append(s1)
        going &= (n < room) & ~ends_draft(cfg, s1, st.seq.lengths + n)
    x = torch.stack(drafts, 1) if drafts else st.seq.tokens.new_zeros(len(room), 0)
    return x, n, torch.stack(dists, 1)


def draft_room(max_new_tokens, generated, num_draft: int):
    """How many tokens a round drafts at ``generated`` tokens out (a tensor ``[B]`` or a numpy integer):
    up to ``num_draft``, leaving room for the large model's token within ``max_new_tokens``. Replay's
    counters (``engine/replay.py``) use the same rule."""
    return (max_new_tokens - generated - 1).clip(0, num_draft)


def leading(accept: Tensor) -> Tensor:
    """Number of leading True per row of ``[B, d]`` → ``[B]``."""
    return accept.long().cumprod(-1).sum(-1)


def drafted(x: Tensor, n: Tensor) -> Tensor:
    """``[B, d]`` True at each row's real drafts (the first ``n`` ``[B]``)."""
    return torch.arange(x.shape[1], device=x.device)[None] < n[:, None]


def accepted(agree: Tensor, n: Tensor) -> Tensor:
    """Drafts accepted per row ``[B]``: the leading True of ``agree`` ``[B, d]`` (draft j passed its check)
    among each row's first ``n`` ``[B]`` drafts. The one acceptance count of greedy and sampled verification
    and of replay's counters (``engine/replay.py``)."""
    return leading(agree & drafted(agree, n))


def verify_greedy(p: Tensor, x: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy: a draft survives while it equals the large model's argmax.

    ``p`` ``[B, d+1, V]`` large log-probs, ``x`` ``[B, d]`` drafts of which row r's first ``n[r]`` are real →
    (accepted count ``[B]``, the large model's token at the first rejected or the bonus position ``[B]``).
    """
    top = p.argmax(-1)  # (B, d+1)
    acc = accepted(x == top[:, : x.shape[1]], n)
    return acc, top.gather(1, acc[:, None]).squeeze(1)


def verify_sampling(p: Tensor, q: Tensor, x: Tensor, n: Tensor, cfg: DecodeConfig,
                    gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023) on warped distributions.

    ``p``/``q`` ``[B, d+1, V]`` large/small log-probs, ``x`` ``[B, d]`` drafts drawn from warped q, row r's
    first ``n[r]`` real.
    """
    pw = warp(p, cfg.temperature, cfg.top_k, cfg.top_p).exp()
    qw = warp(q, cfg.temperature, cfg.top_k, cfg.top_p).exp()
    d = x.shape[1]
    px = pw[:, :d].gather(-1, x[..., None]).squeeze(-1)
    qx = qw[:, :d].gather(-1, x[..., None]).squeeze(-1)
    u = torch.rand(px.shape, generator=gen, device=px.device)
    # Keep draft x ~ q with probability min(1, p(x)/q(x)); after the first rejection draw from
    # norm(max(0, p − q)). Then P(emit y) = min(p,q)(y) + (1 − Σ min(p,q))·(p−q)⁺(y)/Σ(p−q)⁺ = p(y).
    acc = accepted(u * qx < px, n)
    idx = acc.view(-1, 1, 1).expand(-1, 1, pw.shape[-1])
    pj, qj = pw.gather(1, idx).squeeze(1), qw.gather(1, idx).squeeze(1)
    resid = torch.where((acc < n)[:, None], (pj - qj).clamp_min(0), pj)  # bonus position: plain p
    resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, pj)  # p == q exactly: nothing to correct
    return acc, torch.multinomial(resid, 1, generator=gen).squeeze(1)


def speculative_round(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, verify: Tensor | None = None) -> None:
    """Draft, verify in one large-model pass, emit each row's accepted drafts and one large-model token.

    ``verify`` ``[B]`` bool (FS-GEN's lossy variant, ``engine/decode.py``): rows where it is False draft
    nothing and emit System 1's own token, unverified, in the round's last column; default: every row."""
    start = st.seq.length
    live = ~st.seq.finished
    # a row's draft leaves room for the large model's token within its max_new_tokens
    room = draft_room(cfg.max_new_tokens, st.seq.lengths, int(cfg.params["num_draft"]))
    if verify is not None:
        room = torch.where(verify, room, 0)
    x, n_draft, q = draft(st, pair, cfg, room)
    p = st.seq.feed(st.large, x.shape[1] + 1)  # (B, d+1, V): verifies all drafts at once
    if cfg.temperature == 0:
        n_acc, final = verify_greedy(p, x, n_draft)
    else:
        n_acc, final = verify_sampling(p, q, x, n_draft, cfg, st.generator)
    checked = live if verify is None else live & verify
    if verify is not None:  # unverified rows: no draft, so q[:, 0] is System 1 at their next position
        final = torch.where(verify, final, pick(q[:, 0], cfg.temperature, cfg.top_k, cfg.top_p, st.generator))
    st.counters[st.rows] += checked.long()[:, None] * torch.stack([n_draft, n_acc, torch.ones_like(n_acc)], 1)
    emit_round(st, x, n_draft, n_acc, final, q, p, start, live, None if verify is None else verify)


def emit_round(st: DecodeState, x: Tensor, n_draft: Tensor, n_acc: Tensor, final: Tensor, q: Tensor, p: Tensor,
               start: int, live: Tensor, verified: Tensor | None = None) -> None:
    """Keep each row's accepted drafts, append the large model's tokens ``final`` ``[B]`` as one column, and
    count and record row r's ``n_acc[r] + 1`` tokens in order (EOS or a stop string ends just that row).

    ``verified`` ``[B]`` (default every row): where False, ``final`` is System 1's unverified token
    (source 1, System 2 not called)."""
    called = torch.ones_like(live) if verified is None else verified
    m = int(n_acc[live].max())  # columns past start + m hold drafts no row accepted: crop them off
    st.seq.truncate(start + m)
    st.small.rewind(start + m)
    st.large.rewind(start + m)
    st.seq.reject(start, n_acc)
    st.seq.push(final, live)
    for j in range(m + 1):
        is_draft = j < n_acc  # (B,)
        tok = torch.where(is_draft, x[:, min(j, x.shape[1] - 1)], final) if x.shape[1] else final
        # row r's j-th token ends at column start + j + 1 (a draft) or after the appended column (final)
        end = torch.where(is_draft, start + j + 1, st.seq.length)
        emitting = live & (j <= n_acc)
        accepted = torch.where(is_draft, 1, torch.where(n_acc < n_draft, 0, -1)).to(torch.int8)
        handoff = ~is_draft & called & (tok != q[:, j].argmax(-1))
        source = torch.where(is_draft | ~called, 1, 2).to(torch.int8)
        tok = st.fin.account(st.seq, tok, emitting, end)
        st.rec.add(tok, source, called, handoff, q[:, j], p[:, j], accepted, emitted=emitting)
