"""The offline switches for lm-eval's unchanged tasks, installed by ``import fsgen_eval.lm_eval``.

Still a post-import hook on ``sys.meta_path`` (issue 21 item 4 replaces it with task YAMLs pointing at local
files): it does nothing until a watched module is imported. ``--model fsgen`` itself is registered by
importing :mod:`fsgen_eval.lm_eval`, not by this hook; nothing is written into site-packages.
Watched modules and what happens once each has been imported:

- ``datasets``: with ``FSGEN_DATASETS_DIR`` set, hub dataset ids found in that folder load from it.
- ``evaluate``: offline, ``evaluate.load("code_eval")`` returns fsgen_eval's local pass@k.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_lock = threading.RLock()


# --------------------------------------------------------------------------------------- what to do
def patch_datasets(module: ModuleType) -> None:
    """With ``FSGEN_DATASETS_DIR`` set, let Hugging Face ``datasets.load_dataset`` read hub ids from that folder."""
    if callable(getattr(module, "load_dataset", None)):  # Hugging Face datasets, not a namesake
        from fsgen_eval.lm_eval.offline import patch_load_dataset

        patch_load_dataset(module)


def patch_evaluate(module: ModuleType) -> None:
    """Offline, let ``evaluate.load("code_eval")`` return the local pass@k."""
    if callable(getattr(module, "load", None)) and hasattr(module, "EvaluationModule"):  # HF evaluate
        from fsgen_eval.lm_eval.code_eval import patch_evaluate_load

        patch_evaluate_load(module)


WATCHED: dict[str, Callable[[ModuleType], None]] = {
    "datasets": patch_datasets,
    "evaluate": patch_evaluate,
}


# ------------------------------------------------------------------------------ post-import machinery
class _RunAfterLoader(importlib.abc.Loader):
    """Wraps a module's real loader and calls ``after(module)`` once the module has executed."""

    def __init__(self, loader: importlib.abc.Loader, after: Callable[[ModuleType], None]):
        self.loader = loader
        self.after = after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        try:
            self.after(module)
        except Exception as err:  # noqa: BLE001 - our extra must never break the import it watched
            logging.getLogger(__name__).warning("fsgen_eval: could not extend %s (%s)", module.__name__, err)

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; for a watched module it asks the other finders and wraps their loader."""

    def __init__(self, watched: dict[str, Callable[[ModuleType], None]]):
        self.watched = dict(watched)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        after = self.watched.get(fullname)
        if after is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    self.watched.pop(fullname, None)  # one shot: the module is imported once
                    spec.loader = _RunAfterLoader(spec.loader, after)
                return spec
        return None


def install() -> None:
    """Install the hook once; modules already imported get their treatment now."""
    with _lock:
        if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
            return
        pending = {}
        for name, after in WATCHED.items():
            module = sys.modules.get(name)
            if module is not None and getattr(module, "__spec__", None) is not None:
                after(module)
            else:
                pending[name] = after
        sys.meta_path.insert(0, _PostImportFinder(pending))
