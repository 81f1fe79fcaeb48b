"""Decoding settings: one frozen ``DecodeConfig``, validated by ``make_config`` before any model runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fsgen_eval.core.methods import CONTRASTIVE_VARIANTS, METHODS, Method, get_method
from fsgen_eval.core.routers import Router, get_router


@dataclass(frozen=True)
class DecodeConfig:
    method: str = "oracle"  # key of methods.METHODS
    router: str = "always"  # key of routers.ROUTERS
    threshold: float | None = None  # the router's threshold (max_prob, margin, entropy)
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters, defaults filled in
    max_new_tokens: int = 64  # upper bound on emitted tokens per row
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    top_k: int = 0  # 0 = no top-k filter
    stop: tuple[str, ...] = ()  # stop strings, checked on the decoded generation
    seed: int | None = None  # seeds the sampling generator
    record_trace: bool = True  # False: keep only what the summary needs (no uncertainty statistics)

    @property
    def method_spec(self) -> Method:
        return METHODS[self.method]

    @property
    def router_spec(self) -> Router:
        return get_router(self.router)


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
    **method_params: Any,
) -> DecodeConfig:
    """Validate every setting and return a ``DecodeConfig``; ``ValueError`` naming the problem otherwise.

    Runs before any model does, so bad input costs nothing.
    """
    spec = get_method(method)
    rt = get_router(router)
    unknown = sorted(set(method_params) - set(spec.defaults))
    if unknown:
        takes = ", ".join(spec.defaults) or "no parameters"
        raise ValueError(f"method {method!r} does not use parameter(s) {', '.join(unknown)} (it takes: {takes})")
    params = {**spec.defaults, **{k: v for k, v in method_params.items()}}
    _check_params(method, params)
    if spec.needs_small_base and not has_small_base:
        raise ValueError(f"method {method!r} needs small_base (the untuned base of the small model)")
    if rt.needs_threshold and threshold is None:
        raise ValueError(f"router {router!r} needs a threshold")
    if threshold is not None and not rt.needs_threshold:
        raise ValueError(f"router {router!r} takes no threshold (routers that do: max_prob, margin, entropy)")
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if temperature is None or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(not s for s in stops):
        raise ValueError("stop strings must be non-empty")
    return DecodeConfig(method, router, None if threshold is None else float(threshold), params,
                        int(max_new_tokens), float(temperature), float(top_p), int(top_k), stops, seed, record_trace)


def _check_params(method: str, params: dict[str, Any]) -> None:
    if method == "speculative" and (int(params["num_draft"]) != params["num_draft"] or params["num_draft"] < 1):
        raise ValueError(f"num_draft must be an integer >= 1, got {params['num_draft']!r}")
    if method == "contrastive":
        if not 0 <= params["alpha"] <= 1:
            raise ValueError(f"contrastive alpha (plausibility cut-off) must be in [0, 1], got {params['alpha']!r}")
        if params["beta"] < 0:
            raise ValueError(f"contrastive beta must be >= 0, got {params['beta']!r}")
        if params["contrastive_variant"] not in CONTRASTIVE_VARIANTS:
            raise ValueError(f"unknown contrastive_variant {params['contrastive_variant']!r}; "
                             f"valid: {', '.join(CONTRASTIVE_VARIANTS)}")
