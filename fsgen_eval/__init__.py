"""fsgen-eval: FS-GEN collaborative decoding (Zhang et al. 2024, arXiv 2406.12295) for lm-evaluation-harness.

Public Python API (lm-eval not required)::

    from fsgen_eval import ModelPair, generate, loglikelihood
    pair = ModelPair.load(small="...", large="...")
    out = generate(pair, ["prompt"], method="oracle", max_new_tokens=64)

Torch-heavy names are imported lazily so the analysis layer and ``fsgen-eval fit`` stay torch-free.

Importing the package changes nothing outside it. ``import fsgen_eval.lm_eval`` registers ``--model fsgen``
with lm-eval (for ``lm_eval.simple_evaluate(model="fsgen", ...)``); ``fsgen-eval run`` is lm-eval's command
line with it registered.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ModelPair": "fsgen_eval.engine.pair",
    "generate": "fsgen_eval.engine.api",
    "loglikelihood": "fsgen_eval.engine.api",
    "GenerationOutput": "fsgen_eval.engine.api",
    "LoglikelihoodOutput": "fsgen_eval.engine.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fsgen_eval' has no attribute {name!r}")
