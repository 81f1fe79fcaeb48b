"""The backend seam: one model behind the engine, on tensors only.

The loop, speculative decoding, teacher forcing and replay see a model only through :class:`Backend`:
``advance`` (feed the columns not yet cached, return log-probs of the last ``keep``), ``score`` (one uncached
pass over given ids), ``select`` (keep batch rows), ``fork`` (a copy of chosen rows' cache), ``rewind`` (drop
the last cached columns), ``compact`` (keep chosen columns per row) and ``empty`` (the same model with an
empty cache, one per batch). A new way to run a model (a server, vLLM) is one class with these methods,
handed to ``ModelPair(..., backend=...)``; tests/test_backend_seam.py plugs in a logits table this way. A
scoring-only backend (``vocab_size``, ``exact`` and ``score``: vLLM's ``prompt_logprobs``) is enough for
replay's teacher-forced passes. :class:`TransformersBackend` is the default.

Layout the engine feeds (``engine/state.py``): rows left-padded to a common number of columns ``L``; a
column is real where ``mask`` is 1; ``positions`` count only a row's real tokens. A backend's ``fed`` is the
number of columns already in its cache, the same for every row. Every log-prob a backend returns is
normalised by :func:`log_softmax_` (torch's ``log_softmax``, a chunk of rows at a time), so the same logits
give the same bits on every path.
"""

from __future__ import annotations

import copy
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

    def score(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None, keep: int | None = None) -> Tensor:
        """One uncached pass: fp32 log-probs ``[B, keep, V]`` at the last ``keep`` columns of ``ids`` ``[B, T]``
        (``None``: all ``T``). ``mask`` ``None``: every row starts at column 0 (right-padded; pad columns after
        a row's end only feed their own outputs), so the causal mask alone is right and ``positions`` are
        ignored."""
        ...

    def select(self, rows: Tensor) -> None:
        """Keep only the batch rows ``rows`` ``[b]`` of the cache."""
        ...

    def fork(self, rows: Tensor) -> "Backend":
        """A new backend whose cache holds rows ``rows`` ``[b]`` of this one's (a row may repeat: a shared
        prefix fed once, then copied over a batch); this one is unchanged."""
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
    """``x.log_softmax(-1)`` written into ``x`` ``[..., V]`` (made contiguous first if it is a view), a chunk
    of rows at a time: the temporaries are chunk-sized, and each row's bits are torch's ``log_softmax`` of
    it (a row's result does not depend on the rows beside it), so every path normalises alike."""
    x = x.contiguous()
    rows = x.view(-1, x.shape[-1])
    for sl in chunks(rows.shape[0], rows.shape[-1]):
        rows[sl] = rows[sl].log_softmax(-1)
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
        return self._normalised(out, keep).to(tokens.device)

    def _normalised(self, out, keep: int) -> Tensor:
        """fp32 log-probs ``[B, keep, V]`` from a forward pass's logits, normalised in place: at a
        151936-token vocabulary one ``[B, T, V]`` copy is GiBs (engine/score.py)."""
        logits = out.logits[:, -keep:]
        del out
        if logits.shape[-1] != self.vocab_size or logits.dtype != torch.float32:
            logits = logits[..., :self.vocab_size].float()  # one copy: padded embedding rows, or half precision
        return log_softmax_(logits)

    def score(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None, keep: int | None = None) -> Tensor:
        dev = self.device
        kw = {} if mask is None else {"attention_mask": mask.to(dev), "position_ids": positions.to(dev)}
        keep = ids.shape[1] if keep is None else keep
        out = self.model(input_ids=ids.to(dev), use_cache=False, **kw, **{self.keep_kw: keep})
        return self._normalised(out, keep).to(ids.device)

    def select(self, rows: Tensor) -> None:
        if self.fed:  # public batch_select_indices
            self.cache.batch_select_indices(rows.to(self.device))

    def fork(self, rows: Tensor) -> "TransformersBackend":
        new = self.empty()
        if self.fed:  # a copy of the cache, then the public batch_select_indices (repeated rows allowed)
            new.cache = copy.deepcopy(self.cache)
            new.cache.batch_select_indices(rows.to(self.device))
            new.fed = self.fed
        return new

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

