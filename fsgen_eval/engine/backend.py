"""The backend seam: one model behind the engine, on tensors only.

The loop, speculative decoding and teacher forcing see a model only through :class:`Backend`: ``advance``
(feed the columns not yet cached, return log-probs of the last ``keep``), ``score`` (one uncached pass over
given ids), ``select`` (keep batch rows), ``rewind`` (drop the last cached columns), ``compact`` (keep chosen
columns per row) and ``empty`` (the same model with an empty cache, one per batch). A new way to run a model
(a server, vLLM) is one class with these methods, handed to ``ModelPair(..., backend=...)``;
tests/test_backend_seam.py plugs in a logits table this way. :class:`TransformersBackend` is the default.

Layout the engine feeds (``engine/state.py``): rows left-padded to a common number of columns ``L``; a
column is real where ``mask`` is 1; ``positions`` count only a row's real tokens. A backend's ``fed`` is the
number of columns already in its cache, the same for every row.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

CHUNK_ELEMENTS = 1 << 22  # positions per in-place chunk = this / V (16 MiB of fp32 per temporary)


@runtime_checkable
class Backend(Protocol):
    """One model's side of the engine: its cache and how many columns it has seen."""

    vocab_size: int  # V: the last dimension of every log-prob tensor returned (the tokenizer's vocabulary)
    exact: bool  # the log-probs are the model's whole distribution (a top-K approximation is not)
    fed: int  # columns already in the cache, the same for every row
    device: torch.device  # where the model's inputs go

    def empty(self) -> "Backend":
        """The same model with an empty cache (one per decoded batch)."""
        ...

    def advance(self, tokens: Tensor, mask: Tensor, positions: Tensor, keep: int) -> Tensor:
        """Feed columns ``[fed, L)`` of ``tokens``/``mask``/``positions`` ``[B, L]`` (``mask`` over all ``L``
        columns); return fp32 log-probs ``[B, keep, V]`` of the last ``keep`` columns, on ``tokens.device``."""
        ...

    def score(self, ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        """One uncached pass: fp32 log-probs ``[B, T, V]`` at every column of ``ids`` ``[B, T]``."""
        ...

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` ``[b]`` of the cache."""
        ...

    def rewind(self, length: int) -> None:
        """Drop every cached column from ``length`` on."""
        ...

    def compactable(self) -> bool:
        """Whether :meth:`compact` may be called (every cached column is held)."""
        ...

    def compact(self, index: Tensor) -> None:
        """Keep cached columns ``index`` ``[B, fed']`` of each row, in that order; ``fed`` becomes ``fed'``."""
        ...


# ------------------------------------------------------------------------------------------ in place
def chunks(n: int, v: int) -> list[slice]:
    """Row slices of ``[n, v]`` holding about ``CHUNK_ELEMENTS`` elements each."""
    step = max(1, CHUNK_ELEMENTS // max(v, 1))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def log_softmax_(x: Tensor) -> Tensor:
    """``x.log_softmax(-1)`` in place over rows ``[N, V]``, a chunk of rows at a time (no full-size copy)."""
    for sl in chunks(x.shape[0], x.shape[-1]):
        x[sl] -= x[sl].logsumexp(-1, keepdim=True)
    return x


# ------------------------------------------------------------------------------------------ transformers
def _crop(cache: DynamicCache, fed: int, length: int) -> None:
    """Cut ``cache`` from ``fed`` to ``length`` positions with the public ``crop``.

    A negative argument removes that many tokens in transformers 4.x and 5.x alike (5.x reads a positive
    one as tokens to remove and refuses it; 4.x as the length to keep), so only the negative form is used.
    """
    cache.crop(length - fed)


def _gather_columns(cache: DynamicCache, index: Tensor) -> None:
    """Keep columns ``index`` ``[B, T']`` of every layer's keys and values ``[B, H, T, D]``.

    transformers >= 4.56 keeps them on ``cache.layers[i].keys/.values``, older 4.x releases on the
    ``cache.key_cache``/``value_cache`` lists: both are public attributes.
    """
    def take(x: Tensor) -> Tensor:
        if x is None or x.numel() == 0:  # a layer not initialised yet
            return x
        return x.gather(2, index[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))

    if hasattr(cache, "layers"):
        for layer in cache.layers:
            layer.keys, layer.values = take(layer.keys), take(layer.values)
    else:
        cache.key_cache[:] = [take(x) for x in cache.key_cache]
        cache.value_cache[:] = [take(x) for x in cache.value_cache]


class TransformersBackend:
    """A transformers causal LM with a ``DynamicCache``, through public APIs only (``forward``, ``crop``,
    ``batch_select_indices``)."""

    exact = True

    def __init__(self, model: PreTrainedModel, vocab_size: int | None = None):
        self.model = model
        # cut logits to the tokenizer's vocabulary: padded embedding rows are not tokens
        self.vocab_size = int(vocab_size if vocab_size is not None else model.get_output_embeddings().weight.shape[0])
        self.cache = DynamicCache(config=model.config)
        # transformers 5 renamed `past_key_values` to `cache`; ask the signature which one it takes
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"  # forward()'s name for the cache
        # forward()'s name for "compute logits of the last n positions only"
        self.keep_kw = "logits_to_keep" if "logits_to_keep" in params else "num_logits_to_keep"
        self.device = model.get_input_embeddings().weight.device
        self.fed = 0

    @classmethod
    def new(cls, model: PreTrainedModel, vocab_size: int | None = None) -> "TransformersBackend":
        """A backend with an empty cache (``vocab_size`` ``None``: the model's output rows)."""
        return cls(model, vocab_size)

    @classmethod
    def for_role(cls, model: PreTrainedModel, role: str, vocab_size: int) -> "TransformersBackend":
        """``ModelPair``'s factory: refuses a model with fewer output rows than the tokenizer has tokens."""
        rows = model.get_output_embeddings().weight.shape[0]
        if rows < vocab_size:
            raise ValueError(f"{role} model has {rows} output rows but the tokenizer has {vocab_size} tokens")
        return cls(model, vocab_size)

    def empty(self) -> "TransformersBackend":
        return type(self)(self.model, self.vocab_size)

    def advance(self, tokens: Tensor, mask: Tensor, positions: Tensor, keep: int) -> Tensor:
        dev = self.device
        out = self.model(
            input_ids=tokens[:, self.fed:].to(dev),
            attention_mask=mask.to(dev),
            position_ids=positions[:, self.fed:].to(dev),
            use_cache=True,
            **{self.cache_kw: self.cache, self.keep_kw: keep},
        )
        self.fed = tokens.shape[1]
        return out.logits[:, -keep:, :self.vocab_size].float().log_softmax(-1).to(tokens.device)

    def score(self, ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        # the logits themselves are normalised in place: at a 151936-token vocabulary one [B, T, V] copy
        # is GiBs (engine/score.py)
        dev, v = self.device, self.vocab_size
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                         use_cache=False)
        logits = out.logits
        del out
        if logits.shape[-1] != v or logits.dtype != torch.float32:
            logits = logits[..., :v].float()  # one copy: padded embedding rows, or a half-precision model
        b, t, _ = logits.shape
        return log_softmax_(logits.reshape(b * t, v)).view(b, t, v).to(ids.device)

    def select(self, rows: Tensor) -> None:
        if self.fed:  # public batch_select_indices
            self.cache.batch_select_indices(rows.to(self.device))

    def rewind(self, length: int) -> None:
        if self.fed > length:  # public crop
            _crop(self.cache, self.fed, length)
            self.fed = length

    def compactable(self) -> bool:
        # a sliding-window layer keeps only its window, so its columns cannot be gathered
        return not any(getattr(layer, "is_sliding", False) for layer in getattr(self.cache, "layers", ()))

    def compact(self, index: Tensor) -> None:
        if self.fed:
            _gather_columns(self.cache, index.to(self.device))
        self.fed = index.shape[1]

