"""A model's side of the loop: its KV cache and how many sequence positions it has seen (the runner seam).

Every backend goes through ``advance`` (feed what is new, return the last log-probs), ``select`` (keep batch
rows), ``rewind`` (drop the last cached columns) and ``compact`` (keep chosen columns per row), so a new
backend is one class with these four methods.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

if TYPE_CHECKING:
    from fsgen_eval.engine.state import Sequences


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


@dataclass
class Runner:
    """One model's side of the loop: its KV cache and how many sequence positions it has seen."""

    model: PreTrainedModel
    cache: DynamicCache
    cache_kw: str  # forward()'s name for the cache argument
    keep_kw: str  # forward()'s name for "compute logits of the last n positions only"
    device: torch.device  # where the model's inputs go
    fed: int = 0  # sequence positions already in the cache

    @classmethod
    def new(cls, model: PreTrainedModel) -> "Runner":
        """A runner with an empty cache, using the keyword names this transformers version's ``forward`` takes."""
        # transformers 5 renamed `past_key_values` to `cache`; ask the signature which one it takes
        params = inspect.signature(model.forward).parameters
        return cls(model, DynamicCache(config=model.config),
                   "cache" if "cache" in params else "past_key_values",
                   "logits_to_keep" if "logits_to_keep" in params else "num_logits_to_keep",
                   model.get_input_embeddings().weight.device)

    def advance(self, seq: "Sequences", keep: int, vocab: int) -> Tensor:
        """Feed every position not yet seen; return log-probs ``[B, keep, vocab]`` of the last ``keep``."""
        dev = self.device
        out = self.model(
            input_ids=seq.tokens[:, self.fed:].to(dev),
            attention_mask=seq.mask.to(dev),
            position_ids=seq.positions[:, self.fed:].to(dev),
            use_cache=True,
            **{self.cache_kw: self.cache, self.keep_kw: keep},
        )
        self.fed = seq.length
        # cut to the tokenizer's vocabulary: padded embedding rows are not tokens
        return out.logits[:, -keep:, :vocab].float().log_softmax(-1).to(seq.tokens.device)

    def select(self, keep: Tensor) -> None:
        """Keep only the batch rows ``keep`` of the cache (public ``batch_select_indices``)."""
        if self.fed:
            self.cache.batch_select_indices(keep.to(self.device))

    def rewind(self, length: int) -> None:
        """Drop every cached column from ``length`` on (public ``crop``)."""
        if self.fed > length:
            _crop(self.cache, self.fed, length)
            self.fed = length

    def compactable(self) -> bool:
        """Whether every cache layer holds every column (a sliding-window layer keeps only its window)."""
        return not any(getattr(layer, "is_sliding", False) for layer in getattr(self.cache, "layers", ()))

    def compact(self, index: Tensor) -> None:
        """Keep cached columns ``index`` ``[B, fed']`` of each row, in that order (``Sequences.compact_index``)."""
        if self.fed:
            _gather_columns(self.cache, index.to(self.device))
        self.fed = index.shape[1]
