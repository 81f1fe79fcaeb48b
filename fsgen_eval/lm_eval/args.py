"""The ``--model_args`` of ``lm_eval --model fsgen``: merging, checking, naming. Torch-free.

The schema is the keyword signature of ``FSGenLM.__init__`` (see model.py) plus every method's and
router's parameters from the registries (:mod:`fsgen_eval.core.registry`); this module holds what can be
decided without loading anything, so that bad input fails in one line before any model or task loads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fsgen_eval.core.guards import cut
from fsgen_eval.core.runs import is_bool_word, parse_bool
# the naming rules live in core/runs.py (one copy for every layer); re-exported for the adapter's callers
from fsgen_eval.core.runs import model_label, pair_name, pair_name_from_model_args, sanitize  # noqa: F401

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
            f"unknown model_args key(s) {', '.join(map(cut, unknown))} for --model fsgen; valid keys: {', '.join(valid)}"
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


def same_model(a: str, b: str) -> bool:
    """Whether two ``small``/``large`` values name one model: the same local folder, or the same hub id."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a.rstrip("/") == b.rstrip("/")


def check_distinct_pair(small: str, large: str, method: str, router: str) -> None:
    """Refuse ``small`` = ``large`` where System 2 would be called: System 2 is then System 1's own
    distribution (or, for speculative and contrastive decoding, reduces to it), so the run would load the model
    twice to report a collaboration rate of 0 by construction. Router ``never`` (System 1 alone, e.g. System 2's
    own run for a replay) and methods that read ``small_base`` (proxy tuning: ``large + α·(small − small_base)``
    still differs from the small model) stay allowed. Unknown names are left to the registry's own check."""
    from fsgen_eval.core import registry

    if not same_model(small, large):
        return
    try:
        never = registry.get_router(router).never_calls
        needs_base = registry.get_method(method).needs_small_base
    except (KeyError, ValueError):
        return
    if not (never or needs_base):
        raise ModelArgsError(f"small and large are the same model ({small}): with method={method}, "
                             f"router={router} System 2 always agrees with System 1 (collaboration rate 0 by "
                             "construction); give two different models, or router=never for the model alone")


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
        raise ModelArgsError(f"unknown model_args key(s) {', '.join(map(cut, unknown))} for --model fsgen; "
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
    """``trace``: a path (file ``*.jsonl`` or folder), ``false`` to write none, or unset / ``true``: the location
    ``fsgen-eval run --output_path OUT`` passes (``OUT/<pair>``, beside the results); without one, none is written
    (a warning says so).

    A path is refused up front when its folder cannot be created or written (the first batch would fail).
    """
    if trace is None or (isinstance(trace, str) and trace.strip().lower() == "none"):
        return None
    if isinstance(trace, bool) or (isinstance(trace, str) and is_bool_word(trace)):
        # true: the location fsgen-eval run passes (the default); false: none
        return None if parse_bool("trace", trace) else "false"
    if not isinstance(trace, str) or not trace.strip():
        raise ModelArgsError(f"trace must be a path, true or false, got {trace!r}")
    check_writable_target("trace", trace)
    return trace


def check_trace_topk(trace_topk: Any, trace: str | None) -> int:
    """``trace_topk``: an integer >= 0; with K > 0 an explicit ``trace=FILE.jsonl`` must not have a side file yet
    (Parquet cannot be appended to, and the run would fail only at its first batch)."""
    try:
        k = int(trace_topk)
        whole = k == float(trace_topk)
    except (TypeError, ValueError):
        raise ModelArgsError(f"trace_topk must be an integer >= 0, got {trace_topk!r}") from None
    if not whole or k < 0 or isinstance(trace_topk, bool):
        raise ModelArgsError(f"trace_topk must be an integer >= 0, got {trace_topk!r}")
    if k and trace == "false":
        raise ModelArgsError("trace_topk needs traces: it cannot go with trace=false")
    if k and trace and trace.endswith(".jsonl"):
        side = Path(trace).with_suffix(".topk.parquet")
        if side.exists():
            raise ModelArgsError(f"{side}: top-K side file exists already (Parquet cannot be appended to, even with "
                                 "trace_append=true); move it away or choose another trace path")
    return k


def check_writable_target(key: str, value: str) -> None:
    """``value`` (a ``*.jsonl`` file or a folder) can be written: its folder exists and takes a file, or the
    nearest existing ancestor takes a new folder. Probed with a temporary entry, removed at once."""
    target = Path(value).expanduser()
    folder = target.parent if target.suffix == ".jsonl" else target
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ModelArgsError(f"{key}={value}: {existing} is a file, not a folder")
    try:
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as err:
        what = f"cannot write in {folder}" if existing == folder else f"cannot create {folder}"
        raise ModelArgsError(f"{key}={value}: {what} ({err.strerror or err})") from None


# ------------------------------------------------------------------------------------- value checks
# The dtype names HFLM and the engine turn into a torch dtype (``getattr(torch, name)``), and ``auto``.
DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16", "float64", "float", "half", "double")


def _bad(key: str, value: Any, expected: str) -> ModelArgsError:
    return ModelArgsError(f"{key}={value} is not valid: expected {expected}")


def check_batch_size(value: Any, key: str = "batch_size") -> int | str:
    """A positive integer, ``auto`` or ``auto:N`` (N > 0: re-detect N times), as ``--model hf`` takes."""
    text = str(value).strip()
    if isinstance(value, bool):
        raise _bad(key, value, "a positive integer, auto or auto:N")
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text == "auto":
        return text
    head, _, times = text.partition(":")
    if head == "auto" and _positive_number(times):
        return text
    raise _bad(key, value, "a positive integer, auto or auto:N")


def _positive_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False


def check_positive_int(key: str, value: Any, allow_none: bool = True) -> int | None:
    """``max_batch_size``, ``max_length``, ``num_draft``: an integer >= 1 (``None`` = the default)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value).strip()) < 1:
        raise _bad(key, value, "an integer >= 1")
    return int(str(value).strip())


def check_dtype(value: Any) -> Any:
    """``auto`` or a floating torch dtype's name; a ``torch.dtype`` object passes (the Python API)."""
    if type(value).__name__ == "dtype":
        return value
    if not isinstance(value, str) or value.strip() not in DTYPES:
        raise _bad("dtype", value, ", ".join(DTYPES))
    return value.strip()


def check_number(key: str, value: Any) -> float | None:
    """A finite number (``threshold``, ``alpha``, ``beta``); ``None`` stays unset."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(key, value, "a number") from None
    if not math.isfinite(number):
        raise _bad(key, value, "a finite number")
    return number


# Every boolean model_arg: parsed by core.runs.parse_bool (true/false, 1/0, yes/no, on/off), never by truthiness.
BOOL_KEYS: tuple[str, ...] = ("trust_remote_code", "parallelize", "trace_append")


def check_bool(key: str, value: Any) -> bool:
    """A boolean model_arg or CLI value; ``ModelArgsError`` naming ``key`` for any other spelling."""
    try:
        return parse_bool(key, value)
    except ValueError as err:
        raise ModelArgsError(str(err)) from None


def check_values(given: Mapping[str, Any]) -> dict[str, Any]:
    """Check and convert the values of ``--model_args`` that need no model; one line naming key and value.

    ``given``: the constructor's keywords; returned with those values converted (the rest are left to the
    engine, which checks them before any model runs).
    """
    out: dict[str, Any] = dict(given)
    if "batch_size" in given:
        out["batch_size"] = check_batch_size(given["batch_size"])
    for key in ("max_batch_size", "max_length", "num_draft"):
        if key in given:
            out[key] = check_positive_int(key, given[key])
    if "dtype" in given:
        out["dtype"] = check_dtype(given["dtype"])
    for key in ("threshold", "alpha", "beta"):
        if key in given:
            out[key] = check_number(key, given[key])
    for key in BOOL_KEYS:
        if key in given:
            out[key] = check_bool(key, given[key])
    return out


# ---------------------------------------------------------------------------------- gen_kwargs
# Generation kwargs the engine implements, those HFLM handles itself before calling the model, and
# those accepted only at their no-op value; others are refused rather than silently dropped.
ENGINE_GEN_KEYS: tuple[str, ...] = ("do_sample", "temperature", "top_p", "top_k")
HFLM_GEN_KEYS: tuple[str, ...] = ("until", "max_gen_toks", "attention_mask")
NOOP_GEN: dict[str, Any] = {"num_beams": 1, "repetition_penalty": 1.0}


def check_gen_kwargs(gen: Mapping[str, Any] | None, where: str = "--gen_kwargs") -> None:
    """Refuse unsupported generation kwargs and bad sampling values, naming the key and the value.

    Runs on ``--gen_kwargs`` before any model loads (``fsgen-eval run``) and again on each
    request's kwargs (the task's YAML merged with the command line).
    """
    gen = dict(gen or {})
    extra = sorted(k for k, v in gen.items() if k not in ENGINE_GEN_KEYS + HFLM_GEN_KEYS
                   and NOOP_GEN.get(k, object()) != v)
    if extra:
        raise ModelArgsError(f"--model fsgen does not support generation kwarg(s) {', '.join(extra)} "
                             f"(supported: {', '.join(ENGINE_GEN_KEYS + HFLM_GEN_KEYS[:2])})")
    for key, value in gen.items():
        if value is None:
            continue
        if key == "do_sample" and not is_bool_word(value):
            raise _bad(f"{where} do_sample", value, "true/false, 1/0, yes/no or on/off")
        if key == "temperature" and not _in_range(value, lambda t: t >= 0):
            raise _bad(f"{where} temperature", value, "a number >= 0")
        if key == "top_p" and not _in_range(value, lambda p: 0 < p <= 1):
            raise _bad(f"{where} top_p", value, "a number in (0, 1]")
        if key == "top_k" and not _in_range(value, lambda k: k >= 0 and k == int(k)):
            raise _bad(f"{where} top_k", value, "an integer >= 0")
        if key == "max_gen_toks" and not _in_range(value, lambda n: n >= 1 and n == int(n)):
            raise _bad(f"{where} max_gen_toks", value, "an integer >= 1")


def _in_range(value: Any, ok: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and bool(ok(number))


def sampling(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One request's generation kwargs → the engine's (temperature 0 = greedy), checked first."""
    check_gen_kwargs(kwargs, where="generation kwarg")
    temperature = float(kwargs.get("temperature") or 0.0)
    do_sample = kwargs.get("do_sample")
    if not (temperature > 0 if do_sample is None else parse_bool("do_sample", do_sample)):
        temperature = 0.0
    elif temperature == 0.0:
        log.warning("fsgen: do_sample=True without a temperature: sampling at temperature 1.0")
        temperature = 1.0
    top_p = float(kwargs.get("top_p") or 1.0) if temperature > 0 else 1.0
    top_k = int(kwargs.get("top_k") or 0) if temperature > 0 else 0
    # no seed: the engine then draws one from torch's global RNG, which lm-eval's --seed seeds
    return {"temperature": temperature, "top_p": top_p, "top_k": top_k}


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
