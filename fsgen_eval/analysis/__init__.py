"""Analysis and reports over the files the lm-eval adapter writes (numpy/scipy/matplotlib; no torch).

One concern per module: ``files`` (reading results, traces, CSV), ``params`` (parameter counts),
``scaling`` (collaboration-rate scaling laws), ``signals`` (System-1 uncertainty vs handoffs: AUROC,
distributions, positions), ``whatif`` (threshold-router trade-offs), ``gate`` (the regression check),
``plots`` (figures from finished estimates), ``report`` (Markdown/HTML). Sweeps live in
``fsgen_eval.experiments.sweep``, the subcommands in ``fsgen_eval.cli.analysis``.
"""
