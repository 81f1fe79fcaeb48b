"""Routers: per row, should System 2 be evaluated at this token?

A router is built by a factory from its own parameters (registered in :mod:`fsgen_eval.core.registry`,
which declares them with their defaults, checks and help); the factory returns a pure function
``route(logprobs [B, V]) -> Bool[B]`` over System 1's next-token log-probs. Where a router says no, System
1's token is emitted; in speculative decoding a router ends a draft early (BiLD-style) instead. A factory
runs once per parameter set, so it may read weights from a file.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fsgen_eval.core.registry import ROUTERS, RouterSpec, get_router
from fsgen_eval.core.sampling import stats

Route = Callable[[Tensor], Tensor]  # System 1's log-probs [B, V] -> BoolTensor [B]: call System 2 here

__all__ = ["ROUTERS", "Route", "RouterSpec", "always", "entropy", "get_router", "margin", "max_prob", "never"]


def always() -> Route:
    """System 2 at every token."""

    def route(small: Tensor) -> Tensor:
        return torch.ones(small.shape[0], dtype=torch.bool, device=small.device)

    return route


def never() -> Route:
    """System 1 alone."""

    def route(small: Tensor) -> Tensor:
        return torch.zeros(small.shape[0], dtype=torch.bool, device=small.device)

    return route


def max_prob(threshold: float) -> Route:
    """Call where System 1's top-1 probability < ``threshold``."""
    return lambda small: stats(small)[1] < threshold


def margin(threshold: float) -> Route:
    """Call where System 1's top-1 minus top-2 probability < ``threshold``."""
    return lambda small: stats(small)[2] < threshold


def entropy(threshold: float) -> Route:
    """Call where System 1's entropy (nats) > ``threshold``."""
    return lambda small: stats(small)[0] > threshold
