"""How a run is named and configured, written once for every layer: booleans, ``k=v`` model_args, labels.

Torch-free and lm-eval-free (the analysis imports it). Each rule here is the only copy: the adapter's
``--model_args`` checks, the replay's reading of a results file's ``model_args`` and the sweep's cell folders
all call these functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The spellings a boolean model_arg, CLI value or environment switch accepts (any case, surrounding spaces
# ignored). Anything else is refused: a non-empty string is never "true" by being non-empty (issue 24:
# ``trust_remote_code=no`` once ran a model folder's custom code).
TRUE_WORDS: tuple[str, ...] = ("true", "1", "yes", "on")
FALSE_WORDS: tuple[str, ...] = ("false", "0", "no", "off")


def parse_bool(key: str, value: Any) -> bool:
    """``value`` as a boolean: ``True``/``False``, the integers 1/0, or one of ``TRUE_WORDS``/``FALSE_WORDS``.

    Raises ``ValueError`` (one line naming ``key``) for anything else, e.g. ``"nah"``, ``2`` or ``None``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    shown = repr(value) if not isinstance(value, str) else value[:80]
    raise ValueError(f"{key}={shown} is not valid: expected one of true/false, 1/0, yes/no, on/off")


def is_bool_word(value: Any) -> bool:
    """Whether ``value`` is one of the accepted boolean spellings (or a bool)."""
    try:
        parse_bool("", value)
    except ValueError:
        return False
    return True


def parse_model_args(model_args: Any) -> dict[str, Any]:
    """lm-eval's ``model_args`` (a dict, or the ``k=v,k2=v2`` string of ``--model_args``) as a dict.

    Values of a string stay strings (stripped); a dict is copied as it is. Anything else is an empty dict:
    a results file written by something other than lm-eval has no model_args to read. A piece without
    ``=`` is refused (lm-eval refuses it too).
    """
    if isinstance(model_args, Mapping):
        return dict(model_args)
    if not isinstance(model_args, str):
        return {}
    out: dict[str, Any] = {}
    for piece in filter(None, (p.strip() for p in model_args.split(","))):
        key, eq, value = piece.partition("=")
        if not (key.strip() and eq):
            raise ValueError(f"model_args: {piece[:80]!r} is not key=value (write key=value pairs separated by commas)")
        out[key.strip()] = value.strip()
    return out


# ------------------------------------------------------------------------------------------- labels
def sanitize(name: str) -> str:
    """The same substitution lm-eval applies to model names for its results folder."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def model_label(path: str) -> str:
    """A model's short name: a local folder's last component, or a hub id with ``/`` turned into ``__``."""
    if os.path.exists(path):
        return sanitize(Path(path).resolve().name)
    return sanitize(path.rstrip("/"))


def pair_name(small: str, large: str) -> str:
    """The results folder of an fsgen run, e.g. ``Qwen__Qwen1.5-0.5B__Qwen__Qwen1.5-7B``."""
    return f"{model_label(small)}__{model_label(large)}"


def pair_name_from_model_args(model_args: Any) -> str | None:
    """``pair_name`` from lm-eval's ``model_args`` (a dict or a ``k=v,...`` string); ``None`` if incomplete."""
    try:
        args = parse_model_args(model_args)
    except ValueError:
        return None
    small, large = args.get("small"), args.get("large")
    if isinstance(small, str) and isinstance(large, str) and small and large:
        return pair_name(small, large)
    return None
