"""Greedy continuations of many token prefixes by one model, in batches: the outcome labels' primitive.

The model is reached only through the backend seam (``engine/backend.py``; any ``BackendFactory``, the
default transformers) and decodes alone in System 1's seat with router ``never``, through the engine's one
loop (``decode.decode_batch``), so each row is that model's greedy decoding from its prefix with the engine's
own finishing rule (``engine/finish.py``: EOS, a stop string, the token budget).

Prefixes of one request (the handoffs of one generation: its prompt and System 2's tokens up to each
handoff, then System 1's token) share most of their tokens. Rows given the same ``requests`` key share
their longest common prefix: it is fed once per request — the prefixes of several requests together, as
one left-padded batch (the *root*) — and each decoded batch is a ``fork`` of the root's rows, one per
continuation, after which the loop feeds only each row's own suffix. Layout of a decoded batch ``[B, W + S]``:
the root's ``W`` columns of the row's request (left-padded), then the row's own suffix left-padded to
``S`` columns; pad columns are masked (as the loop's rejected drafts are), and positions count only real
tokens, so each row sees exactly its prefix. A row alone in its request shares nothing: it is fed whole, as
a plain left-padded batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from fsgen_eval.engine.backend import Backend, TransformersBackend
from fsgen_eval.engine.config import make_config
from fsgen_eval.engine.decode import decode_batch
from fsgen_eval.engine.pair import BackendFactory, ModelPair
from fsgen_eval.engine.state import positions_from_mask

Continuation = tuple[list[int], str]  # (tokens, text trimmed at the first stop string)


@dataclass
class _Group:
    """One request's rows (indices into the prefixes) and how many leading tokens they all share."""

    rows: list[int]
    shared: int  # tokens fed once for the whole group (0: each row is fed whole)


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """The length of the longest token prefix every sequence of ``seqs`` starts with."""
    n = min(len(s) for s in seqs)
    ref = seqs[0]
    for j in range(n):
        if any(s[j] != ref[j] for s in seqs):
            return j
    return n


def _groups(prefixes: Sequence[Sequence[int]], rows: list[int], requests: Sequence[Hashable] | None) -> list[_Group]:
    """Rows grouped by request (``None``: each row its own); a group of several rows shares its common
    prefix, less one token, so every row feeds at least its last token and the loop reads its log-probs."""
    keyed: dict[Hashable, list[int]] = {}
    for i in rows:
        keyed.setdefault(("row", i) if requests is None else requests[i], []).append(i)
    out = []
    for members in keyed.values():
        members.sort(key=lambda i: len(prefixes[i]))  # similar suffix lengths together: less padding
        shared = 0
        if len(members) > 1:
            shared = min(common_prefix([prefixes[i] for i in members]), len(prefixes[members[0]]) - 1)
        out.append(_Group(members, shared))
    return out


def _left_padded(seqs: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """``[B, W]`` ids and mask of ``seqs`` left-padded to the longest (``W`` may be 0)."""
    w = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), w), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), w), dtype=torch.long)
    for r, s in enumerate(seqs):
        if len(s):
            ids[r, w - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[r, w - len(s):] = 1
    return ids, mask


def _chunks(groups: list[_Group], batch_size: int) -> list[list[_Group]]:
    """Groups that share a root, ``batch_size`` at a time (the root is a batch of ``batch_size`` rows at most),
    similar prefix lengths together (less padding)."""
    ordered = sorted(groups, key=lambda g: g.shared)
    return [ordered[s:s + batch_size] for s in range(0, len(ordered), batch_size)]


def _decode_chunk(pair: ModelPair, prefixes: Sequence[Sequence[int]], budgets: Sequence[int], chunk: list[_Group],
                  stop: list[str] | None, batch_size: int, pad: int) -> Iterator[tuple[list[int], list[Continuation]]]:
    """Feed the chunk's shared prefixes once (the root; none when nothing is shared), then decode its rows in
    batches of ``batch_size``, each a fork of the root; yields ``(rows, continuations)`` per batch."""
    shared = chunk[0].shared > 0
    root: Backend | None = None
    root_ids, root_mask = _left_padded([prefixes[g.rows[0]][:g.shared] for g in chunk], pad)  # (G, W)
    if shared:
        root = pair.open("small")
        with torch.inference_mode():
            root.advance(root_ids, root_mask, positions_from_mask(root_mask), 1)
    # (row, its group's root row); batches across the chunk's requests by prefix length: a handoff's position
    # predicts how long it goes on, and a batch runs as long as its longest row
    members = sorted(((i, k) for k, g in enumerate(chunk) for i in g.rows), key=lambda m: len(prefixes[m[0]]))
    for start in range(0, len(members), batch_size):
        batch = members[start:start + batch_size]
        src = torch.tensor([k for _, k in batch])
        own_ids, own_mask = _left_padded([prefixes[i][chunk[k].shared:] for i, k in batch], pad)  # (B, S)
        ids = torch.cat([root_ids[src], own_ids], 1)
        mask = torch.cat([root_mask[src], own_mask], 1)
        rows = [i for i, _ in batch]
        cfg = make_config(method="oracle", router="never", max_new_tokens=max(budgets[i] for i in rows),
                          stop=stop, record_trace=False)
        with torch.inference_mode():  # not around the yield: the caller's code runs between batches
            small = root.fork(src.to(pair.device)) if root is not None else None
            results = decode_batch(pair, ids.to(pair.device), mask.to(pair.device), cfg, small=small)
        yield rows, [_cut(pair.tokenizer, res.token_ids, res.text, budgets[i]) for i, res in zip(rows, results)]


def _cut(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str, budget: int) -> Continuation:
    """A row's continuation cut to its own budget: rows of one batch decode to the largest budget, which for
    greedy decoding equals a decode with the row's own (the tokens before it do not depend on it)."""
    toks = list(ids[:budget])
    return toks, text if len(toks) == len(ids) else tokenizer.decode(toks)


def iter_continuations(model: object, tokenizer: PreTrainedTokenizerBase, prefixes: Sequence[Sequence[int]],
                       budgets: Sequence[int], stop: Sequence[str] | None = None, batch_size: int = 8,
                       pad_id: int | None = None, requests: Sequence[Hashable] | None = None,
                       backend: BackendFactory = TransformersBackend.for_role,
                       ) -> Iterator[tuple[list[int], list[Continuation]]]:
    """:func:`continue_greedy`'s results as they are decoded: ``(rows, continuations)`` per batch (rows with
    budget 0 first, empty), so a caller can save each batch before the next one runs."""
    if len(prefixes) != len(budgets):
        raise ValueError(f"{len(prefixes)} prefixes but {len(budgets)} budgets")
    if requests is not None and len(requests) != len(prefixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(requests)} request keys")
    if any(len(p) == 0 for p in prefixes):
        raise ValueError("a prefix needs at least one token")
    pair = ModelPair(small=model, large=model, tokenizer=tokenizer, backend=backend)
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    pad = 0 if pad is None else pad
    idle = [i for i in range(len(prefixes)) if budgets[i] <= 0]
    if idle:
        yield idle, [([], "")] * len(idle)
    groups = _groups(prefixes, [i for i in range(len(prefixes)) if budgets[i] > 0], requests)
    alone = sorted((i for g in groups if not g.shared for i in g.rows), key=lambda i: len(prefixes[i]))
    chunks = _chunks([g for g in groups if g.shared], batch_size)
    chunks += [[_Group(alone[s:s + batch_size], 0)] for s in range(0, len(alone), batch_size)]
    for chunk in chunks:
        yield from _decode_chunk(pair, prefixes, budgets, chunk, list(stop) if stop else None, batch_size, pad)


def continue_greedy(model: object, tokenizer: PreTrainedTokenizerBase, prefixes: Sequence[Sequence[int]],
                    budgets: Sequence[int], stop: Sequence[str] | None = None, batch_size: int = 8,
                    pad_id: int | None = None, requests: Sequence[Hashable] | None = None,
                    backend: BackendFactory = TransformersBackend.for_role) -> list[Continuation]:
    """Per prefix (token ids ``[P_i]``), the model's greedy continuation of at most ``budgets[i]`` tokens
    (``budgets[i] == 0``: empty) and its text, trimmed at the first stop string as the engine trims a
    generation. ``model`` is what ``backend`` takes (a transformers model by default). Rows with equal
    ``requests`` keys share their common prefix's cache (fed once); ``None``: every row is fed whole."""
    out: list[Continuation | None] = [None] * len(prefixes)
    for rows, conts in iter_continuations(model, tokenizer, prefixes, budgets, stop, batch_size, pad_id,
                                          requests, backend):
        for i, c in zip(rows, conts):
            out[i] = c
    return out  # type: ignore[return-value]
