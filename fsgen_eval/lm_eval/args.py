"""The ``--model_args`` of ``lm_eval --model fsgen``: merging, checking, naming. Torch-free.

The schema is the keyword signature of ``FSGenLM.__init__`` (see model.py) plus every method's and
router's parameters from the registries (:mod:`fsgen_eval.core.registry`); this module holds what can be
decided without loading anything, so that bad input fails in one line before any model or task loads.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ModelArgsError(ValueError):
    """Bad ``--model_args`` (or a pair that cannot work): reported as one line, without a traceback."""


def merge_args(model_args: Mapping[str, Any], extra: Mapping[str, Any] | None, valid: Iterable[str]) -> dict[str, Any]:
    """lm-eval's defaults (``extra``: batch_size, max_batch_size, device) under the user's ``model_args``.

    lm-eval passes ``device=cuda:0`` and ``batch_size=1`` even when ``--model_args`` holds them too, which
    its own models reject ("multiple values for keyword argument"); here the user's value wins.
    """
    valid = tuple(valid)
    unknown = sorted(set(model_args) - set(valid))
    if unknown:
        raise ModelArgsError(
            f"unknown model_args key(s) {', '.join(unknown)} for --model fsgen; valid keys: {', '.join(valid)}"
        )
    merged = {k: v for k, v in (extra or {}).items() if v is not None and k in valid}
    merged.update(model_args)
    return merged


def require_pair(small: Any, large: Any) -> None:
    """``ModelArgsError`` unless ``small`` and ``large`` are both given as paths or hub ids."""
    for role, value in (("small", small), ("large", large)):
        if not value or not isinstance(value, str):
            what = "System 1, the small model" if role == "small" else "System 2's large model"
            raise ModelArgsError(f"--model fsgen needs {role}=PATH ({what}) in --model_args")


def model_arg_names(fixed: Iterable[str]) -> list[str]:
    """The ``--model_args`` keys: the constructor's own ``fixed`` keywords, then every registered method's
    and router's parameter (``threshold``, ``num_draft``, ``alpha``, ...)."""
    from fsgen_eval.core.registry import param_names

    fixed = list(fixed)
    return fixed + [p for p in param_names() if p not in fixed]


def method_params(given: Mapping[str, Any]) -> dict[str, Any]:
    """The method and router parameters the user set, ``threshold`` aside (the engine fills in the rest and
    rejects foreign ones)."""
    from fsgen_eval.core.registry import param_names

    names = param_names()
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ModelArgsError(f"unknown model_args key(s) {', '.join(unknown)} for --model fsgen; "
                             f"method and router parameters: {', '.join(names)}")
    return {k: v for k, v in given.items() if k != "threshold" and v is not None}


def resolve_device(device: str | None, cuda_available: bool) -> str:
    """lm-eval's CLI passes ``cuda:0`` by default, GPU or not: fall back to the CPU with one warning."""
    device = str(device or "cuda")
    if device.startswith("cuda") and not cuda_available:
        log.warning("fsgen: device=%s but CUDA is not available; running on cpu", device)
        return "cpu"
    return device


def check_trace_arg(trace: Any) -> str | None:
    """``trace``: a path (file ``*.jsonl`` or folder), ``false`` to write none, or unset (beside results)."""
    if trace is None or trace is True:
        return None
    if trace is False:
        return "false"
    if not isinstance(trace, str) or not trace.strip():
        raise ModelArgsError(f"trace must be a path or false, got {trace!r}")
    if trace.strip().lower() in ("false", "none", "0", "no"):
        return "false"
    return trace


# ---------------------------------------------------------------------------------------------- naming
def sanitize(name: str) -> str:
    """The same substitution lm-eval applies to model names for its results folder."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def model_label(path: str) -> str:
    """A local folder's last component, or a hub id with ``/`` turned into ``__``."""
    if os.path.exists(path):
        return sanitize(Path(path).resolve().name)
    return sanitize(path.rstrip("/"))


def pair_name(small: str, large: str) -> str:
    """The results folder of an fsgen run, e.g. ``Qwen__Qwen1.5-0.5B__Qwen__Qwen1.5-7B``."""
    return f"{model_label(small)}__{model_label(large)}"


def pair_name_from_model_args(model_args: Any) -> str | None:
    """``pair_name`` from lm-eval's ``model_args`` (a dict or a ``k=v,...`` string); ``None`` if incomplete."""
    if isinstance(model_args, str):
        parsed = dict(part.split("=", 1) for part in model_args.split(",") if "=" in part)
        model_args = {k.strip(): v.strip() for k, v in parsed.items()}
    if not isinstance(model_args, Mapping):
        return None
    small, large = model_args.get("small"), model_args.get("large")
    if isinstance(small, str) and isinstance(large, str) and small and large:
        return pair_name(small, large)
    return None
