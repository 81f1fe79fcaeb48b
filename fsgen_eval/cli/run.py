"""``fsgen-eval run ...``: lm-eval's own ``run`` command (same arguments, same behaviour), fsgen registered.

Everything after ``run`` goes to lm-eval's parser unchanged, so ``fsgen-eval run --help`` is lm-eval's
help and ``fsgen-eval run --model fsgen --model_args small=...,large=... --tasks gsm8k`` is exactly
``lm_eval --model fsgen ...``.
"""

from __future__ import annotations

import argparse
import sys


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
    import fsgen_eval  # noqa: F401  (installs the hook that registers --model fsgen)
    from lm_eval.__main__ import cli_evaluate

    argv = list(args.lm_eval_args)
    sys.argv = ["lm-eval", "run", *argv]  # lm-eval's parser reads sys.argv
    cli_evaluate()
    return 0
