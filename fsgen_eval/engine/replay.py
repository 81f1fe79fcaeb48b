"""Replay: System 2's greedy generation given, every System 1 scored against it teacher-forced in one pass.

Under the oracle with router ``always`` System 1 never changes the trajectory: the emitted tokens are the
large model's greedy tokens. So a generation made once (by any backend) is fed back through each System 1
(and, if it fits, the large model) in one forward pass per batch, and the lockstep run's trace follows:

- ``token_id`` = the trajectory's token, ``source`` = 2, ``llm_called`` = True, ``accepted`` = -1;
- ``handoff`` = System 2's token (the large model's teacher-forced argmax; without the large model, the
  emitted token itself) differs from System 1's teacher-forced argmax;
- ``s1_*`` / ``s2_*`` = the statistics of System 1's / the large model's distribution at that position.

Greedy speculative decoding's counters follow from the same pass: a draft starting at position ``i`` is
accepted exactly while System 1's argmax equals the trajectory's next token (a draft that agrees so far has
the trajectory as its prefix, where the large model's argmax is the trajectory's token), see
:func:`speculative_counters`.

A generation that ended at a stop string is stored trimmed before it; the engine decoded a few tokens
further (until the stop string appeared), and speculative rounds look up to ``k`` tokens past the end.
:func:`complete` re-creates that tail with the large model's greedy decoding. Layout of a scored batch:
prompts left-padded to a common width, trajectories right-padded after them — the columns the lockstep
loop would have had. The engine never imports lm_eval; reading files is the adapter's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fsgen_eval.core import schema
from fsgen_eval.core.sampling import stats
from fsgen_eval.engine.runner import Runner
from fsgen_eval.engine.state import positions_from_mask, trim_at_stop

STAT_FIELDS = ("argmax", "entropy", "top1_prob", "margin")


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


# ------------------------------------------------------------------------------------------ finishing
def stop_window(stop: Sequence[str]) -> int:
    """Tokens the engine decodes to look for a stop string (as ``state.Finisher``)."""
    return max((len(s.encode()) for s in stop), default=0) + 1


def finish_index(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], eos: Sequence[int],
                 stop: Sequence[str], max_new_tokens: int) -> int | None:
    """Where the engine's ``Finisher`` ends a row that emits ``ids``: the number of tokens emitted (EOS or
    the token completing a stop string included), or ``None`` if ``ids`` end before that."""
    w, eos_set = stop_window(stop), set(eos)
    for j, tok in enumerate(ids):
        n = j + 1
        if tok in eos_set:
            return n
        if stop:
            text = tokenizer.decode(list(ids[max(0, n - w): n]), skip_special_tokens=True)
            if any(s in text for s in stop):
                return n
        if n >= max_new_tokens:
            return n
    return None


def greedy_extend(model: PreTrainedModel, vocab: int, prefix: list[int], n: int,
                  done: Callable[[list[int]], bool] | None = None) -> list[int]:
    """Up to ``n`` greedy tokens of ``model`` after ``prefix`` (batch 1, KV-cached); stops early once
    ``done(new_tokens)`` is true."""
    runner = Runner.new(model)  # only for its device and forward()'s keyword names
    dev, cache = runner.device, runner.cache
    feed, new = torch.tensor([prefix], device=dev), []
    with torch.inference_mode():
        while len(new) < n:
            out = model(input_ids=feed, use_cache=True, **{runner.cache_kw: cache})
            tok = int(out.logits[0, -1, :vocab].argmax())
            new.append(tok)
            if done is not None and done(new):
                break
            feed = torch.tensor([[tok]], device=dev)
    return new


def complete(given: list[int], prompt: list[int], tokenizer: PreTrainedTokenizerBase, eos: Sequence[int],
             stop: tuple[str, ...], max_new_tokens: int, large: PreTrainedModel | None, vocab: int,
             lookahead: int = 0) -> Trajectory:
    """The engine's whole trajectory from the ``given`` (emitted, stop-trimmed) tokens.

    With ``large``: greedy tokens are decoded after ``given`` until the engine would have stopped, then
    ``lookahead`` more (speculative rounds verify drafts past the end), never past ``max_new_tokens``.
    ``emitted`` is then what the engine's stop trimming keeps (for given tokens of a lockstep run: all of
    them). Without ``large`` the given tokens are all there is.
    """
    fin = finish_index(tokenizer, given, eos, stop, max_new_tokens)
    if large is None:
        n = len(given) if fin is None else fin
        return Trajectory(prompt, list(given[:n]), n, n, max_new_tokens, tail_known=fin is not None)
    tokens = list(given[:fin]) if fin is not None else list(given)
    if fin is None and len(tokens) < max_new_tokens:
        def done(new: list[int]) -> bool:
            return finish_index(tokenizer, tokens + new, eos, stop, max_new_tokens) is not None
        tokens += greedy_extend(large, vocab, prompt + tokens, max_new_tokens - len(tokens), done)
    fin = finish_index(tokenizer, tokens, eos, stop, max_new_tokens) or len(tokens)
    emitted = len(trim_at_stop(tokenizer, tokens[:fin], stop)[0])
    extra = min(lookahead, max_new_tokens - fin)
    if extra > 0:
        tokens += greedy_extend(large, vocab, prompt + tokens, extra)
    return Trajectory(prompt, tokens, emitted, fin, max_new_tokens)


# ------------------------------------------------------------------------------------------ scoring
def batch_layout(trajs: Sequence[Trajectory], pad: int) -> tuple[Tensor, Tensor, int]:
    """``[B, P + G - 1]`` ids and mask: prompts left-padded to ``P``, trajectories right-padded to ``G``
    (the last token is only predicted, never fed). Returns ``(ids, mask, G)``."""
    p = max(len(t.prompt) for t in trajs)
    g = max(max(len(t.tokens) for t in trajs), 1)
    ids = torch.full((len(trajs), p + g), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, t in enumerate(trajs):
        seq = t.prompt + t.tokens
        ids[b, p - len(t.prompt): p - len(t.prompt) + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, p - len(t.prompt): p - len(t.prompt) + len(seq)] = 1
    return ids[:, :-1], mask[:, :-1], g


def position_stats(model: PreTrainedModel, ids: Tensor, mask: Tensor, g: int, vocab: int,
                   chunk: int = 256, topk: int = 0) -> dict[str, Tensor]:
    """``argmax``, ``entropy``, ``top1_prob``, ``margin`` ``[B, G]`` of ``model``'s next-token distribution at
    the last ``G`` positions of ``ids`` ``[B, T]`` (those that predict the trajectory); with ``topk`` = K > 0
    also ``topk_ids`` (int32) and ``topk_probs`` (float32) ``[B, G, K]``, descending, as ``trace_topk`` records.

    Only the ``G`` positions' logits are computed (``logits_to_keep``), and the statistics are taken over
    chunks of positions, so the peak is the ``[B, G, V]`` logits plus one ``[B, chunk, V]`` temporary.
    """
    runner = Runner.new(model)
    dev = runner.device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False,
                       position_ids=positions_from_mask(mask).to(dev), **{runner.keep_kw: g}).logits[..., :vocab]
        out = {k: [] for k in STAT_FIELDS + (("topk_ids", "topk_probs") if topk else ())}
        for s in range(0, g, chunk):
            logp = logits[:, s: s + chunk].float().log_softmax(-1)  # (B, c, V)
            ent, top1, margin = stats(logp)
            for k, v in zip(STAT_FIELDS, (logp.argmax(-1), ent, top1, margin)):
                out[k].append(v.cpu())
            if topk:
                lp, top_ids = logp.topk(topk, -1)  # (B, c, K)
                out["topk_ids"].append(top_ids.int().cpu())
                out["topk_probs"].append(lp.exp().cpu())
            del logp
        del logits
    return {k: torch.cat(v, 1) for k, v in out.items()}


def score_trajectories(model: PreTrainedModel, trajs: Sequence[Trajectory], vocab: int, pad: int,
                       batch_size: int = 8, topk: int = 0) -> list[dict[str, np.ndarray]]:
    """:func:`position_stats` of every trajectory (batches sorted by length), one ``{field: [len]}`` each."""
    order = sorted(range(len(trajs)), key=lambda i: -(len(trajs[i].prompt) + len(trajs[i].tokens)))
    out: list[dict[str, np.ndarray] | None] = [None] * len(trajs)
    for s in range(0, len(order), batch_size):
        rows = order[s: s + batch_size]
        ids, mask, g = batch_layout([trajs[i] for i in rows], pad)
        st = position_stats(model, ids, mask, g, vocab, topk=topk)
        for b, i in enumerate(rows):
            n = len(trajs[i].tokens)
            out[i] = {k: v[b, :n].numpy() for k, v in st.items()}
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ traces
def oracle_trace(traj: Trajectory, s1: dict[str, np.ndarray], s2: dict[str, np.ndarray] | None) -> schema.Trace:
    """The lockstep oracle/``always`` trace of the emitted tokens, from teacher-forced statistics."""
    n = traj.emitted
    tok = np.asarray(traj.tokens[:n], dtype=np.int64)
    g1 = s1["argmax"][:n]
    system2 = s2["argmax"][:n] if s2 is not None else tok
    nan = np.full(n, np.nan, dtype=np.float32)
    trace = {
        "token_id": tok,
        "source": np.full(n, 2, dtype=np.int8),
        "llm_called": np.ones(n, dtype=bool),
        "handoff": system2 != g1,
        "s1_entropy": s1["entropy"][:n].astype(np.float32),
        "s1_top1_prob": s1["top1_prob"][:n].astype(np.float32),
        "s1_margin": s1["margin"][:n].astype(np.float32),
        "s2_entropy": s2["entropy"][:n].astype(np.float32) if s2 is not None else nan,
        "s2_top1_prob": s2["top1_prob"][:n].astype(np.float32) if s2 is not None else nan,
        "s2_margin": s2["margin"][:n].astype(np.float32) if s2 is not None else nan.copy(),
        "accepted": np.full(n, -1, dtype=np.int8),
        "base_handoff": np.full(n, -1, dtype=np.int8),  # no untuned base in the oracle
    }
    if "topk_ids" in s1:  # trace_topk: System 2's are -1 / NaN without the large model, as where not called
        trace["s1_topk_ids"], trace["s1_topk_probs"] = s1["topk_ids"][:n], s1["topk_probs"][:n]
        trace["s2_topk_ids"] = s2["topk_ids"][:n] if s2 is not None else np.full_like(s1["topk_ids"][:n], -1)
        trace["s2_topk_probs"] = (s2["topk_probs"][:n] if s2 is not None
                                  else np.full_like(s1["topk_probs"][:n], np.nan))
    return trace


def speculative_counters(match: np.ndarray, finish: int, max_new_tokens: int, k: int) -> dict[str, int]:
    """Greedy speculative decoding's counters at draft length ``k``, batch 1, from one teacher-forced pass.

    ``match[j]`` ``[L]``: System 1's argmax at trajectory position ``j`` equals the trajectory's token
    (positions past ``L`` count as rejections). As ``engine.speculative``: a round at ``g`` generated
    tokens drafts ``d = min(k, max_new_tokens - g - 1)`` tokens, accepts the ``n`` leading matches, emits
    ``n + 1`` tokens; rounds go on until ``finish`` tokens are out.
    """
    drafted = accepted = steps = 0
    g = 0
    while g < finish and g < max_new_tokens:
        d = min(k, max_new_tokens - g - 1)
        window = match[g: g + d]
        n = int(np.argmin(window)) if not window.all() else len(window)
        drafted, accepted, steps = drafted + d, accepted + n, steps + 1
        g += n + 1
    return {"drafted_tokens": drafted, "accepted_tokens": accepted, "verification_steps": steps}


def speculative_profile(counters: Sequence[dict[str, int]]) -> dict[str, float | int | None]:
    """Pooled counters plus ``acceptance_rate`` and ``mean_acceptance_length`` (the schema's definitions)."""
    total = {k: sum(int(c[k]) for c in counters) for k in schema.COUNTERS}
    d, a, s = total["drafted_tokens"], total["accepted_tokens"], total["verification_steps"]
    return {**total, "acceptance_rate": a / d if d else None, "mean_acceptance_length": 1.0 + a / s if s else None}
