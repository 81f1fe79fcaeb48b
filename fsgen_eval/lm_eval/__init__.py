"""Layer 3, the lm-eval adapter: ``--model fsgen`` (an HFLM subclass), its model_args, trace files,
the offline caches (:mod:`~fsgen_eval.lm_eval.offline`) and sandboxed code execution. Imports the engine and core; never the analysis.

Importing this package registers ``fsgen`` in lm-eval's model registry (a lazy placeholder: the model module
and torch load only when lm-eval builds the model), so ``import fsgen_eval.lm_eval`` is enough for
``lm_eval.simple_evaluate(model="fsgen", ...)``; ``fsgen-eval run`` does it for lm-eval's command line.
Nothing else is touched: no import hook, no patched function of lm-eval, datasets or evaluate.

The sub-package is named after the library it adapts; absolute imports (``import lm_eval``) inside it
still reach lm-eval itself.
"""

from __future__ import annotations

MODEL_NAME = "fsgen"
MODEL_TARGET = "fsgen_eval.lm_eval.model:FSGenLM"


def register() -> None:
    """Register ``fsgen`` with lm-eval (once), after lm-eval's built-ins.

    lm-eval's ``get_model`` imports ``lm_eval.models`` (which registers ``hf`` and the other built-ins) only
    while its registry is empty, so the built-ins are imported first: registering ``fsgen`` into an empty
    registry would hide them.
    """
    import lm_eval.models  # noqa: F401  (the built-ins, as lazy placeholders)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


register()

