"""The ``--model_args`` of ``lm_eval --model fsgen``: merging, checking, naming. Torch-free.

The schema is the keyword signature of ``FSGenLM.__init__`` (see model.py) plus every method's and
router's parameters from the registries (:mod:`fsgen_eval.core.registry`); this module holds what can be
decided without loading anything, so that bad input fails in one line before any model or task loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class OneLineError(ValueError, SystemExit):
    """An error the user must fix, raised before any work starts, reported as one line.

    A ``ValueError`` for callers (``simple_evaluate`` in Python), and a ``SystemExit`` whose ``code`` is
    ``prefix + message``: uncaught, the interpreter prints that line (no traceback) and exits with status
    1, so no global ``sys.excepthook`` is needed.
    """

    prefix = "error: "

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = self.prefix + message


class ModelArgsError(OneLineError):
    """Bad ``--model_args`` (or a pair or launch that cannot work)."""

    prefix = "lm_eval --model fsgen: error: "


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


def check_trace_file(trace_arg: str | None, append: bool) -> None:
    """``trace=FILE.jsonl`` refuses an existing file (two runs would mix) unless ``trace_append=true``."""
    if trace_arg and trace_arg != "false" and Path(trace_arg).suffix == ".jsonl" and not append:
        if Path(trace_arg).exists():
            raise ModelArgsError(f"trace={trace_arg} exists; pass trace_append=true to add this run to it "
                                 "(records carry run_id) or name a new file")


def check_launch(environ: Mapping[str, str] | None = None, cuda_devices: int | None = None) -> None:
    """Refuse a multi-process launch that lm-eval will not shard: each process would do all the work.

    lm-eval's HFLM splits documents over processes only when there are at least two GPUs (one per
    process); otherwise every process of an ``accelerate launch`` / ``torchrun`` evaluates every document.
    """
    environ = os.environ if environ is None else environ
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count()
    if cuda_devices < 2:
        raise ModelArgsError(
            f"{world} processes were launched (WORLD_SIZE={world}) but lm-eval splits documents over "
            f"processes only with one GPU each ({cuda_devices} visible): every process would evaluate every "
            "document; launch a single process")


def check_remote_code(role: str, path: str, trust_remote_code: bool) -> None:
    """A local model whose config needs custom code (``auto_map``) is refused naming the switch."""
    config = Path(path) / "config.json"
    if trust_remote_code or not config.is_file():
        return
    try:
        needs_code = "auto_map" in json.loads(config.read_text())
    except (OSError, ValueError):
        return  # not ours to judge: loading reports it
    if needs_code:
        raise ModelArgsError(f"{role}={path!r} runs custom code from its folder (config.json has auto_map); "
                             "pass trust_remote_code=true in --model_args if you trust it")


def under_lm_eval_cli() -> bool:
    """Whether lm-eval's command line runs this process (``lm_eval``, ``python -m lm_eval``,
    ``fsgen-eval run``): it prints its tables after the run, and the fsgen summary goes after them."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return "lm_eval.__main__" in sys.modules or getattr(main_spec, "name", None) == "lm_eval.__main__"


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
