"""Layer 5, experiments: sweeps over model pairs, the demo, the micro family's trainer, test fixtures.

May import every layer below; the CLI (``fsgen_eval.cli``) is a thin front over these.
"""
