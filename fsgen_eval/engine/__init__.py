"""Layer 2, engine: model pairs, the batched KV-cached loop, speculative draft-and-verify, teacher forcing.

Imports ``fsgen_eval.core`` and torch/transformers; never lm-eval. Returns data; never prints or writes files.
"""
