"""``fsgen-eval`` command line: each subcommand lives in its own module and registers itself here.

A subcommand module exposes ``register(subparsers) -> None`` which adds its parser and sets
``func=callable(args) -> int``. Modules import heavy libraries (torch, lm-eval) inside their functions so
that ``fsgen-eval fit --help`` stays fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand group → module holding its ``register``; order is the order in ``--help``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "fsgen_eval.cli.demo", "fsgen_eval.cli.run", "fsgen_eval.cli.analysis", "fsgen_eval.cli.replay",
    "fsgen_eval.cli.router", "fsgen_eval.cli.frontier", "fsgen_eval.cli.label", "fsgen_eval.cli.zoo",
    "fsgen_eval.cli.registry", "fsgen_eval.cli.traces", "fsgen_eval.cli.offline",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fsgen-eval`` parser with every subcommand module's parsers added."""
    parser = argparse.ArgumentParser(
        prog="fsgen-eval",
        description="FS-GEN collaborative decoding: evaluate, trace and analyse small/large model pairs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input (``ValueError`` / ``FileNotFoundError``) prints one line and returns 2."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Bad input: one line naming the problem, no traceback.
        print(f"fsgen-eval {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
