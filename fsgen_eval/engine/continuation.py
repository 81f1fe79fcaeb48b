"""Greedy continuations of many token prefixes by one model, in batches: the outcome labels' primitive.

Self-contained on the engine's public entry points (``ModelPair.from_models``, ``make_config``,
``decode_batch``): the model decodes alone (it is put in System 1's seat with router ``never``), so each
row is that model's greedy decoding from its prefix with the engine's own finishing rule (EOS, a stop string,
the token budget). A batch is one left-padded prefill plus the KV-cached loop — never one decode per prefix
from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fsgen_eval.engine.config import make_config
from fsgen_eval.engine.decode import decode_batch
from fsgen_eval.engine.pair import ModelPair


def continue_greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prefixes: Sequence[Sequence[int]],
                    budgets: Sequence[int], stop: Sequence[str] | None = None, batch_size: int = 8,
                    pad_id: int | None = None) -> list[tuple[list[int], str]]:
    """Per prefix (token ids ``[P_i]``), ``model``'s greedy continuation of at most ``budgets[i]`` tokens
    (``budgets[i] == 0``: empty) and its text, trimmed at the first stop string as the engine trims a
    generation. Rows of one batch share the largest budget; each is cut to its own afterwards, which for
    greedy decoding equals a decode with that budget (the tokens before it do not depend on it)."""
    if len(prefixes) != len(budgets):
        raise ValueError(f"{len(prefixes)} prefixes but {len(budgets)} budgets")
    pair = ModelPair.from_models(model, model, tokenizer)
    pad = tokenizer.pad_token_id if pad_id is None else pad_id
    pad = 0 if pad is None else pad
    out: list[tuple[list[int], str] | None] = [None] * len(prefixes)
    # similar lengths together: less padding
    order = sorted((i for i in range(len(prefixes)) if budgets[i] > 0), key=lambda i: len(prefixes[i]))
    for i in range(len(prefixes)):
        if budgets[i] <= 0:
            out[i] = ([], "")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(prefixes[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):  # left padding, as decode_batch expects
            ids[r, width - len(prefixes[i]):] = torch.as_tensor(list(prefixes[i]))
            mask[r, width - len(prefixes[i]):] = 1
        cfg = make_config(method="oracle", router="never", max_new_tokens=max(budgets[i] for i in rows),
                          stop=list(stop) if stop else None, record_trace=False)
        for r, res in zip(rows, decode_batch(pair, ids.to(pair.device), mask.to(pair.device), cfg)):
            toks = list(res.token_ids[:budgets[r]])
            text = res.text if len(toks) == len(res.token_ids) else tokenizer.decode(toks)
            out[r] = (toks, text)
    return out  # type: ignore[return-value]
