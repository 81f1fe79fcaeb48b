"""Collaboration methods: pure functions from next-token log-probs to System 2's logits.

Each method takes System 1's log-probs ``small`` ``[B, V]``, the large model's ``large`` ``[B, V]`` and, for
proxy tuning, the untuned small model's ``small_base`` ``[B, V]`` (``None`` otherwise), plus its own
parameters, and returns System 2's (unnormalised) logits ``[B, V]``. Adding a method = one function here
and one entry in :mod:`fsgen_eval.core.registry` (which declares its parameters and which loop it runs).
"""

from __future__ import annotations

import math

from torch import Tensor

from fsgen_eval.core.registry import CONTRASTIVE_VARIANTS, METHODS, MethodSpec, get_method

Method = MethodSpec  # the registry entry's former name

__all__ = ["CONTRASTIVE_VARIANTS", "METHODS", "Method", "MethodSpec", "contrastive", "get_method", "oracle",
           "proxy", "speculative"]


def oracle(small: Tensor, large: Tensor, small_base: Tensor | None = None) -> Tensor:
    """System 2 is the large model: FS-GEN's lower bound on how often System 2 must step in."""
    return large


def speculative(small: Tensor, large: Tensor, small_base: Tensor | None = None, num_draft: int = 5,
                speculative_variant: str = "bild") -> Tensor:
    """Speculative decoding's output distribution is the large model's (Leviathan et al. 2023).

    ``speculative_variant`` (the loop reads it, see engine/decode.py): ``bild`` (ours) verifies every token
    and a router only ends a draft early, BiLD-style; ``fsgen`` (FS-GEN's code, *lossy*) emits System 1's
    token unverified wherever the router does not fire and drafts-and-verifies only where it does."""
    return large


def _plausible(large: Tensor, alpha: float) -> Tensor:
    """Mask ``[B, V]`` of tokens with p_large >= alpha * max p_large (O'Brien & Lewis's plausibility)."""
    return large >= large.max(-1, keepdim=True).values + math.log(alpha) if alpha > 0 else large > float("-inf")


def contrastive(
    small: Tensor, large: Tensor, small_base: Tensor | None = None,
    alpha: float = 0.1, beta: float = 0.5, contrastive_variant: str = "obrien",
) -> Tensor:
    """Contrastive decoding over the plausible tokens.

    ``obrien`` (O'Brien & Lewis 2023): (1+β)·log p_large − β·log p_small.
    ``fsgen`` (the FS-GEN paper's numbers): s + β·(l − s), i.e. an interpolation from small to large.
    """
    if contrastive_variant == "obrien":
        score = (1 + beta) * large - beta * small
    else:
        score = small + beta * (large - small)
    return score.masked_fill(~_plausible(large, alpha), float("-inf"))


def proxy(small: Tensor, large: Tensor, small_base: Tensor | None = None, alpha: float = 1.0) -> Tensor:
    """Proxy tuning / emulated fine-tuning: large + α·(tuned small − base small).

    On log-probs rather than raw logits: each differs from its logits by a per-row constant, which the
    final softmax removes, so the distribution is Liu et al.'s while the numbers stay comparable.
    """
    if small_base is None:
        raise ValueError("method 'proxy' needs small_base log-probs")
    return large + alpha * (small - small_base)
