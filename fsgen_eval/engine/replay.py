"""Replay: System 2's greedy generation given, every System 1 scored against it teacher-forced in one pass.

Under the oracle with router ``always`` System 1 never changes the trajectory: the emitted tokens are the
large model's greedy tokens. So a generation made once (by any backend) is fed back through each System 1
(and, if it fits, the large model) in one forward pass per batch, and the lockstep run's trace follows:

- ``token_id`` = the trajectory's token, ``source`` = 2, ``llm_called`` = True, ``accepted`` = -1;
- ``handoff`` = System 2's token (the large model's teacher-forced argmax; without the large model, the
  emitted token itself) differs from System 1's teacher-forced argmax;
- ``s1_*`` / ``s2_*`` = the statistics of System 1's / the large model's distribution at that position.

Replay is a mode of the engine, not a second one: a model is reached only through the backend seam
(``engine/backend.py``: teacher forcing is one ``score`` or ``advance`` call with positions, a shared
prefix is fed once and ``fork``-ed over a batch), tails are decoded by the engine's loop
(``decode.decode_batch`` resumed from the given tokens, ``state.Resume``), where a generation ends is
``engine/finish.py``'s rule, the trace's columns are ``engine/columns.py``'s functions of the two models'
log-probs (as ``state.Recorder`` records them), and a draft's accepted length and room are
``engine/speculative.py``'s. A scoring-only backend (``score`` alone,
e.g. vLLM's ``prompt_logprobs``) scores every row without a shared prefix.

Greedy speculative decoding's counters follow from the same pass: a draft starting at position ``i`` is
accepted exactly while System 1's argmax equals the trajectory's next token (a draft that agrees so far has
the trajectory as its prefix, where the large model's argmax is the trajectory's token), see
:func:`speculative_counters`.

A generation that ended at a stop string is stored trimmed before it; the engine decoded a few tokens
further (until the stop string appeared), and speculative rounds look up to ``k`` tokens past the end.
:func:`complete` re-creates that tail with the large model's greedy decoding, one generation at a time (the
reference); :func:`score_and_complete` does the same for a whole run in batches, from the KV cache of the
large model's scoring pass, so the tail costs a few batched decoding steps instead of a prompt's prefill.
Both decode it in the engine's loop (:func:`_decode_tails`).

Layout of a scored batch: the prompts' longest shared token prefix (few-shot examples that are the same
for every document) is fed once per model and its cache repeated over the batch; after it each row's rest
of the prompt and its trajectory, left-padded to a common width (:func:`shared_prefix`, :func:`batch_layout`).
A causal model's outputs depend only on the tokens before them, so this changes no statistic beyond float
rounding; on lm-eval's MBPP (3-shot, the same examples for every problem) it spares 644 of a prompt's ~777
tokens. lm-eval's GSM8K draws each document's examples apart, so its prompts share nothing: they are fed
whole, right-padded from column 0 without a mask (:func:`right_padded`). The engine never imports lm_eval;
reading files is the adapter's job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from fsgen_eval.core import schema
from fsgen_eval.engine.backend import Backend
from fsgen_eval.engine.columns import STAT_FIELDS, model_columns, trace_columns  # noqa: F401 (replay's names)
from fsgen_eval.engine.finish import ends_at, finish_index, stop_window, trim_at_stop  # noqa: F401 (replay's names)
from fsgen_eval.engine.config import DecodeConfig, make_config
from fsgen_eval.engine.decode import decode_batch
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.engine.speculative import accepted, draft_room
from fsgen_eval.engine.state import Resume, positions_from_mask


@dataclass
class Trajectory:
    """One System 2 generation to replay.

    ``tokens`` is the whole trajectory the engine would have produced: the emitted tokens, the tail up to
    where it stopped (``finish`` tokens in all) and, for speculative counters, tokens past that point.
    ``emitted`` tokens (``tokens[:emitted]``) are what the lockstep run's trace holds (cut before a stop
    string); ``tail_known`` is False when no large model was there to decode the tail (the counters then
    treat the given tokens as the whole trajectory).
    """

    prompt: list[int]
    tokens: list[int]
    emitted: int
    finish: int
    max_new_tokens: int
    tail_known: bool = True


def _columns(ids: Sequence[int] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``[1, L]`` tokens, mask and positions of one unpadded row."""
    t = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
    mask = torch.ones_like(t)
    return t, mask, positions_from_mask(mask)


# ------------------------------------------------------------------------------------------ tails
def _as_is(backend: Backend, role: str, vocab_size: int) -> Backend:
    """A ``BackendFactory`` for backends already built."""
    return backend


def tail_pair(large: Backend, tokenizer: PreTrainedTokenizerBase, eos: Sequence[int]) -> ModelPair:
    """The large model's backend alone in System 1's seat: with router ``never`` the engine's loop decodes
    its greedy tokens (the large model's own seat is never fed)."""
    return ModelPair(small=large, large=large, tokenizer=tokenizer, backend=_as_is, eos=tuple(eos))


@dataclass
class _Tail:
    """One row's greedy tail: ``tokens`` so far (the given ones first), ``fin`` once the engine would have
    stopped, ``want`` = ``fin`` + the look-ahead (never past ``max_new``) once ``fin`` is known."""

    tokens: list[int]
    stop: tuple[str, ...]
    max_new: int
    lookahead: int
    fin: int | None = None
    want: int | None = None

    def set_fin(self, fin: int) -> None:
        self.fin, self.want = fin, fin + min(self.lookahead, self.max_new - fin)

    def active(self) -> bool:
        return self.want is None or len(self.tokens) < self.want


TailConfigs = dict[tuple[tuple[str, ...], int], DecodeConfig]  # (stop strings, budget) -> the tails' config


def _decode_tails(pair: ModelPair, backend: Backend, tokens: Tensor, mask: Tensor, first: Tensor,
                  tails: list[_Tail], configs: TailConfigs) -> None:
    """Extend every tail that still needs tokens with the large model's greedy ones, in the engine's loop.

    ``backend`` holds the batch's columns ``tokens``/``mask`` ``[B, L]``; ``first`` ``[B]`` is each row's next
    token (the last argmax of the pass that fed them), counted here by the finishing rule. The rows that need
    more go on in ``decode.decode_batch`` from their tokens (``state.Resume``: given tokens counted against
    the budget and the stop window; ``past_end`` = the look-ahead), in ``pair`` (:func:`tail_pair`), one call
    per (stop strings, budget) among them; ``configs`` keeps each one's config across batches.
    """
    eos = set(pair.eos_token_ids())
    groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
    for b, t in enumerate(tails):
        if not t.active():
            continue
        t.tokens.append(int(first[b]))
        if t.fin is None and ends_at(pair.tokenizer, t.tokens, len(t.tokens), eos, t.stop, t.max_new):
            t.set_fin(len(t.tokens))
        if t.active():
            groups.setdefault((t.stop, t.max_new), []).append(b)
    dev = pair.device
    for (stop, max_new), rows in groups.items():
        idx = torch.tensor(rows, device=dev)
        own = backend.fork(idx) if len(groups) > 1 else backend
        if len(groups) == 1 and len(rows) < len(tails):
            own.select(idx)
        if (stop, max_new) not in configs:
            configs[(stop, max_new)] = make_config(method="oracle", router="never", max_new_tokens=max_new,
                                                   stop=list(stop) or None, record_trace=False)
        ids = torch.cat([tokens.to(dev)[idx], first.to(dev)[idx, None]], 1)  # (b, L + 1)
        cols = torch.cat([mask.to(dev)[idx], torch.ones(len(rows), 1, dtype=mask.dtype, device=dev)], 1)
        resume = Resume(torch.tensor([len(tails[b].tokens) for b in rows]),
                        torch.tensor([tails[b].fin or 0 for b in rows]), tails[rows[0]].lookahead)
        for b, res in zip(rows, decode_batch(pair, ids, cols, configs[(stop, max_new)], small=own, resume=resume)):
            tails[b].tokens += res.emitted
            if tails[b].fin is None:
                tails[b].set_fin(res.finish)


def complete(given: list[int], prompt: list[int], tokenizer: PreTrainedTokenizerBase, eos: Sequence[int],
             stop: tuple[str, ...], max_new_tokens: int, large: Backend | None, lookahead: int = 0) -> Trajectory:
    """The engine's whole trajectory from the ``given`` (emitted, stop-trimmed) tokens, one generation alone.

    With ``large`` (the large model's backend): greedy tokens are decoded after ``given`` until the engine
    would have stopped, then ``lookahead`` more (speculative rounds verify drafts past the end), never past
    ``max_new_tokens`` — by the engine's loop (:func:`_decode_tails`). ``emitted`` is then what the engine's
    stop trimming keeps (for given tokens of a lockstep run: all of them). Without ``large`` the given tokens
    are all there is.
    """
    fin = finish_index(tokenizer, given, eos, stop, max_new_tokens)
    if large is None:
        n = len(given) if fin is None else fin
        return Trajectory(prompt, list(given[:n]), n, n, max_new_tokens, tail_known=fin is not None)
    t = _Tail(list(given[:fin]) if fin is not None else list(given), stop, max_new_tokens, lookahead)
    if fin is not None:
        t.set_fin(fin)
    if t.active():
        b = large.empty()
        ids, mask, positions = _columns(prompt + t.tokens)
        with torch.inference_mode():
            first = b.advance(ids, mask, positions, 1)[:, -1].argmax(-1)  # (1,)
            _decode_tails(tail_pair(large, tokenizer, eos), b, ids, mask, first, [t], {})
    fin = t.fin if t.fin is not None else len(t.tokens)
    emitted = len(trim_at_stop(tokenizer, t.tokens[:fin], stop)[0])
    return Trajectory(prompt, t.tokens, emitted, fin, max_new_tokens)


# ------------------------------------------------------------------------------------------ scoring
MIN_SHARED = 16  # a shared prefix shorter than this is not worth a separate pass

def shared_prefix(prompts: Sequence[Sequence[int]]) -> tuple[int, list[bool]]:
    """``(P, shares)``: the length of the token prefix worth computing once, and which prompts start with it.

    The reference is the most common opening (first ``MIN_SHARED`` tokens) — a prompt HFLM cut from the left
    shares nothing and is scored without the prefix instead of shortening everyone's. ``P`` maximises the
    positions spared (``P`` × (prompts sharing it - 1)) and leaves every sharing prompt at least one token of its
    own, so its first prediction is made after the prefix. ``P`` = 0: nothing is shared.
    """
    if not prompts:
        return 0, []
    openings = Counter(tuple(p[:MIN_SHARED]) for p in prompts)
    top = next(iter(openings.most_common(1)))[0]
    ref = next(p for p in prompts if tuple(p[:MIN_SHARED]) == top)
    lcp = []
    for p in prompts:
        n = min(len(p) - 1, len(ref))
        same = np.flatnonzero(np.asarray(p[:n]) != np.asarray(ref[:n])) if n > 0 else np.zeros(0, int)
        lcp.append(int(same[0]) if len(same) else max(n, 0))
    # computing the prefix once instead of in each of the c prompts spares (c - 1) * P positions
    best = max(sorted(set(lcp)), key=lambda v: v * (sum(x >= v for x in lcp) - 1))
    if best < MIN_SHARED or sum(x >= best for x in lcp) < 2:
        return 0, [False] * len(prompts)
    return best, [x >= best for x in lcp]


def prefix_backend(backend: Backend, prefix: Sequence[int]) -> Backend:
    """``backend``'s model with ``prefix`` fed into a cache of one row (forked over each batch)."""
    b = backend.empty()
    with torch.inference_mode():
        b.advance(*_columns(prefix), 1)
    return b


def batch_layout(trajs: Sequence[Trajectory], pad: int, prefix: int = 0) -> tuple[Tensor, Tensor, int]:
    """``[B, W]`` ids and mask of each row's ``prompt[prefix:] + tokens``, left-padded to a common width
    ``W``, and ``G`` = the most tokens of a row + 1: the last ``G`` columns predict every row's tokens (a row
    of ``n`` tokens: columns ``G - 1 - n .. G - 2`` of them), the last one the token after them."""
    seqs = [list(t.prompt[prefix:]) + list(t.tokens) for t in trajs]
    if any(len(t.prompt) <= prefix for t in trajs):
        raise ValueError("a prompt needs at least one token after the shared prefix")
    w = max(len(q) for q in seqs)
    ids = torch.full((len(trajs), w), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, q in enumerate(seqs):
        ids[b, w - len(q):] = torch.tensor(q, dtype=torch.long)
        mask[b, w - len(q):] = 1
    return ids, mask, max(len(t.tokens) for t in trajs) + 1


def right_padded(trajs: Sequence[Trajectory], pad: int) -> tuple[Tensor, int, list[int]]:
    """``[B, W]`` ids of each row's ``prompt + tokens`` from column 0, right-padded; ``K`` = the columns to
    keep (from the earliest column that predicts a token); per row the kept column predicting its first token.

    Every row starts at column 0, so no attention mask and no position ids are needed: the causal mask alone
    is right, and attention takes its causal fast path (a padding mask costs ~25 % of a CPU forward). The
    pad columns after a row's end only feed their own, unused, outputs."""
    if any(not t.prompt for t in trajs):
        raise ValueError("a prompt needs at least one token")
    seqs = [list(t.prompt) + list(t.tokens) for t in trajs]
    w = max(len(q) for q in seqs)
    ids = torch.full((len(trajs), w), pad, dtype=torch.long)
    for b, q in enumerate(seqs):
        ids[b, :len(q)] = torch.tensor(q, dtype=torch.long)
    first = min(len(t.prompt) for t in trajs) - 1
    return ids, w - first, [len(t.prompt) - 1 - first for t in trajs]


def _stats(logp: Tensor, topk: int) -> dict[str, Tensor]:
    """``model_columns`` of log-probs ``[B, G, V]``, each ``[B, G]`` (top-K ``[B, G, K]``) on the CPU."""
    b, g, v = logp.shape
    return {k: x.reshape(b, g, *x.shape[1:]).cpu() for k, x in model_columns(logp.reshape(b * g, v), topk).items()}


def _forked_pass(root: Backend | None, backend: Backend, prefix: Sequence[int], ids: Tensor, mask: Tensor,
                 g: int) -> tuple[Backend, Tensor, Tensor, Tensor]:
    """Feed a :func:`batch_layout` batch after ``prefix`` (cached once in ``root``; ``None``: no prefix) into
    a backend of its own; returns it, its log-probs ``[B, G, V]`` at the last ``G`` columns, and the whole
    batch's tokens and mask ``[B, P + W]`` (what decoding goes on from)."""
    rows = ids.shape[0]
    b = root.fork(torch.zeros(rows, dtype=torch.long)) if root is not None else backend.empty()
    p = len(prefix)
    tokens = torch.cat([torch.tensor([list(prefix)] * rows, dtype=torch.long).reshape(rows, p), ids], 1)
    full = torch.cat([torch.ones(rows, p, dtype=mask.dtype), mask], 1)  # the prefix is real in every row
    return b, b.advance(tokens, full, positions_from_mask(full), g), tokens, full


def _batches(trajs: Sequence[Trajectory], batch_size: int, share: bool = True) -> list[tuple[list[int], int]]:
    """``(rows, P)`` per batch: rows sharing the prefix of length ``P`` together, the others with ``P`` = 0,
    each group sorted by the columns it will need (so a batch pads little). ``share`` False: nothing shared."""
    p, shares = shared_prefix([t.prompt for t in trajs]) if share else (0, [False] * len(trajs))
    out = []
    for group, plen in (([i for i, s in enumerate(shares) if s], p), ([i for i, s in enumerate(shares) if not s], 0)):
        group.sort(key=lambda i: -(len(trajs[i].prompt) - plen + len(trajs[i].tokens)))
        out += [(group[s: s + batch_size], plen) for s in range(0, len(group), batch_size)]
    return out


def _row_stats(st: dict[str, Tensor], b: int, g: int, n: int) -> dict[str, np.ndarray]:
    """Row ``b``'s statistics at its ``n`` tokens (columns ``g - 1 - n .. g - 2`` of ``[B, G]``)."""
    return {k: v[b, g - 1 - n: g - 1].numpy() for k, v in st.items()}


def score_trajectories(backend: Backend, trajs: Sequence[Trajectory], pad: int, batch_size: int = 8,
                       topk: int = 0) -> list[dict[str, np.ndarray]]:
    """Teacher-forced statistics of every trajectory's tokens (``argmax``, ``entropy``, ``top1_prob``,
    ``margin`` ``[len]``; with ``topk`` also ``topk_ids``/``topk_probs`` ``[len, K]``), batches sorted by length.

    A full backend (``isinstance(backend, Backend)``) feeds a shared prefix once and forks it over each
    batch (``advance``); rows sharing nothing, and every row of a scoring-only backend, go through one
    ``score`` call per batch, right-padded from column 0 without a mask, with only the columns that
    predict a token computed (``keep``).
    """
    out: list[dict[str, np.ndarray] | None] = [None] * len(trajs)
    roots: dict[int, Backend] = {}
    with torch.inference_mode():
        # a backend whose decoding methods only refuse (vLLM's scorer) says scores_only
        share = isinstance(backend, Backend) and not getattr(backend, "scores_only", False)
        for rows, p in _batches(trajs, batch_size, share=share):
            if p == 0:  # nothing shared: rows from column 0, no mask
                ids, keep, starts = right_padded([trajs[i] for i in rows], pad)
                st = _stats(backend.score(ids, None, None, keep), topk)
                for b, (i, s) in enumerate(zip(rows, starts)):
                    out[i] = {k: v[b, s: s + len(trajs[i].tokens)].numpy() for k, v in st.items()}
                continue
            prefix = trajs[rows[0]].prompt[:p]
            if p not in roots:
                roots[p] = prefix_backend(backend, prefix)
            ids, mask, g = batch_layout([trajs[i] for i in rows], pad, p)
            st = _stats(_forked_pass(roots[p], backend, prefix, ids, mask, g)[1], topk)
            for b, i in enumerate(rows):
                out[i] = _row_stats(st, b, g, len(trajs[i].tokens))
    return out  # type: ignore[return-value]

def score_and_complete(backend: Backend, given: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
                       tokenizer: PreTrainedTokenizerBase, eos: Sequence[int], stops: Sequence[tuple[str, ...]],
                       max_new: Sequence[int], pad: int, lookahead: int = 0, batch_size: int = 8,
                       topk: int = 0) -> tuple[list[Trajectory], list[dict[str, np.ndarray]]]:
    """:func:`complete` of every generation with the large model's ``backend``, and its statistics at the
    given tokens (as :func:`score_trajectories` of them), from one scoring pass per batch.

    The tail a row needs (to where the engine would have stopped, then ``lookahead`` tokens) is decoded
    greedily from the scoring pass's cache, in batches; a row leaves the batch once it has its tail. A
    generation whose given tokens run past where the engine would have stopped goes through :func:`complete`.
    """
    n = len(given)
    tails, out = [], []
    for i in range(n):
        t = _Tail(list(given[i]), tuple(stops[i]), max_new[i], lookahead)
        fin = finish_index(tokenizer, t.tokens, eos, t.stop, t.max_new)
        if fin is not None:
            t.set_fin(fin)
        tails.append(t)
        out.append(Trajectory(list(prompts[i]), list(given[i]), len(given[i]), len(given[i]), max_new[i]))
    stats_out: list[dict[str, np.ndarray] | None] = [None] * n
    roots: dict[int, Backend | None] = {}
    pair, configs = tail_pair(backend, tokenizer, eos), {}
    with torch.inference_mode():
        for rows, p in _batches(out, batch_size):
            prefix = out[rows[0]].prompt[:p]
            if p not in roots:
                roots[p] = prefix_backend(backend, prefix) if p else None
            ids, mask, g = batch_layout([out[i] for i in rows], pad, p)
            b, logp, tokens, full = _forked_pass(roots[p], backend, prefix, ids, mask, g)
            st = _stats(logp, topk)
            for r, i in enumerate(rows):
                stats_out[i] = _row_stats(st, r, g, len(given[i]))
            _decode_tails(pair, b, tokens, full, st["argmax"][:, -1], [tails[i] for i in rows], configs)
    for i, t in enumerate(tails):
        if t.fin is not None and t.fin < len(given[i]):  # given tokens past the engine's stop: the reference path
            out[i] = complete(list(given[i]), list(prompts[i]), tokenizer, eos, t.stop, t.max_new, backend, lookahead)
            continue
        fin = t.fin if t.fin is not None else len(t.tokens)
        emitted = len(trim_at_stop(tokenizer, t.tokens[:fin], t.stop)[0])
        out[i] = Trajectory(list(prompts[i]), t.tokens, emitted, fin, t.max_new)
    # a trace keeps more tokens than were given (re-tokenized text whose stop-trimmed tokens run into the
    # tail) or the reference path was taken: those rows' statistics from their own scoring pass
    again = [i for i in range(n) if out[i].emitted > len(given[i]) or out[i].tokens[:len(given[i])] != list(given[i])]
    for i, st in zip(again, score_trajectories(backend, [out[i] for i in again], pad, batch_size, topk)):
        stats_out[i] = st
    return out, stats_out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ traces
def oracle_trace(traj: Trajectory, s1: dict[str, np.ndarray], s2: dict[str, np.ndarray] | None) -> schema.Trace:
    """The lockstep oracle/``always`` trace of the emitted tokens from both models' teacher-forced columns
    (``columns.trace_columns``, as the loop records it): System 2 emits every token and is called at each;
    a handoff is System 2's argmax (without the large model, the emitted token) against System 1's."""
    n = traj.emitted
    c1 = {k: torch.as_tensor(np.asarray(v[:n])) for k, v in s1.items()}
    c2 = {k: torch.as_tensor(np.asarray(v[:n])) for k, v in s2.items()} if s2 is not None else None
    tok = torch.as_tensor(np.asarray(traj.tokens[:n], dtype=np.int64))
    system2 = c2["argmax"] if c2 is not None else tok
    called = torch.ones(n, dtype=torch.bool)
    cols = trace_columns(tok, torch.full((n,), 2, dtype=torch.int8), called, system2 != c1["argmax"], c1, c2)
    trace = {k: cols[k].numpy().astype(schema.FIELD_DTYPES[k]) for k in schema.TOKEN_FIELDS}
    trace.update({k: cols[k].numpy() for k in schema.TOPK_FIELDS if k in cols})
    return trace


def accepted_at(match: np.ndarray, rounds_end: int, max_new_tokens: int, k: int) -> list[int]:
    """``n[g]`` for every ``g < rounds_end``: the drafts a round starting at ``g`` generated tokens accepts, by
    the loop's own rule (:func:`speculative.accepted`): draft ``i`` of it is position ``g + i`` (``match``
    ``[L]``, False past ``L``), among the ``speculative.draft_room`` drafts the round makes there."""
    m = torch.as_tensor(np.asarray(match, dtype=bool))
    m = torch.cat([m, torch.zeros(rounds_end + k, dtype=torch.bool)])
    g = torch.arange(rounds_end)
    windows = m[g[:, None] + torch.arange(k)[None]]  # (G, k): the checks of a draft starting at each g
    return accepted(windows, draft_room(torch.tensor(max_new_tokens), g, k)).tolist()


def speculative_counters(match: np.ndarray, finish: int, max_new_tokens: int, k: int) -> dict[str, Any]:
    """Greedy speculative decoding's counters at draft length ``k``, batch 1, from one teacher-forced pass.

    ``match[j]`` ``[L]``: System 1's argmax at trajectory position ``j`` equals the trajectory's token
    (positions past ``L`` count as rejections). As ``engine.speculative``: a round at ``g`` generated
    tokens drafts ``speculative.draft_room`` tokens, accepts the leading matches among them
    (:func:`accepted_at`), emits ``n + 1`` tokens; rounds go on until ``finish`` tokens are out.
    ``accepted_per_round`` lists each round's accepted count (the per-position rates and histograms of
    :func:`speculative_profile` come from it).
    """
    end = max(0, min(finish, max_new_tokens))
    acc = accepted_at(match, end, max_new_tokens, k)
    drafted = steps = 0
    g, rounds = 0, []
    while g < end:
        drafted, steps = drafted + int(draft_room(np.int64(max_new_tokens), np.int64(g), k)), steps + 1
        rounds.append(acc[g])
        g += acc[g] + 1
    return {"drafted_tokens": drafted, "accepted_tokens": sum(rounds), "verification_steps": steps,
            "accepted_per_round": rounds}


def speculative_profile(counters: Sequence[dict[str, Any]], k: int | None = None) -> dict[str, Any]:
    """Pooled counters plus ``acceptance_rate`` and ``mean_acceptance_length`` (the schema's definitions), and
    where the counters carry ``accepted_per_round`` the engines' finer metrics
    (:func:`fsgen_eval.core.spec_metrics.round_metrics`: per-position rates, histograms, per-request means)."""
    from fsgen_eval.core.spec_metrics import round_metrics

    total = {k: sum(int(c[k]) for c in counters) for k in schema.COUNTERS}
    d, a, s = total["drafted_tokens"], total["accepted_tokens"], total["verification_steps"]
    out: dict[str, Any] = {**total, "acceptance_rate": a / d if d else None,
                           "mean_acceptance_length": 1.0 + a / s if s else None}
    if counters and all("accepted_per_round" in c for c in counters):
        out.update(round_metrics([c["accepted_per_round"] for c in counters],
                                 [int(c["drafted_tokens"]) for c in counters], k))
    return out
