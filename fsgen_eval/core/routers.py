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

from fsgen_eval.core import learned as learned_format
from fsgen_eval.core.registry import ROUTERS, RouterSpec, get_router
from fsgen_eval.core.sampling import stats

Route = Callable[[Tensor], Tensor]  # System 1's log-probs [B, V] -> BoolTensor [B]: call System 2 here

__all__ = ["ROUTERS", "LearnedRoute", "Route", "RouterSpec", "always", "entropy", "get_router", "learned", "margin",
           "max_prob", "never"]


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


# ------------------------------------------------------------------------------------ learned routers
class LearnedRoute:
    """A learned router (``ROUTER.json``, :mod:`fsgen_eval.core.learned`) evaluated in torch, per row.

    Features come from System 1's log-probs ``[B, V]`` (and the position, for ``scalar`` features) exactly
    as the traces record them (:func:`fsgen_eval.core.sampling.stats`, ``topk(...).exp()`` in float32); the
    decision function runs in float64, so it matches scikit-learn's on the same features."""

    def __init__(self, router: "learned_format.LearnedRouter"):
        self.router = router
        self.uses_position = router.uses_position
        self._on: dict[torch.device, dict[str, Tensor]] = {}

    def _params(self, device: torch.device) -> dict[str, Tensor]:
        if device not in self._on:
            r = self.router
            arrays = {"mean": r.mean, "scale": r.scale, "coef": r.coef, "sv": r.support_vectors, "dual": r.dual_coef}
            self._on[device] = {k: torch.as_tensor(v, dtype=torch.float64, device=device)
                                for k, v in arrays.items() if v is not None}
        return self._on[device]

    def features(self, small: Tensor, position: int | Tensor | None = None) -> Tensor:
        """Features ``[B, F]`` (float64) of System 1's log-probs ``small`` ``[B, V]``."""
        if self.router.features == "topk":
            return small.topk(self.router.k, -1).values.exp().float().double()
        if position is None:
            raise ValueError("this learned router uses the position: the loop must pass it")
        ent, top1, marg = stats(small)
        pos = torch.as_tensor(position, dtype=torch.float64, device=small.device).expand(small.shape[0])
        return torch.stack([ent.double(), top1.double(), marg.double(), pos], 1)

    def scores(self, small: Tensor, position: int | Tensor | None = None) -> Tensor:
        """scikit-learn's ``decision_function`` ``[B]`` (float64)."""
        p = self._params(small.device)
        z = (self.features(small, position) - p["mean"]) / p["scale"]
        if self.router.model == "logistic":
            return z @ p["coef"] + self.router.intercept
        d2 = torch.cdist(z, p["sv"]).square()  # (B, S)
        return torch.exp(-self.router.gamma * d2) @ p["dual"] + self.router.intercept

    def __call__(self, small: Tensor, position: int | Tensor | None = None) -> Tensor:
        return self.scores(small, position) > self.router.threshold


def learned(router_path: str) -> LearnedRoute:
    """Call System 2 where the learned router's decision function exceeds its saved threshold."""
    return LearnedRoute(learned_format.load(router_path))
