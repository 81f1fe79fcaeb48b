"""Analysis and reports over the files the lm-eval adapter writes (numpy/scipy/matplotlib; no torch).

One concern per module: ``files`` (reading results, traces, CSV), ``params`` (parameter counts),
``scaling`` (collaboration-rate scaling laws), ``signals`` (System-1 uncertainty vs handoffs: AUROC,
distributions, positions), ``whatif`` (threshold-router trade-offs), ``sweep`` (grids of lm-eval runs),
``gate`` (CI regression check), ``plots`` (figures from finished estimates), ``report`` (Markdown/HTML),
``commands`` (the ``fsgen-eval`` subcommands).
"""
