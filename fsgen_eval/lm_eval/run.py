"""lm-eval's ``run`` command line with ``--model fsgen``: the run's folder made explicit (issue 21).

For ``--model fsgen`` with ``--output_path OUT`` on the command line:

- lm-eval gets ``--output_path OUT/<pair>/results.json``: by its documented rule for a ``.json`` path it writes
  ``results_<date>.json`` and the ``samples_*.jsonl`` into ``OUT/<pair>/`` (``<pair>`` =
  :func:`fsgen_eval.core.runs.pair_name`, e.g. ``arith-s__arith-l``);
- the model gets ``trace=OUT/<pair>`` (unless ``--model_args`` set ``trace`` to a path or ``false``), so the
  per-token traces lie beside the results;
- ``--gen_kwargs`` and the folder are checked before lm-eval loads anything, and the fsgen summary table is
  printed after lm-eval's own tables.

One home for both callers: ``fsgen-eval run`` (:mod:`fsgen_eval.cli.run`) and the sweep's in-process cells
(:mod:`fsgen_eval.experiments.cells`), so a cell run in a shared worker is the run its own process would be.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fsgen_eval.core.runs import parse_model_args, run_layout


def run_lm_eval(argv: list[str]) -> None:
    """Run lm-eval's ``run`` command with these arguments (``--model fsgen`` registered, the layout above),
    then print the fsgen summary. lm-eval's parser reads ``sys.argv``: it is restored afterwards. (``fsgen``
    is registered: importing this package did it.)"""
    from lm_eval.__main__ import cli_evaluate

    lm_argv, folder = fsgen_argv(list(argv))
    started = time.time()
    saved = sys.argv
    sys.argv = ["lm-eval", "run", *lm_argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    if folder is not None:
        print_summary(folder, started)


def _fsgen_options() -> argparse.ArgumentParser:
    """The few lm-eval options this command reads (same spellings and aliases as lm-eval's ``run``)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--model", "-M")
    p.add_argument("--model_args", "-a", nargs="+", action="extend")
    p.add_argument("--output_path", "-o")
    p.add_argument("--gen_kwargs", nargs="+", action="extend")
    return p


def _joined(tokens: list[str] | None) -> str | dict[str, Any]:
    """``--model_args`` / ``--gen_kwargs`` tokens as one ``k=v,...`` string, or the dict of a JSON token."""
    tokens = tokens or []
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{"):
        value = json.loads(tokens[0])
        if not isinstance(value, dict):
            raise ValueError(f"--model_args {tokens[0][:80]!r} is not a JSON object")
        return value
    return ",".join(t.strip().strip(",") for t in tokens if t.strip())


def batch_size_flag(model_args: str, lm_eval_args: list[str] | None = None) -> list[str]:
    """``--batch_size N`` for lm-eval when ``model_args`` sets ``batch_size=N`` and ``lm_eval_args`` does not:
    lm-eval records its own ``--batch_size`` (1 unless given) as ``config.batch_size`` and in its header line,
    so without it the record says 1 while the run used N."""
    given = parse_model_args(model_args).get("batch_size")
    args = list(lm_eval_args or [])
    if given is None or any(a in ("--batch_size", "-b") or a.startswith("--batch_size=") for a in args):
        return []
    return ["--batch_size", str(given)]


def fsgen_argv(argv: list[str]) -> tuple[list[str], Path | None]:
    """lm-eval's arguments for this run, and the run folder (``None``: not ``--model fsgen`` or no
    ``--output_path``). Raises ``ValueError`` for ``--gen_kwargs`` the model refuses or an unwritable folder.

    ``argv`` is lm-eval's ``run`` arguments; the options read here are taken out and put back once each, in
    the form lm-eval parses (a single ``--model_args``: lm-eval 0.4.10 keeps only the last occurrence).
    """
    known, rest = _fsgen_options().parse_known_args(argv)
    if known.model != "fsgen":
        return list(argv), None
    from fsgen_eval.core.guards import writable_folder
    from fsgen_eval.lm_eval.args import check_gen_kwargs

    for token in known.gen_kwargs or []:
        try:
            gen = parse_model_args(_joined([token]))
        except ValueError:
            continue  # a form only lm-eval parses (a JSON list value): each request's kwargs are checked later
        check_gen_kwargs(gen, where="--gen_kwargs")  # before any model loads
    model_args = _joined(known.model_args)
    out = ["--model", "fsgen"]
    folder = None
    if known.output_path:
        layout = run_layout(known.output_path, model_args)
        if layout is not None:
            folder, lm_eval_path, model_args = layout
            writable_folder(folder, "--output_path")
            known.output_path = str(lm_eval_path)
        out += ["--output_path", known.output_path]
    if model_args:
        out += ["--model_args", model_args if isinstance(model_args, str) else json.dumps(model_args)]
        if isinstance(model_args, str):  # lm-eval's own record of the batch size (config.batch_size, header)
            out += batch_size_flag(model_args, rest)
    if known.gen_kwargs:
        out += ["--gen_kwargs", *known.gen_kwargs]
    return [*out, *rest], folder


def print_summary(folder: Path, since: float) -> None:
    """The fsgen table of the results file this run wrote into ``folder`` (after lm-eval's own tables)."""
    from fsgen_eval.core.runs import results_files
    from fsgen_eval.lm_eval.traces import format_summary

    written = [f for f in results_files(folder) if f.stat().st_mtime >= since]
    if written:
        info = json.loads(written[-1].read_text(encoding="utf-8")).get("config", {}).get("fsgen")
        if isinstance(info, dict):
            print(format_summary(info))
