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


# ------------------------------------------------------------------------------------------- layout
def with_trace(model_args: str | Mapping[str, Any], folder: Path) -> str | dict[str, Any]:
    """``model_args`` with ``trace=folder``, unless they set ``trace`` to a path or ``false`` themselves
    (``true``, ``None`` or empty: the default location, which is this one)."""
    given = parse_model_args(model_args).get("trace")
    unset = given is None or (isinstance(given, str) and given.strip().lower() in ("", "none"))
    if not unset and not (is_bool_word(given) and parse_bool("trace", given)):
        return model_args if isinstance(model_args, str) else dict(model_args)  # the user's own choice
    if isinstance(model_args, Mapping):
        return {**model_args, "trace": str(folder)}
    kept = [p for p in model_args.split(",") if p.strip() and p.partition("=")[0].strip() != "trace"]
    return ",".join([*kept, f"trace={folder}"])


def run_layout(output_path: str | Path, model_args: str | Mapping[str, Any]) -> tuple[Path, Path, Any] | None:
    """Where an fsgen run below lm-eval's ``--output_path`` puts its files: ``(folder, lm-eval's output_path,
    model_args)``, or ``None`` when ``output_path`` is already a ``.json`` file or the pair is incomplete.

    ``folder`` = ``output_path/<pair>``; lm-eval is given ``folder/results.json`` (its documented rule for a
    ``.json`` path: ``results_<date>.json`` and ``samples_*.jsonl`` in ``folder``) and the model
    ``trace=folder``, so results, samples and traces lie together, as ``fsgen-eval run`` arranges it. From
    Python: ``EvaluationTracker(output_path=str(lm_eval_path))`` and ``simple_evaluate(model_args=model_args)``.
    """
    pair = pair_name_from_model_args(model_args)
    if pair is None or Path(output_path).suffix == ".json":
        return None
    folder = Path(output_path) / pair
    return folder, folder / "results.json", with_trace(model_args, folder)


# ---------------------------------------------------------------------------------------- discovery
def results_files(folder: Path) -> list[Path]:
    """The lm-eval results files (``results_*.json``) of finished runs below ``folder``, sorted by path.

    The one discovery rule: any depth (lm-eval writes into ``OUT/<model name>/``, ``fsgen-eval run`` into
    ``OUT/<pair>/``), and nothing inside a ``*.tmp`` folder below ``folder`` (a sweep cell or demo configuration
    still running or killed: its results are not trustworthy; ``folder`` itself may be one, to check whether
    a finished run left a results file). A file ``folder`` is returned as the only result.
    """
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(f for f in folder.rglob("results_*.json")
                  if not any(p.endswith(".tmp") for p in f.relative_to(folder).parts[:-1]))


def recorded_trace(results_path: Path, name: str) -> tuple[Path, Path | None]:
    """A trace file a results file names (``config.fsgen.traces``): ``(as recorded, found)``, ``found`` ``None``
    when absent.

    Looked for by its name beside the results file first (``fsgen-eval run`` writes traces there, and the
    folder may have moved since: a sweep cell's is renamed when it finishes), then as recorded: absolute, or
    relative to the results file's folder, or to where the run started.
    """
    given = Path(name)
    recorded = given if given.is_absolute() else Path(results_path).parent / given
    candidates = [Path(results_path).parent / given.name, recorded, given]
    return recorded, next((c for c in candidates if c.is_file()), None)
