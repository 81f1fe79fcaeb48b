"""Per pair and task of a sweep: collaboration rate with its 95 % intervals and the AUROC of System 1's
entropy for predicting handoffs — the Markdown table behind README's findings.

Two intervals, because they answer different questions: "clustered" treats each request (one generation) as
a cluster of correlated tokens (delta method, ``gate.ratio_ci``) — the honest one for a rate over these test
sets; "token" is the binomial interval that treats every token as independent, which it is not (a model in a
repetition loop agrees or disagrees with the other for the whole loop). Their squared ratio, the design effect,
says how many tokens one independent observation is worth. ``--target`` marks each clustered interval that
is within ±target, and a last line counts them.

Usage: python scripts/rate_intervals.py SWEEP_FOLDER [--params model_configs/micro.yaml] [--target 0.01]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fsgen_eval.analysis.files import find_runs, run_records, traces_of
from fsgen_eval.analysis.gate import ratio_ci
from fsgen_eval.analysis.params import ParamTable, read_param_file
from fsgen_eval.analysis.signals import auroc, called_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, nargs="+", help="sweep folders (or cells, or results files)")
    ap.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "model_configs/micro.yaml")
    ap.add_argument("--target", type=float, default=0.01, help="half-width each clustered interval should meet")
    args = ap.parse_args()
    params = ParamTable(read_param_file(args.params))
    rows = []
    for run in find_runs(args.sweep):
        small, large = run.fsgen.small, run.fsgen.large
        n_small, n_large = params.get(small), params.get(large)
        for task in run.fsgen.per_task:
            records = [r for r in run_records(run) if r["task"] == task]
            traces = traces_of(records)
            handoffs = np.array([t["handoff"].sum() for t in traces])
            tokens = np.array([len(t["handoff"]) for t in traces])
            lo, hi = ratio_ci(handoffs, tokens)
            rate = handoffs.sum() / tokens.sum()
            tok = called_tokens(traces)
            rows.append((task, Path(small).name, Path(large).name, n_large / n_small, len(traces), tokens.sum(),
                         rate, (hi - lo) / 2, token_half_width(rate, tokens.sum()),
                         auroc(tok.scores["s1_entropy"], tok.handoff)))
    rows.sort(key=lambda r: (r[0], r[3]))
    print("| task | small | large | ratio | requests | tokens | collaboration rate | 95 % CI ± (clustered) "
          f"| within ±{args.target:g} | 95 % CI ± (token) | design effect | entropy AUROC |")
    print("|---|---|---|---:|---:|---:|---:|---:|:---:|---:|---:|---:|")
    for task, s, l, ratio, n_req, n_tok, rate, half, tok_half, auc in rows:
        ok = "yes" if half < args.target else "**no**"
        print(f"| {task} | {s} | {l} | {ratio:.1f} | {n_req} | {n_tok} | {rate:.4f} | {half:.4f} | {ok} "
              f"| {tok_half:.4f} | {(half / tok_half) ** 2:.1f} | {auc:.3f} |")
    met = sum(r[7] < args.target for r in rows)
    print(f"\nClustered 95 % intervals within ±{args.target:g}: {met} of {len(rows)}; token-level: "
          f"{sum(r[8] < args.target for r in rows)} of {len(rows)}.")


def token_half_width(rate: float, n_tokens: int, z: float = 1.959964) -> float:
    """Half-width of the normal-approximation binomial interval with every token independent."""
    return z * float(np.sqrt(rate * (1 - rate) / n_tokens))


if __name__ == "__main__":
    main()
