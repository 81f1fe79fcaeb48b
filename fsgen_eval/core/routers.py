"""Routers: per row, should System 2 be evaluated at this token? Pure functions ``[B, V] -> Bool[B]``.

Each takes System 1's log-probs ``[B, V]`` and a threshold. Where a router says no, System 1's token is
emitted. In speculative decoding a router ends a draft early (BiLD-style) instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fsgen_eval.core.sampling import stats


@dataclass(frozen=True)
class Router:
    name: str
    fn: Callable[[Tensor, float | None], Tensor]
    needs_threshold: bool
    doc: str


def always(small: Tensor, threshold: float | None = None) -> Tensor:
    return torch.ones(small.shape[0], dtype=torch.bool, device=small.device)


def never(small: Tensor, threshold: float | None = None) -> Tensor:
    return torch.zeros(small.shape[0], dtype=torch.bool, device=small.device)


def max_prob(small: Tensor, threshold: float | None) -> Tensor:
    return stats(small)[1] < threshold


def margin(small: Tensor, threshold: float | None) -> Tensor:
    return stats(small)[2] < threshold


def entropy(small: Tensor, threshold: float | None) -> Tensor:
    return stats(small)[0] > threshold


ROUTERS: dict[str, Router] = {
    r.name: r
    for r in (
        Router("always", always, False, "System 2 at every token"),
        Router("never", never, False, "System 1 alone"),
        Router("max_prob", max_prob, True, "System 1's top-1 probability < threshold"),
        Router("margin", margin, True, "System 1's top-1 minus top-2 probability < threshold"),
        Router("entropy", entropy, True, "System 1's entropy (nats) > threshold"),
    )
}


def get_router(name: str) -> Router:
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; valid routers: {', '.join(ROUTERS)}")
    return ROUTERS[name]
