"""``fsgen-eval demo``: one micro pair through lm-eval on GSM8K in five configurations, then a report
(the work itself is :mod:`fsgen_eval.experiments.demo`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from fsgen_eval.experiments.demo import COMMITTED_OUT, DEFAULT_OUT, DEMO, check_args, run_configs, write_demo_report


def register(sub: Any) -> None:
    """Add ``fsgen-eval demo`` to the dispatcher's subparsers."""
    p = sub.add_parser("demo", help=f"run one micro pair through lm-eval on {DEMO.task} (System 1, System 2, "
                       "speculative, contrastive, entropy-routed) and report")
    p.add_argument("--small", default=DEMO.small, help="System 1: a micro model name or a model folder")
    p.add_argument("--large", default=DEMO.large, help="the large model: a micro model name or a model folder")
    p.add_argument("--limit", type=int, default=DEMO.limit, help=f"{DEMO.task} test problems (lm-eval --limit)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"report folder (default {DEFAULT_OUT}, git-ignored); runs go to OUT/runs/")
    p.add_argument("--update-committed", action="store_true",
                   help=f"write the committed report {COMMITTED_OUT} (the only way the demo touches committed files)")
    p.add_argument("--target-call-rate", type=_rates, default=DEMO.call_rates,
                   help="the entropy router's large-model call rate(s) on the oracle's traces, e.g. 0.3,0.6: "
                        "one routed run each")
    p.add_argument("--max-gen-toks", type=int, help="cap on generated tokens (default: the task's 256)")
    p.add_argument("--force", action="store_true", help="rerun configurations that are already complete")
    p.set_defaults(func=cmd_demo)


def _rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def cmd_demo(args: argparse.Namespace) -> int:
    """``fsgen-eval demo``: run the demo's configurations through lm-eval offline and write the report."""
    t0 = time.monotonic()
    data, small, large = check_args(args)  # one-line errors before anything runs
    # the lm-eval subprocesses inherit these: no hub (a dataset comes from datasets' own cache, filled below)
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if data is not None:  # a task with a dataset (not fsgen_arith, which generates its problems)
        from fsgen_eval.lm_eval.offline import build_offline_cache

        build_offline_cache(data)
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    print(f"demo: {small.name} -> {large.name}, {DEMO.task} x {args.limit}, "
          f"{'datasets from ' + str(data) if data else 'no dataset needed'}; "
          f"results in {args.out}", flush=True)
    try:
        lines = run_configs(small, large, runs_dir, args.limit, args.max_gen_toks, args.target_call_rate, args.force)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    md, page = write_demo_report(args.out, small, large, args.limit, args.target_call_rate, args.max_gen_toks)
    print("\n".join(lines))
    print(f"demo: wall time {time.monotonic() - t0:.0f} s")
    print(f"demo: report written to {md} and {page}")
    return 0
