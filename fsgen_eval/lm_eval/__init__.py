"""Layer 3, the lm-eval adapter: ``--model fsgen`` (an HFLM subclass), its model_args, trace files,
offline datasets and sandboxed code execution. Imports the engine and core; never the analysis.

The sub-package is named after the library it adapts; absolute imports (``import lm_eval``) inside it
still reach lm-eval itself.
"""
