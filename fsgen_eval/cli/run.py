"""``fsgen-eval run ...``: lm-eval's own ``run`` command (same arguments, same behaviour), fsgen registered.

Everything after ``run`` goes to lm-eval's parser, so ``fsgen-eval run --help`` is lm-eval's help. For
``--model fsgen`` with ``--output_path OUT`` on the command line, the run's folder is made explicit here
instead of being looked up inside lm-eval while it runs (issue 21): :mod:`fsgen_eval.lm_eval.run` says how.

Without ``--output_path`` lm-eval writes no results, and the model writes traces only where ``trace=PATH``
says (docs/lm_eval.md).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fsgen-eval run`` (every argument passed to lm-eval) to the dispatcher's subparsers."""
    parser = subparsers.add_parser(
        "run", add_help=False, prefix_chars="\0",  # no option of its own: every token is lm-eval's
        help="run lm-eval (same arguments as `lm_eval run`), with --model fsgen available",
        description="Runs lm-eval's `run` command; see `fsgen-eval run --help` for its arguments.",
    )
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run lm-eval's command line with these arguments, ``--model fsgen`` registered."""
    from fsgen_eval.lm_eval.run import run_lm_eval  # lm-eval loads only when this command runs

    run_lm_eval(list(args.lm_eval_args))
    return 0
