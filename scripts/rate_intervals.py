"""Per pair and task of a sweep: collaboration rate with its 95 % interval (requests as clusters) and the
AUROC of System 1's entropy for predicting handoffs — the Markdown table behind README's findings.

Usage: python scripts/rate_intervals.py SWEEP_FOLDER [--params model_configs/micro.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fsgen_eval.analysis.files import find_runs, read_traces, traces_of
from fsgen_eval.analysis.gate import ratio_ci
from fsgen_eval.analysis.params import ParamTable, read_param_file
from fsgen_eval.analysis.signals import auroc, called_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "model_configs/micro.yaml")
    args = ap.parse_args()
    params = ParamTable(read_param_file(args.params))
    rows = []
    for run in find_runs([args.sweep]):
        small, large = run.fsgen["small"], run.fsgen["large"]
        n_small, n_large = params.get(small), params.get(large)
        for task in run.fsgen["per_task"]:
            records = [r for r in read_traces(run.trace_files) if r["task"] == task]
            traces = traces_of(records)
            handoffs = np.array([t["handoff"].sum() for t in traces])
            tokens = np.array([len(t["handoff"]) for t in traces])
            lo, hi = ratio_ci(handoffs, tokens)
            tok = called_tokens(traces)
            rows.append((task, Path(small).name, Path(large).name, n_large / n_small, len(traces), tokens.sum(),
                         handoffs.sum() / tokens.sum(), (hi - lo) / 2, auroc(tok.scores["s1_entropy"], tok.handoff)))
    rows.sort(key=lambda r: (r[0], r[3]))
    print("| task | small | large | ratio | requests | tokens | collaboration rate | 95 % CI ± | entropy AUROC |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for task, s, l, ratio, n_req, n_tok, rate, half, auc in rows:
        print(f"| {task} | {s} | {l} | {ratio:.1f} | {n_req} | {n_tok} | {rate:.4f} | {half:.4f} | {auc:.3f} |")


if __name__ == "__main__":
    main()
