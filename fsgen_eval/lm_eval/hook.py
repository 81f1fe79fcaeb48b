"""Make ``--model fsgen`` (and the offline switches) exist in every lm-eval process, without editing lm-eval.

lm-eval 0.4.13 has no plugin discovery for models: ``get_model`` imports ``lm_eval.models`` (which registers
the built-ins) only while the model registry is empty. So registering ``fsgen`` *before* that would hide
``hf`` and every other built-in. We therefore wait until lm-eval's registry module has been imported, then
register the built-ins first and ``fsgen`` after them, as a lazy placeholder (no torch is imported here).

The waiting is done by a post-import hook on ``sys.meta_path``: it does nothing until a watched module is
imported, so it costs nothing in processes that never import lm-eval. It is installed by
``import fsgen_eval`` and, for lm-eval's own console scripts, by the ``fsgen_eval_lm_eval.pth`` file that
``pip install`` puts into site-packages (see setup.py).

Nothing of lm-eval is patched: the model finds its results folder itself (``model.running_tracker``).
Watched modules and what happens once each has been imported:

- ``lm_eval.api.registry``: register ``fsgen`` (built-ins first).
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

MODEL_NAME = "fsgen"
MODEL_TARGET = "fsgen_eval.lm_eval.model:FSGenLM"

_lock = threading.RLock()


# --------------------------------------------------------------------------------------- what to do
def register_fsgen(_registry_module: ModuleType | None = None) -> None:
    """Register ``fsgen`` in lm-eval's model registry, after the built-ins so ``hf`` etc. stay visible."""
    import lm_eval.models  # noqa: F401  (registers the built-in models as lazy placeholders)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


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
    "lm_eval.api.registry": register_fsgen,
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
