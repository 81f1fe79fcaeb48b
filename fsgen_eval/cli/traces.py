"""``fsgen-eval traces convert``: a finished study's JSONL traces to Parquet (:mod:`fsgen_eval.analysis.convert`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("traces", help="trace files: convert a finished study's JSONL traces to Parquet")
    tsub = p.add_subparsers(dest="traces_command", metavar="ACTION", required=True)
    c = tsub.add_parser("convert", help="write each JSONL trace a results file names as Parquet (checked, read "
                                        "back and compared), point the results file at it, move the JSONL aside")
    c.add_argument("paths", nargs="+", type=Path, help="results_*.json files or folders of finished runs")
    c.add_argument("--delete-jsonl", action="store_true",
                   help="delete each converted JSONL (default: keep it as traces_X.jsonl.converted)")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from fsgen_eval.analysis.convert import convert_study

    done = convert_study(args.paths, args.delete_jsonl)
    for c in done:
        print(f"{c.jsonl} -> {c.parquet} ({c.records} records, {c.tokens} tokens; "
              f"{c.jsonl_bytes} -> {c.parquet.stat().st_size} bytes; "
              f"{len(c.results)} results file(s) updated)")
    if not done:
        print("no JSONL trace file to convert (the runs name none, or Parquet traces already)")
    return 0
