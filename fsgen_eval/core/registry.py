"""The registries of collaboration methods and routers: what each takes and what the loop needs to know.

Torch-free, so the analysis layer (and ``fsgen-eval sweep``) can read router and method metadata without
torch. An entry names its implementation either as a callable or as ``"module:attr"`` (imported on first
use); the built-in functions live in :mod:`fsgen_eval.core.methods` and :mod:`fsgen_eval.core.routers`.

Everything that used to compare names asks an entry instead:

- a method's ``params`` (each with its default, check and help), ``loop`` (``"step"``: one token per step;
  ``"speculative"``: draft and verify), ``needs_small_base`` and ``large_alone`` (with a router that always
  calls, System 2 is the large model alone — the report's baseline row);
- a router's ``params``, its ``factory`` (params → a function ``[B, V] log-probs -> Bool[B]``), whether it
  ``never_calls`` / ``always_calls`` System 2 (the engine's shortcuts: ``never`` skips drafting, ``always``
  means fixed-length drafts), and its ``signal``: the System-1 trace field it thresholds (``s1_entropy``,
  ``s1_top1_prob``, ``s1_margin``) and whether it calls ``above`` or ``below`` the threshold (the what-if).

Parameters share one flat namespace with the decoding settings, because ``--model_args`` is flat: a name
may be shared by methods (``alpha`` of ``contrastive`` and ``proxy``), never by a method and a router, nor
with a reserved keyword (:data:`RESERVED`).

Extensions outside this tree register with :func:`register_method` / :func:`register_router` in a module
named in the environment variable ``FSGEN_PLUGINS`` (``module`` or ``path/to/file.py``, optionally
``:function`` to call after import; several separated by commas). The registries import those modules on
first use in every process — lm-eval's, a sweep's and each of its cells' — so an extension needs no edit
of this package.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLUGINS_ENV = "FSGEN_PLUGINS"
LOOPS = ("step", "speculative")
SIGNALS = ("s1_entropy", "s1_top1_prob", "s1_margin")  # trace fields a router may threshold

# keywords of make_config, generate/loglikelihood and FSGenLM that no method or router parameter may take
RESERVED = frozenset({
    "method", "router", "max_new_tokens", "temperature", "top_p", "top_k", "stop", "seed", "has_small_base",
    "record_trace", "pair", "prompts", "requests", "batch_size", "max_batch_size", "small", "large",
    "small_base", "dtype", "device", "max_length", "trust_remote_code", "parallelize", "trace", "trace_append",
    "params", "trace_topk",
})


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # a parameter's default when it must be given


# ---------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    """One parameter of a method or router: ``check(value) -> value`` raises ``ValueError`` naming it."""

    name: str
    default: Any  # REQUIRED: the parameter must be given
    check: Callable[[Any], Any]
    help: str = ""


def number(message: str, ok: Callable[[float], bool] = lambda v: True, integer: bool = False) -> Callable[[Any], Any]:
    """A check for a finite number (an integer if ``integer``) with ``ok(value)``; ``message`` is formatted
    with the offending value as ``{v!r}``."""

    def check(v: Any) -> Any:
        x = _as_number(v)
        if x is None or (integer and int(x) != x) or not ok(x):
            raise ValueError(message.format(v=v))
        return int(x) if integer else x

    return check


def _as_number(v: Any) -> float | int | None:
    """``v`` as a finite int or float (numeric text included: a sweep's ``k=v``), else ``None``."""
    if isinstance(v, str):
        try:
            v = float(v) if any(c in v for c in ".eEn") else int(v)
        except ValueError:
            return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return v


def one_of(name: str, choices: tuple[str, ...]) -> Callable[[Any], Any]:
    """A check that the value is one of ``choices``."""

    def check(v: Any) -> Any:
        if v not in choices:
            raise ValueError(f"unknown {name} {v!r}; valid: {', '.join(choices)}")
        return v

    return check


def _resolve(target: str | Callable) -> Callable:
    """A callable, or ``"module:attr"`` imported now."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class MethodSpec:
    """A collaboration method: ``fn(small, large, small_base, **params)`` maps log-probs ``[B, V]`` (and
    ``small_base`` ``[B, V]`` or ``None``) to System 2's unnormalised logits ``[B, V]``."""

    name: str
    impl: str | Callable  # the function, or "module:function"
    params: tuple[Param, ...] = ()
    loop: str = "step"  # "step": one token per step; "speculative": System 1 drafts, the large model verifies
    needs_small_base: bool = False
    large_alone: bool = False  # with an always-calling router, every token is the large model's own
    doc: str = ""
    # (parameter, value) under which System 1's tokens pass unverified where the router does not fire
    # (FS-GEN's lossy speculative decoding): the loop and teacher forcing read it instead of the name
    lossy_if: tuple[str, Any] | None = None
    # the parameter choosing between published variants of the method (contrastive: O'Brien & Lewis's or
    # FS-GEN's formula): reports name a run's method with it, and a fit never mixes two variants
    variant: str | None = None

    @property
    def fn(self) -> Callable:
        """The method's function (imported on first use when ``impl`` is ``"module:function"``)."""
        return _cached(self.impl)

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default (``REQUIRED`` where it must be given)."""
        return {p.name: p.default for p in self.params}

    @property
    def speculative(self) -> bool:
        """Whether it runs the draft-and-verify loop."""
        return self.loop == "speculative"

    def lossy(self, params: dict[str, Any]) -> bool:
        """Whether, with these parameters, System 1's tokens pass unverified where the router does not fire."""
        return self.lossy_if is not None and params.get(self.lossy_if[0]) == self.lossy_if[1]

    def variant_of(self, params: Mapping[str, Any]) -> str | None:
        """The variant these parameters choose (``None``: the method has no variants, or none is recorded)."""
        v = params.get(self.variant) if self.variant is not None else None
        return None if v is None else str(v)


@dataclass(frozen=True)
class RouterSpec:
    """A router: ``factory(**params)`` returns ``route(logprobs [B, V]) -> Bool[B]`` (True: call System 2).

    The factory runs once per distinct parameter set (so it may load weights from a file)."""

    name: str
    factory: str | Callable  # the factory, or "module:factory"
    params: tuple[Param, ...] = ()
    never_calls: bool = False  # System 2 is never evaluated: System 1 alone
    always_calls: bool = False  # System 2 at every token; in speculative decoding, fixed-length drafts
    signal: str | None = None  # the System-1 trace field it thresholds (one of SIGNALS)
    calls_when: str = "above"  # "above" / "below": where it calls System 2 relative to its threshold
    doc: str = ""
    _built: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default (``REQUIRED`` where it must be given)."""
        return {p.name: p.default for p in self.params}

    def build(self, params: Mapping[str, Any]) -> Callable:
        """The router function for checked ``params`` (built once per distinct parameter set)."""
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in self._built:
            self._built[key] = _resolve(self.factory)(**params)
        return self._built[key]


_impls: dict[str, Callable] = {}


def _cached(target: str | Callable) -> Callable:
    if callable(target):
        return target
    if target not in _impls:
        _impls[target] = _resolve(target)
    return _impls[target]


# ---------------------------------------------------------------------------------------- registries
class Registry(Mapping):
    """Name -> entry, in registration order; reading it first imports the ``FSGEN_PLUGINS`` modules."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        load_plugins()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        load_plugins()
        return len(self._entries)

    def get_spec(self, name: str) -> Any:
        """The entry, or ``ValueError`` listing the valid names."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self)}")
        return self[name]

    def add(self, spec: Any, replace: bool = False) -> Any:
        """Add an entry (``register_method`` / ``register_router`` check it first)."""
        if spec.name in self._entries and not replace:
            raise ValueError(f"{self.kind} {spec.name!r} is already registered")
        self._entries[spec.name] = spec
        return spec

    def remove(self, name: str) -> None:
        """Drop an entry if present (tests that register one clean up with this)."""
        self._entries.pop(name, None)


METHODS = Registry("method")
ROUTERS = Registry("router")


def _check_names(spec: Any, own: Registry, other: Registry) -> None:
    names = [p.name for p in spec.params]
    clash = sorted(set(names) & RESERVED)
    if clash:
        raise ValueError(f"{own.kind} {spec.name!r}: parameter name(s) {', '.join(clash)} are reserved")
    theirs = {p.name for s in other._entries.values() for p in s.params}
    clash = sorted(set(names) & theirs)
    if clash:
        raise ValueError(f"{own.kind} {spec.name!r}: parameter name(s) {', '.join(clash)} belong to a {other.kind}")


def register_method(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add a method; ``ValueError`` for a taken name, an unknown loop or a parameter name another kind owns."""
    if spec.loop not in LOOPS:
        raise ValueError(f"method {spec.name!r}: unknown loop {spec.loop!r}; valid: {', '.join(LOOPS)}")
    _check_names(spec, METHODS, ROUTERS)
    return METHODS.add(spec, replace)


def register_router(spec: RouterSpec, replace: bool = False) -> RouterSpec:
    """Add a router; ``ValueError`` for a taken name, an unknown signal or a clashing parameter name."""
    if spec.signal is not None and spec.signal not in SIGNALS:
        raise ValueError(f"router {spec.name!r}: unknown signal {spec.signal!r}; valid: {', '.join(SIGNALS)}")
    if spec.calls_when not in ("above", "below"):
        raise ValueError(f"router {spec.name!r}: calls_when must be 'above' or 'below', got {spec.calls_when!r}")
    _check_names(spec, ROUTERS, METHODS)
    return ROUTERS.add(spec, replace)


def get_method(name: str) -> MethodSpec:
    """The method's entry; ``ValueError`` listing the valid methods."""
    return METHODS.get_spec(name)


def get_router(name: str) -> RouterSpec:
    """The router's entry; ``ValueError`` listing the valid routers."""
    return ROUTERS.get_spec(name)


def param_names() -> list[str]:
    """Every parameter name of every method and router, in registration order (the ``--model_args`` keys
    beside the fixed ones)."""
    out: dict[str, None] = {}
    for reg in (ROUTERS, METHODS):
        for name in reg:
            out.update((p.name, None) for p in reg[name].params)
    return list(out)


def router_param_names() -> set[str]:
    """Every parameter name some router declares."""
    return {p.name for name in ROUTERS for p in ROUTERS[name].params}


def routers_taking(param: str) -> list[str]:
    """The routers that declare ``param``, in registration order."""
    return [name for name in ROUTERS if any(p.name == param for p in ROUTERS[name].params)]


def signal_router(signal: str, calls_when: str) -> RouterSpec | None:
    """The first registered router thresholding ``signal`` in direction ``calls_when`` (the what-if's)."""
    return next((ROUTERS[n] for n in ROUTERS if ROUTERS[n].signal == signal and ROUTERS[n].calls_when == calls_when),
                None)


# ------------------------------------------------------------------------------- checking parameters
def _fill(spec: MethodSpec | RouterSpec, kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults under ``given``, each value through its check; ``ValueError`` for a missing ``REQUIRED`` one."""
    out = {}
    for p in spec.params:
        if p.default is REQUIRED and p.name not in given:
            raise ValueError(f"{kind} {spec.name!r} needs a {p.name}" + (f" ({p.help})" if p.help else ""))
        out[p.name] = p.check(given[p.name]) if p.name in given else p.default
    return out


def check_method_params(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The method's parameters with defaults filled in and checked; ``ValueError`` naming a foreign one."""
    spec = get_method(name)
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        takes = ", ".join(spec.defaults) or "no parameters"
        raise ValueError(f"method {name!r} does not use parameter(s) {', '.join(unknown)} (it takes: {takes})")
    return _fill(spec, "method", given)


def check_router_params(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The router's parameters checked; ``ValueError`` for a missing required one or a foreign one."""
    spec = get_router(name)
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown == ["threshold"]:
        raise ValueError(f"router {name!r} takes no threshold (routers that do: {', '.join(routers_taking('threshold'))})")
    if unknown:
        takes = ", ".join(spec.defaults) or "no parameters"
        raise ValueError(f"router {name!r} does not use parameter(s) {', '.join(unknown)} (it takes: {takes})")
    return _fill(spec, "router", given)


def split_params(method: str, router: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat keywords -> (the method's, the router's): a name the router declares is the router's; every
    other name is the method's (so a foreign one is reported against the method, as before)."""
    rt = get_router(router)
    theirs = set(rt.defaults) | (router_param_names() - {p.name for p in get_method(method).params})
    to_router = {k: v for k, v in given.items() if k in theirs}
    return {k: v for k, v in given.items() if k not in to_router}, to_router


# ------------------------------------------------------------------------------------------- plugins
_plugins_lock = threading.RLock()
_plugins_loaded: set[str] = set()


def load_plugins(spec: str | None = None) -> None:
    """Import each ``module[:function]`` or ``file.py[:function]`` in ``spec`` (default: ``$FSGEN_PLUGINS``)
    once per process and call its function; ``ValueError`` naming the entry that fails."""
    spec = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    if not spec or spec in _plugins_loaded:  # the common case, on every registry read: nothing to do
        return
    for entry in (e.strip() for e in spec.split(",")):
        if not entry or entry in _plugins_loaded:
            continue
        with _plugins_lock:
            if entry in _plugins_loaded:
                continue
            _plugins_loaded.add(entry)  # before importing: a plugin's own registry reads must not recurse
            try:
                _load_plugin(entry)
            except Exception as err:
                _plugins_loaded.discard(entry)
                raise ValueError(f"{PLUGINS_ENV}: cannot load {entry!r}: {type(err).__name__}: {err}") from None
    _plugins_loaded.add(spec)


def _load_plugin(entry: str) -> None:
    target, _, func = entry.rpartition(":") if ":" in entry else (entry, "", "")
    if target.endswith(".py"):
        path = Path(target).resolve()
        name = f"fsgen_plugin_{path.stem}_{abs(hash(str(path))):x}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or not path.is_file():
                raise FileNotFoundError(f"no such file {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if func:
        getattr(module, func)()


# ------------------------------------------------------------------------------------- the built-ins
def _threshold() -> Param:
    return Param("threshold", REQUIRED, number("threshold must be a finite number, got {v!r}"),
                 "the value of System 1's statistic where the router starts calling System 2")


def _router_file(v: Any) -> str:
    """``router_path``: an existing file (its contents are checked when the factory reads it)."""
    if not isinstance(v, (str, Path)) or not str(v).strip():
        raise ValueError(f"router_path must be the path of a ROUTER.json file, got {v!r}")
    if not Path(v).is_file():
        raise ValueError(f"router_path={v}: no such file (make one with fsgen-eval router train)")
    return str(v)


CONTRASTIVE_VARIANTS = ("obrien", "fsgen")
SPECULATIVE_VARIANTS = ("bild", "fsgen")  # fsgen is lossy: System 1's tokens pass unverified off the router

for _m in (
    MethodSpec("oracle", "fsgen_eval.core.methods:oracle", large_alone=True, doc="always emit the large model's token"),
    MethodSpec("speculative", "fsgen_eval.core.methods:speculative",
               (Param("num_draft", 5, number("num_draft must be an integer >= 1, got {v!r}", lambda v: v >= 1, True),
                      "draft tokens per verification"),
                Param("speculative_variant", "bild", one_of("speculative_variant", SPECULATIVE_VARIANTS),
                      "bild: every token verified, a router ends drafts early; fsgen: FS-GEN's code, LOSSY: "
                      "System 1's tokens unverified where the router does not fire")),
               loop="speculative", lossy_if=("speculative_variant", "fsgen"), variant="speculative_variant", doc="System 1 drafts num_draft tokens, the large model verifies them "
                                       "(speculative_variant 'bild': every token verified; 'fsgen': lossy)"),
    MethodSpec("contrastive", "fsgen_eval.core.methods:contrastive", (
        Param("alpha", 0.1, number("contrastive alpha (plausibility cut-off) must be in [0, 1], got {v!r}",
                                   lambda v: 0 <= v <= 1), "plausibility cut-off: p_large >= alpha * max p_large"),
        Param("beta", 0.5, number("contrastive beta must be >= 0, got {v!r}", lambda v: v >= 0),
              "strength of the small model's penalty"),
        Param("contrastive_variant", "obrien", one_of("contrastive_variant", CONTRASTIVE_VARIANTS),
              "obrien: (1+beta) l - beta s; fsgen: s + beta (l - s)"),
    ), variant="contrastive_variant", doc="contrastive decoding (variant 'obrien' or 'fsgen')"),
    MethodSpec("proxy", "fsgen_eval.core.methods:proxy",
               (Param("alpha", 1.0, number("proxy alpha must be a finite number, got {v!r}"),
                      "strength of the tuned-minus-base offset"),),
               needs_small_base=True, doc="proxy tuning: large + alpha*(small - small_base)"),
):
    register_method(_m)

for _r in (
    RouterSpec("always", "fsgen_eval.core.routers:always", always_calls=True, doc="System 2 at every token"),
    RouterSpec("never", "fsgen_eval.core.routers:never", never_calls=True, doc="System 1 alone"),
    RouterSpec("max_prob", "fsgen_eval.core.routers:max_prob", (_threshold(),), signal="s1_top1_prob",
               calls_when="below", doc="System 1's top-1 probability < threshold"),
    RouterSpec("margin", "fsgen_eval.core.routers:margin", (_threshold(),), signal="s1_margin",
               calls_when="below", doc="System 1's top-1 minus top-2 probability < threshold"),
    RouterSpec("entropy", "fsgen_eval.core.routers:entropy", (_threshold(),), signal="s1_entropy",
               calls_when="above", doc="System 1's entropy (nats) > threshold"),
    RouterSpec("learned", "fsgen_eval.core.routers:learned",
               (Param("router_path", REQUIRED, _router_file,
                      "ROUTER.json of fsgen-eval router train (weights, scaler, threshold)"),),
               doc="a learned handoff classifier (fsgen-eval router train) > its saved threshold"),
):
    register_router(_r)
