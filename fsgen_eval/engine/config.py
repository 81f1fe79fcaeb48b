"""Decoding settings: one frozen ``DecodeConfig``, validated by ``make_config`` before any model runs.

What a method or router takes comes from its registry entry (:mod:`fsgen_eval.core.registry`); nothing
here knows a method's or router's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from fsgen_eval.core import registry
from fsgen_eval.core.registry import MethodSpec, RouterSpec
from fsgen_eval.core.routers import Route
from torch import Tensor


@dataclass(frozen=True)
class DecodeConfig:
    method: str = "oracle"  # a name in registry.METHODS
    router: str = "always"  # a name in registry.ROUTERS
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters, defaults filled in
    max_new_tokens: int = 64  # upper bound on emitted tokens per row
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    top_k: int = 0  # 0 = no top-k filter
    stop: tuple[str, ...] = ()  # stop strings, checked on the decoded generation
    seed: int | None = None  # seeds the sampling generator
    record_trace: bool = True  # False: keep only what the summary needs (no uncertainty statistics)
    router_params: dict[str, Any] = field(default_factory=dict)  # the router's parameters, checked
    trace_topk: int = 0  # > 0: also record System 1's and System 2's top-K ids and probabilities per token

    @property
    def threshold(self) -> float | None:
        """The router's ``threshold`` parameter (``None`` for a router without one)."""
        thr = self.router_params.get("threshold")
        return None if thr is None else float(thr)

    @cached_property
    def lossy(self) -> bool:
        """FS-GEN's lossy speculative decoding: System 1's tokens unverified where the router does not fire
        (the method's registry flag ``lossy_if``)."""
        return self.method_spec.lossy(self.params)

    @cached_property
    def method_spec(self) -> MethodSpec:
        """The method's registry entry."""
        return registry.get_method(self.method)

    @cached_property
    def router_spec(self) -> RouterSpec:
        """The router's registry entry."""
        return registry.get_router(self.router)

    @cached_property
    def route(self) -> Route:
        """The router function ``[B, V] log-probs -> Bool[B]`` built from ``router_params``."""
        return self.router_spec.build(self.router_params)

    def for_request(self, max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
                    top_k: int = 0, stop: str | list[str] | tuple[str, ...] | None = None,
                    seed: int | None = None) -> "DecodeConfig":
        """This run's config with one request's decoding settings (checked as ``make_config`` checks them).

        The method, router and their parameters were checked once, when the run's config was made; the router
        built then is kept (a learned router's weights file is not read again per batch).
        """
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        _check_decoding(max_new_tokens, temperature, top_p, top_k)
        stops = _stops(stop)
        new = replace(self, max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                      top_k=int(top_k), stop=stops, seed=seed)
        if "route" in self.__dict__:  # cached_property's slot: carried over, not rebuilt
            new.__dict__["route"] = self.__dict__["route"]
        return new

    def route_at(self, small: Tensor, position: int | Tensor) -> Tensor:
        """The router's answer ``[B]`` for System 1's log-probs ``small`` ``[B, V]``; a router that uses the
        position (a learned one with scalar features: tokens generated before this one) is given it too."""
        route = self.route
        return route(small, position) if getattr(route, "uses_position", False) else route(small)


def make_config(
    method: str = "oracle",
    router: str = "always",
    threshold: float | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: str | list[str] | tuple[str, ...] | None = None,
    seed: int | None = None,
    has_small_base: bool = False,
    record_trace: bool = True,
    trace_topk: int = 0,
    **params: Any,
) -> DecodeConfig:
    """Validate every setting and return a ``DecodeConfig``; ``ValueError`` naming the problem otherwise.

    ``params`` are the method's and the router's parameters by name (``threshold`` is the router's too);
    each is checked by its registry entry. Runs before any model does, so bad input costs nothing — except
    that a router's factory runs here, so a router's weights file is read (and refused) now.
    """
    spec = registry.get_method(method)
    registry.get_router(router)
    method_given, router_given = registry.split_params(method, router, {**params, "threshold": threshold})
    method_params = registry.check_method_params(method, method_given)
    router_params = registry.check_router_params(router, router_given)
    if spec.needs_small_base and not has_small_base:
        raise ValueError(f"method {method!r} needs small_base (the untuned base of the small model)")
    _check_decoding(max_new_tokens, temperature, top_p, top_k)
    if isinstance(trace_topk, bool) or not isinstance(trace_topk, (int, float)) or int(trace_topk) != trace_topk \
            or trace_topk < 0:
        raise ValueError(f"trace_topk must be an integer >= 0, got {trace_topk!r}")
    stops = _stops(stop)
    cfg = DecodeConfig(method, router, method_params, int(max_new_tokens),
                       float(temperature), float(top_p), int(top_k), stops, seed, record_trace, router_params,
                       int(trace_topk))
    cfg.route  # build the router now: a factory's error (a bad weights file) comes before any model runs
    return cfg


def _stops(stop: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(not s for s in stops):
        raise ValueError("stop strings must be non-empty")
    return stops


def _check_decoding(max_new_tokens: int, temperature: float, top_p: float, top_k: int) -> None:
    if temperature is None or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
