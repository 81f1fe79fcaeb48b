"""``FSGEN_DATASETS_DIR``: lm-eval's unchanged tasks read a local folder laid out like the Hugging Face hub.

With ``FSGEN_DATASETS_DIR=DIR``, ``datasets.load_dataset("openai/gsm8k", "main", ...)`` loads
``DIR/openai/gsm8k`` instead (a folder holding the dataset card's ``configs`` and the data files, as the
hub repository does), so ``gsm8k``, ``mmlu_*`` and ``mbpp`` run offline with their own task definitions.
Dataset ids not found under ``DIR`` go to the hub as usual (with a warning). Active in every process where
the fsgen_eval hook is installed (``lm_eval`` after ``pip install fsgen-eval``, or ``import fsgen_eval``).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

ENV_VAR = "FSGEN_DATASETS_DIR"
log = logging.getLogger(__name__)
_warned: set[str] = set()


def datasets_dir() -> Path | None:
    """The folder named by ``FSGEN_DATASETS_DIR``; ``None`` when unset; an error when it is not a folder."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{ENV_VAR}={value!r} is not a folder")
    return root


def local_dataset_path(path: Any) -> str | None:
    """``DIR/path`` when ``path`` is a hub dataset id present under ``FSGEN_DATASETS_DIR``, else ``None``."""
    root = datasets_dir()
    if root is None or not isinstance(path, str) or not path or os.path.isabs(path) or os.path.exists(path):
        return None  # no switch, or already a local path / packaged builder the caller meant
    candidate = root / path
    if candidate.is_dir():
        return str(candidate)
    if path not in _warned and "/" in path:
        _warned.add(path)
        log.warning("%s: %r is not under %s; loading it from the hub", ENV_VAR, path, root)
    return None


def patch_load_dataset(datasets_module: ModuleType) -> None:
    """Wrap ``datasets.load_dataset`` (lm-eval calls it through the module attribute) once."""
    original = datasets_module.load_dataset
    if getattr(original, "_fsgen_offline", False):
        return

    @functools.wraps(original)
    def load_dataset(path: Any = None, *args: Any, **kwargs: Any) -> Any:
        local = local_dataset_path(path)
        return original(local if local is not None else path, *args, **kwargs)

    load_dataset._fsgen_offline = True  # type: ignore[attr-defined]
    datasets_module.load_dataset = load_dataset
