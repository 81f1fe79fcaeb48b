"""``fsgen-eval frontier``: accuracy against large-model call rate and parameter cost, from System 1 alone to
System 2 alone, over threshold routers calibrated on held-out documents (:mod:`fsgen_eval.experiments.frontier`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("frontier", help="accuracy vs call rate and parameter cost over calibrated threshold routers")
    p.add_argument("--small", required=True, help="System 1 (a hub id or a local folder)")
    p.add_argument("--large", required=True, help="the large model")
    p.add_argument("--task", required=True, help="a generate_until task with an exact-match or pass@1 metric")
    p.add_argument("--limit", type=int, help="evaluate the task's first LIMIT documents")
    p.add_argument("--calibration-docs", help="START:END: the calibration documents, indices of the same split "
                   "at or after LIMIT (lm-eval --samples)")
    p.add_argument("--calibration-task", help="... or another task's documents (e.g. a validation-split variant)")
    p.add_argument("--calibration-limit", type=int, help="with --calibration-task: its first N documents")
    p.add_argument("--routers", default="max_prob,margin,entropy", help="threshold routers (comma-separated)")
    p.add_argument("--rates", default="0.05,0.1,0.2,0.3,0.5", help="target large-model call rates")
    p.add_argument("--speculative-fsgen", default="", help="routers (comma-separated, among --routers) whose "
                   "calibrated thresholds also run FS-GEN's LOSSY speculative decoding (method=speculative, "
                   "speculative_variant=fsgen), a series of its own")
    p.add_argument("--num-draft", type=int, default=5, help="draft tokens per verification of those points")
    p.add_argument("--learned", nargs="*", type=Path, default=[], help="ROUTER.json files (router=learned)")
    p.add_argument("--metric", help="lm-eval's results key, e.g. exact_match,strict-match (default: the first)")
    p.add_argument("--params", nargs="*", type=Path, help="parameter-count YAMLs (default: model_configs/)")
    p.add_argument("--model-args-extra", default="", help="appended to --model_args, e.g. dtype=float32")
    p.add_argument("--lm-eval-args", default="", help="more lm-eval arguments, e.g. '--include_path tasks/'")
    p.add_argument("--no-replay", action="store_true", help="decode System 2 alone lockstep instead of replaying")
    p.add_argument("--per-process", action="store_true", help="one lm-eval process per point (default: the "
                   "points run in one process, the pair loaded once, as the sweep's in-process cells)")
    p.add_argument("--n-boot", type=int, default=2000, help="document resamples for the gap-recovery intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output-path", type=Path, required=True)
    p.set_defaults(func=cmd_frontier)


def cmd_frontier(args: argparse.Namespace) -> int:
    from fsgen_eval.analysis import frontier as F
    from fsgen_eval.experiments import frontier as X

    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--rates must be numbers, got {args.rates!r}") from None
    plan = X.Plan(args.small, args.large, args.task, [r for r in args.routers.split(",") if r], rates, args.limit,
                  X.parse_docs(args.calibration_docs) if args.calibration_docs else None, args.calibration_task,
                  args.calibration_limit, list(args.learned),
                  [r for r in args.speculative_fsgen.split(",") if r], args.num_draft)
    X.param_counts(args.small, args.large, args.params)  # a missing count: one line before anything runs
    result = X.run_frontier(plan, args.output_path, replay=not args.no_replay,
                            model_args_extra=args.model_args_extra, lm_eval_args=shlex.split(args.lm_eval_args),
                            metric=args.metric, params=args.params, n_boot=args.n_boot, seed=args.seed,
                            in_process=not args.per_process)
    print(F.format_table(result["points"]))
    print(F.format_recovery(result["gap_recovery"]))
    print(f"written: {args.output_path / 'frontier.json'}, frontier.md, frontier.png")
    return 0
