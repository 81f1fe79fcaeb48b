"""Public Python API: ``generate`` and ``loglikelihood`` over a ``ModelPair`` (lm-eval not required)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fsgen_eval.core import schema
from fsgen_eval.engine.config import DecodeConfig, make_config
from fsgen_eval.engine.decode import decode_batch
from fsgen_eval.engine.state import make_generator
from fsgen_eval.engine.score import score_batch
from fsgen_eval.engine.pair import ModelPair


@dataclass
class GenerationOutput:
    texts: list[str]  # per prompt, trimmed at the first stop string
    token_ids: list[list[int]]  # per prompt, the generated tokens (EOS included if emitted)
    traces: list[schema.Trace]  # per prompt, per-token arrays (schema.TOKEN_FIELDS)
    counters: list[dict[str, int]]  # per prompt, speculative counters
    summary: dict[str, Any]  # schema.SUMMARY_KEYS pooled over all prompts


@dataclass
class LoglikelihoodOutput:
    logprobs: list[float]  # per request, sum of System 2's log-probs of the continuation tokens
    is_greedy: list[bool]  # per request, every continuation token is System 2's argmax
    token_logprobs: list[np.ndarray]  # per request, [n_continuation] log-probs
    traces: list[schema.Trace]  # per request, over the continuation tokens
    summary: dict[str, Any]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists → left-padded ``input_ids`` and ``attention_mask`` ``[B, T]``."""
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, t - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[i, t - len(r):] = 1
    return ids, mask


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def _check_batch_size(batch_size: int) -> None:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")


def encode(pair: ModelPair, text: str) -> list[int]:
    """The token ids ``[T]`` of ``text`` with the tokenizer's special tokens (as lm-eval encodes)."""
    return pair.tokenizer(text, add_special_tokens=True)["input_ids"]


def generate_ids(pair: ModelPair, prompts: Sequence[Sequence[int]], cfg: DecodeConfig, batch_size: int = 8) -> GenerationOutput:
    """Generate from token-id prompts with a validated ``cfg`` (see ``generate``)."""
    _check_batch_size(batch_size)
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    results: list[Any] = [None] * len(prompts)
    gen = make_generator(pair, cfg)
    for idx in _batches([len(p) for p in prompts], batch_size):
        ids, mask = left_pad([prompts[i] for i in idx], pair.pad_token_id)
        for i, row in zip(idx, decode_batch(pair, ids, mask, cfg, gen)):
            results[i] = row
    return GenerationOutput(
        texts=[r.text for r in results],
        token_ids=[r.token_ids for r in results],
        traces=[r.trace for r in results],
        counters=[r.counters for r in results],
        summary=schema.summarize([r.trace for r in results], [r.counters for r in results]),
    )


def generate(
    pair: ModelPair,
    prompts: Sequence[str],
    method: str = "oracle",
    router: str = "always",
    threshold: float | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: str | Sequence[str] | None = None,
    batch_size: int = 8,
    seed: int | None = None,
    record_trace: bool = True,
    trace_topk: int = 0,
    **params: Any,
) -> GenerationOutput:
    """Collaborative generation for each prompt; one text, token list and trace ``[T_i]`` per prompt.

    ``method`` and ``router`` are names in the registries (``fsgen_eval.core.registry``: built in are
    ``oracle``, ``speculative``, ``contrastive``, ``proxy`` and ``always``, ``never``, ``max_prob``,
    ``margin``, ``entropy``); ``params`` are their parameters by name (``num_draft``, ``alpha``, ... — the
    router's ``threshold`` too), each checked by its registry entry. ``trace_topk=K`` adds each system's
    top-K ids and probabilities per token to the traces (``s1_topk_ids`` ... ``[T, K]``; System 2's -1 / NaN
    where it was not evaluated). Every argument is validated before any model runs.
    """
    cfg = make_config(method, router, threshold, max_new_tokens, temperature, top_p, top_k,
                      list(stop) if stop is not None and not isinstance(stop, str) else stop, seed,
                      pair.small_base is not None, record_trace, trace_topk, **params)
    _check_batch_size(batch_size)
    return generate_ids(pair, [encode(pair, p) for p in prompts], cfg, batch_size)


def split_request(pair: ModelPair, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Tokenize like lm-eval: encode context+continuation whole, then split at the context's length,
    moving trailing context whitespace onto the continuation."""
    n_space = len(context) - len(context.rstrip())
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = encode(pair, context + continuation)
    ctx = encode(pair, context)
    return whole[: len(ctx)], whole[len(ctx):]


def loglikelihood_ids(pair: ModelPair, requests: Sequence[tuple[Sequence[int], Sequence[int]]], cfg: DecodeConfig,
                      batch_size: int = 8) -> LoglikelihoodOutput:
    """Score token-id ``(context, continuation)`` pairs by System 2's teacher-forced distribution."""
    _check_batch_size(batch_size)
    for ctx, cont in requests:
        if not ctx or not cont:
            raise ValueError("loglikelihood requests need a non-empty context and continuation")
    rows = [list(c) + list(x) for c, x in requests]
    out: list[Any] = [None] * len(requests)
    for idx in _batches([len(r) for r in rows], batch_size):
        ids, mask = left_pad([rows[i] for i in idx], pair.pad_token_id)
        sc = score_batch(pair, ids, mask, cfg)
        for b, i in enumerate(idx):
            n_cont, t = len(requests[i][1]), ids.shape[1]
            # positions t-1-n_cont .. t-2 predict the continuation tokens
            lp = sc.logprobs[b, t - 1 - n_cont: t - 1]
            target = ids[b, t - n_cont:].to(lp.device)
            tok_lp = lp.gather(-1, target[:, None]).squeeze(-1)
            trace = {k: v[b, t - 1 - n_cont: t - 1] for k, v in sc.trace.items()}
            out[i] = (float(tok_lp.sum()), bool((lp.argmax(-1) == target).all()), tok_lp.cpu().numpy(), trace)
    return LoglikelihoodOutput(
        logprobs=[o[0] for o in out], is_greedy=[o[1] for o in out], token_logprobs=[o[2] for o in out],
        traces=[o[3] for o in out], summary=schema.summarize([o[3] for o in out]),
    )


def loglikelihood(
    pair: ModelPair,
    requests: Sequence[tuple[str, str]],
    method: str = "oracle",
    router: str = "always",
    threshold: float | None = None,
    batch_size: int = 8,
    trace_topk: int = 0,
    **params: Any,
) -> LoglikelihoodOutput:
    """Log-likelihood of each continuation given its context under System 2 (teacher-forced).

    At each continuation position the router decides whether System 2 is evaluated; where it is, the
    method's distribution scores the token, elsewhere System 1's does. ``params`` and ``trace_topk`` as in
    :func:`generate`.
    """
    cfg = make_config(method, router, threshold, has_small_base=pair.small_base is not None,
                      trace_topk=trace_topk, **params)
    _check_batch_size(batch_size)
    return loglikelihood_ids(pair, [split_request(pair, c, x) for c, x in requests], cfg, batch_size)
