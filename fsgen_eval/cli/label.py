"""``fsgen-eval label``: outcome labels for the handoffs of oracle (router ``always``) runs, lockstep or replayed
(:mod:`fsgen_eval.experiments.label_run`), and their statistics (:mod:`fsgen_eval.analysis.labels`).

Writes, in ``-o DIR``: ``labels.jsonl`` (the side file, one record per labelled handoff keyed by run id, task,
document and position; appended a batch at a time, so a killed run resumes without duplicates), ``runs.json``
(each run's population, sample and cost), ``labels.json`` and ``labels.md`` (the statistics). Every run is
checked before any model loads; bad input is one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("label", help="outcome labels of an oracle run's handoffs: does System 1's token change "
                       "the task's answer when System 2 finishes?")
    p.add_argument("runs", nargs="*", type=Path, help="oracle (method=oracle, router=always) run folders or "
                   "results_*.json, lockstep or replayed, with their trace files (none with --stats-only)")
    p.add_argument("-o", "--output-path", type=Path, required=True, help="folder for labels.jsonl, runs.json, "
                   "labels.json, labels.md")
    p.add_argument("--sample", type=int, help="label a seeded sample of N handoffs per run, stratified by "
                   "relative position (10 strata, proportional); default: every handoff")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include_path", help="lm-eval --include_path for the task's YAML (e.g. tasks/)")
    p.add_argument("--prompts", type=Path, help="the run whose samples files hold the prompts (default: beside "
                   "the results file, or the System 2 run a replay names); only with one run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-boot", type=int, default=2000, help="document resamples for the AUROC intervals")
    p.add_argument("--stats-only", action="store_true", help="recompute labels.json/labels.md from the files")
    p.set_defaults(func=cmd_label)


def _check_args(args: argparse.Namespace) -> None:
    from fsgen_eval.core.guards import writable_folder

    if bool(args.runs) == args.stats_only:
        raise ValueError("give the runs to label, or --stats-only without runs")
    if args.sample is not None and args.sample < 1:
        raise ValueError(f"--sample must be at least 1, got {args.sample}")
    if args.batch_size < 1 or args.n_boot < 100:
        raise ValueError("--batch-size must be >= 1 and --n-boot >= 100")
    if args.prompts is not None and len(args.runs) != 1:
        raise ValueError("--prompts names one run's prompts: give one run with it")
    writable_folder(args.output_path, "label -o")


def read_runs_json(path: Path) -> dict[str, dict[str, Any]]:
    from fsgen_eval.core.jsonl import read_json

    return read_json(path) if path.exists() else {}


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A run's entry after one more invocation: costs add up (a resumed run labels the rest)."""
    if old is None:
        return new
    for k in ("labelled", "s2_tokens_decoded", "continuation_seconds", "system1_seconds"):
        new["cost"][k] = old["cost"].get(k, 0) + new["cost"][k]
    return new


def cmd_label(args: argparse.Namespace) -> int:
    from fsgen_eval.core.guards import atomic_write
    from fsgen_eval.experiments import label as LB
    from fsgen_eval.experiments import label_run as R

    _check_args(args)
    out = args.output_path
    runs_path, labels_path = out / "runs.json", out / "labels.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    book = read_runs_json(runs_path)
    if not args.stats_only:
        cache: dict = {}
        for p in args.runs:  # every run checked before a model loads; each read in full when its turn comes
            R.check_label_run(p, args.prompts, cache)
            rid = str(R.check_oracle(R.results_file(p)).run_id)
            old = book.get(rid)
            if old is not None and (old["sample"], old["seed"]) != (args.sample, args.seed):
                raise ValueError(f"{out}: run {rid} was labelled with --sample {old['sample']} --seed "
                                 f"{old['seed']}; use another -o folder for --sample {args.sample} --seed {args.seed}")
        _label_all(args, cache, book, runs_path, labels_path)
    _write_stats(out, book, LB.read_labels(labels_path), args.n_boot, atomic_write)
    return 0


def _label_all(args: argparse.Namespace, cache: dict, book: dict, runs_path: Path, labels_path: Path) -> None:
    from fsgen_eval.core.guards import atomic_write
    from fsgen_eval.engine.pair import load_backend, load_model
    from fsgen_eval.experiments import label_run as R

    scorer = R.TaskScorer(sorted({t for s2 in cache.values() for t in s2.tasks}), args.include_path)
    for path in args.runs:
        run, tok = R.read_label_run(path, args.prompts, cache)
        small = load_backend(run.info.small, "small", len(tok), args.dtype, args.device)  # scored only
        large = load_model(run.info.large, "large", args.dtype, args.device, False)
        entry = R.label_run(run, tok, small, large, scorer, labels_path, args.sample, args.seed, args.batch_size)
        book[run.run_id] = _merge(book.get(run.run_id), entry)
        atomic_write(runs_path, json.dumps(book, indent=1) + "\n")
        c = entry["cost"]
        print(f"{run.results_path}: {entry['sampled']} of {entry['handoffs']} handoffs sampled; labelled "
              f"{c['labelled']} now ({c['s2_tokens_decoded']} System 2 tokens, {c['continuation_seconds']:.1f} s)"
              + (f"; {entry['s1_token_equals_s2']} not labelled: System 1's teacher-forced token equals System 2's"
                 if entry["s1_token_equals_s2"] else ""))


def _write_stats(out: Path, book: dict, records: list, n_boot: int, atomic_write: Any) -> None:
    from fsgen_eval.analysis import labels as A

    by_run: dict[str, list] = {}
    for r in records:
        by_run.setdefault(r["run_id"], []).append(r)
    stats = [A.run_statistics(book[rid], by_run.get(rid, []), n_boot) for rid in sorted(
        book, key=lambda k: (book[k]["small"], book[k]["large"]))]
    atomic_write(out / "labels.json", json.dumps({"runs": stats}, indent=1) + "\n")
    atomic_write(out / "labels.md", A.format_markdown(stats))
    print(A.format_markdown(stats))
