"""``fsgen-eval sweep | fit | analyze | report | check``: argument parsing over the analysis modules.

Bad input raises ``ValueError`` / ``FileNotFoundError`` naming the file and the problem; ``fsgen_eval.cli``
prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.cli.replay import vllm_args


def register(sub: Any) -> None:
    """Add the analysis subcommands to ``sub`` (the dispatcher's ``add_subparsers()`` object)."""
    for add in (_add_sweep, _add_fit, _add_analyze, _add_report, _add_check):
        add(sub)


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def _dumps(obj: Any) -> str:
    """JSON with NaN/inf written as null (strict JSON)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(json.loads(json.dumps(obj, default=_json_default))), indent=2)


# ------------------------------------------------------------------------------------------------ sweep


def _add_sweep(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a grid of (small, large) pairs x methods x routers x tasks through lm-eval")
    p.add_argument("--family", required=True, help="family name (qwen1.5, qwen2.5, pythia) or a family YAML path")
    p.add_argument("--models", type=_csv_list, help="subset of the family's models (names or hub ids)")
    p.add_argument("--methods", type=_csv_list, default=["oracle"],
                   help="e.g. oracle,contrastive:alpha=0.2:beta=1 (a method's parameters as name:key=value)")
    p.add_argument("--routers", type=_csv_list, default=["always"],
                   help="e.g. always,never,entropy@1.5 (a threshold router's threshold after @; other parameters "
                        "as name:key=value)")
    p.add_argument("--tasks", type=_csv_list, required=True)
    p.add_argument("--output-path", type=Path, required=True, help="sweep folder: one subfolder per cell")
    p.add_argument("--limit", type=int, help="lm-eval --limit per task")
    p.add_argument("--model-args-extra", default="", help="appended to --model_args, e.g. dtype=bfloat16")
    p.add_argument("--trace-arg", default="trace=true", help="the model_args entry that turns traces on")
    p.add_argument("--lm-eval-args", default="", help="more lm-eval arguments, e.g. '--batch_size 8'")
    p.add_argument("--jobs", type=int, help="cells run at once (default 1, or one per --devices entry)")
    p.add_argument("--devices", type=_csv_list, help="e.g. cuda:0,cuda:1: one cell per device at a time")
    p.add_argument("--dry-run", action="store_true", default=os.environ.get("FSGEN_DRY_RUN") == "1",
                   help="print the grid and the commands; run nothing (default with FSGEN_DRY_RUN=1)")
    p.add_argument("--no-replay", action="store_true", help="decode every oracle/always cell lockstep (default: "
                   "System 2 generates once per (large, task) and every small model is replayed on it)")
    p.add_argument("--per-process", action="store_true", help="one lm-eval process per cell (default: the cells "
                   "that share a pair and a task run in one process, the models loaded once)")
    p.add_argument("--system2-model", choices=("fsgen", "hf", "vllm"), default="fsgen",
                   help="lm-eval's model class for System 2's run (fsgen: exact token ids; hf/vllm: responses "
                   "re-tokenized; vllm needs vLLM in this Python: `pip install 'fsgen-eval[vllm]'`, docs/vllm.md)")
    p.add_argument("--tensor-parallel-size", type=int, help="--system2-model vllm: lm-eval's vllm model arg")
    p.add_argument("--data-parallel-size", type=int, help="--system2-model vllm: lm-eval's vllm model arg")
    p.add_argument("--gpu-memory-utilization", type=float, help="--system2-model vllm: lm-eval's vllm model arg")
    p.add_argument("--system2-vllm-args", type=vllm_args, default={}, metavar="k=v,...", help="--system2-model "
                   "vllm: more of lm-eval's vllm model args, e.g. enforce_eager=True,max_model_len=2048 (on a CPU, "
                   "enforce_eager=True skips torch.compile's C++ build: docs/vllm.md)")
    p.add_argument("--draft-lengths", type=_csv_list, default=[], help="replayed cells: greedy speculative "
                   "counters per draft length, e.g. 1,2,3,4,5,6,7,8")
    p.add_argument("--scoring", choices=("transformers", "vllm"), default="transformers", help="replayed cells: "
                   "score System 1 and the large model on vLLM's prompt_logprobs (replay --scoring vllm)")
    p.add_argument("--scoring-topk", type=int, default=0, metavar="K", help="--scoring vllm: log-probs per "
                   "position (0 = the whole vocabulary, exact; else a top-K approximation, named in the results)")
    p.add_argument("--scoring-vllm-args", type=vllm_args, default={}, metavar="k=v,...", help="--scoring vllm: the scoring "
                   "engine's arguments (replay --vllm-args), e.g. max_model_len=2048")
    p.set_defaults(func=cmd_sweep)


def _replay_kw(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep's replay settings; vLLM's model args are refused for another System 2 model class."""
    from fsgen_eval.experiments.sweep import VLLM_ARGS

    vllm = {k: getattr(args, k) for k in VLLM_ARGS if getattr(args, k) is not None}
    if vllm and args.system2_model != "vllm":
        raise ValueError(f"--{next(iter(vllm)).replace('_', '-')} is a vLLM model arg: it needs --system2-model vllm")
    if args.system2_vllm_args and args.system2_model != "vllm":
        raise ValueError("--system2-vllm-args are lm-eval's vllm model args: they need --system2-model vllm")
    twice = sorted(set(vllm) & set(args.system2_vllm_args))
    if twice:
        raise ValueError(f"{twice[0]} given twice: as --{twice[0].replace('_', '-')} and in --system2-vllm-args")
    vllm.update(args.system2_vllm_args)
    try:
        draft = [int(k) for k in args.draft_lengths]
    except ValueError:
        raise ValueError(f"--draft-lengths must be integers, got {','.join(args.draft_lengths)}") from None
    return {"replay": not args.no_replay, "system2_model": args.system2_model,
            "vllm_args": {k: str(v) for k, v in vllm.items()}, "draft_lengths": draft,
            "replay_args": _scoring_args(args)}


def _scoring_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The replay's scoring options (``--scoring vllm``...), refused in one line where nothing is replayed
    or where they need ``--scoring vllm``."""
    if args.scoring != "vllm":
        if args.scoring_topk or args.scoring_vllm_args:
            raise ValueError("--scoring-topk and --scoring-vllm-args are for --scoring vllm")
        return ()
    if args.no_replay:
        raise ValueError("--scoring vllm scores replayed cells: it cannot go with --no-replay")
    if args.scoring_topk < 0:
        raise ValueError(f"--scoring-topk must be an integer >= 0, got {args.scoring_topk}")
    out = ("--scoring", "vllm", "--scoring-topk", str(args.scoring_topk))
    kv = ",".join(f"{k}={v}" for k, v in args.scoring_vllm_args.items())
    return out + (("--vllm-args", kv) if kv else ())


def _check_scoring(args: argparse.Namespace, cells: list[Any]) -> None:
    """A ``max_logprobs`` below the ``K`` the scoring needs, in one line before any cell (the replay would
    refuse it only after System 2's generation)."""
    from fsgen_eval.engine.backends.vllm_backend import ScoringSpec
    from fsgen_eval.engine.pair import load_tokenizer

    spec = ScoringSpec(args.scoring_topk, dict(args.scoring_vllm_args))
    if cells:
        spec.check(len(load_tokenizer(cells[0].small, "small")))


def _family_models(spec: str, subset: list[str] | None):
    from fsgen_eval.analysis.params import DEFAULT_DIR, ParamTable

    path = Path(spec)
    if path.suffix not in (".yaml", ".yml"):
        path = DEFAULT_DIR / f"{spec.lower()}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in DEFAULT_DIR.glob("*.yaml")))
            raise ValueError(f"unknown family {spec!r} (known: {known}; or give a YAML path)")
    table = ParamTable.load([path])
    models = table.models()
    if subset:
        wanted = set()
        for name in subset:
            try:
                wanted.add(table.find(name))
            except ValueError:
                raise ValueError(f"--models: no such model {name!r} in family {spec!r} "
                                 f"(its models: {', '.join(m.name for m in models)})") from None
        models = [m for m in models if m in wanted]
    return models


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fsgen-eval sweep``: build the grid (names and parameters checked against the registries), then print
    it (``--dry-run``) or run every unfinished cell; returns 1 if a cell failed."""
    import shlex

    from fsgen_eval.experiments import sweep

    jobs = args.jobs if args.jobs is not None else (len(args.devices) if args.devices else 1)
    sweep.check_jobs(jobs, args.devices, args.model_args_extra)  # before the grid, dry run included
    cells = sweep.build_grid(_family_models(args.family, args.models), args.methods, args.routers, args.tasks)
    kw = dict(limit=args.limit, trace_arg=args.trace_arg, model_args_extra=args.model_args_extra,
              lm_eval_args=shlex.split(args.lm_eval_args), **_replay_kw(args))
    if args.dry_run:
        print(sweep.describe(cells, args.output_path, **kw))
        return 0
    if kw["replay"] and (args.system2_model == "vllm" or args.scoring == "vllm"):  # vLLM runs in this Python
        from fsgen_eval.engine.backends.vllm_backend import require_vllm

        require_vllm()
        if args.scoring == "vllm":
            _check_scoring(args, cells)
    # before any cell starts (not in a dry run: lm-eval's task index takes seconds to build)
    sweep.check_model_args_extra(args.model_args_extra)
    sweep.check_tasks(args.tasks, kw["lm_eval_args"])
    out = sweep.run_sweep(cells, args.output_path, sweep.subprocess_runner, jobs=jobs, devices=args.devices,
                          in_process=not args.per_process, **kw)
    print(f"sweep: {len(out.ran)} ran, {len(out.skipped)} already done, {len(out.failed)} failed")
    for cell, err in out.failed:
        print(f"  failed {cell.relpath}: {err}", file=sys.stderr)
    return 1 if out.failed else 0


# ------------------------------------------------------------------------------------------------ fit


def _add_fit(sub: Any) -> None:
    p = sub.add_parser("fit", help="fit collaboration rate against parameter ratio (power law and two-factor law)")
    p.add_argument("inputs", nargs="+", type=Path, help="sweep/results folders, or CSV files with large_params, "
                   "small_params, collaboration_rate[, task, method]")
    p.add_argument("--params", nargs="*", type=Path, help="YAML(s) of parameter counts (default: model_configs/)")
    p.add_argument("--router", default="always", help="use runs with this router (folders only; 'any' for all)")
    p.add_argument("--lower-bound", type=float, default=0.05, help="lower bound of a, alpha, b (paper: 0.05)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object per (task, method) group")
    p.set_defaults(func=cmd_fit)


def points_from_runs(runs, params, router: str) -> list[dict[str, Any]]:
    """One fit point per (collaborative run, task): :func:`fsgen_eval.analysis.points.fit_points`."""
    from fsgen_eval.analysis.points import fit_points

    return fit_points(runs, params, router)


def load_points(inputs: list[Path], params_files: list[Path] | None, router: str) -> list[dict[str, Any]]:
    """Fit points from CSV files and results folders (runs filtered by ``router``; ``any`` keeps all); one
    dict per (run, task) with ``small_params``, ``large_params``, ``collaboration_rate``; ``ValueError`` if none."""
    from fsgen_eval.analysis.files import find_runs, read_points_csv
    from fsgen_eval.analysis.params import ParamTable

    rows: list[dict[str, Any]] = []
    folders = [p for p in inputs if p.suffix.lower() != ".csv"]
    for p in inputs:
        if p.suffix.lower() == ".csv":
            rows += read_points_csv(p)
    if folders:
        rows += points_from_runs(find_runs(folders), ParamTable.load(params_files), router)
    if not rows:
        raise ValueError(f"no points to fit in {', '.join(map(str, inputs))} (router filter: {router})")
    return rows


class FitProgress:
    """A ``fit_groups`` progress callback: a tqdm bar on stderr naming the group being fitted, shown only
    once the fits have run for ``delay`` seconds (a quick fit prints nothing; stdout stays clean)."""

    def __init__(self, desc: str, delay: float = 1.0):
        self.desc, self.delay, self.bar = desc, delay, None

    def __call__(self, i: int, n: int, label: str) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=n, desc=self.desc, unit="group", file=sys.stderr, delay=self.delay, leave=False)
        self.bar.set_postfix_str(label, refresh=False)  # shown with the next update, once past the delay
        self.bar.update(i - self.bar.n)

    def close(self) -> None:
        """Close the progress bar, if one was drawn."""
        if self.bar is not None:
            self.bar.close()


def cmd_fit(args: argparse.Namespace) -> int:
    """``fsgen-eval fit``: both scaling laws per (task, method) group, as text or JSON."""
    from fsgen_eval.analysis.scaling import fit_groups

    progress = FitProgress("fit")
    try:
        groups = fit_groups(load_points(args.inputs, args.params, args.router), n_boot=args.n_boot,
                            random_state=args.seed, lower=args.lower_bound, progress=progress)
    finally:
        progress.close()
    if all(g.error is not None for g in groups):
        raise ValueError("; ".join(f"[{g.label}] {g.error}" for g in groups))
    print(_dumps([g.to_dict() for g in groups]) if args.json else format_fits(groups))
    return 0


_LAWS = (("power", "power law f(r) = b - a r^-alpha", ("a", "alpha", "b")),
         ("two_factor", "two-factor log f = c - alpha log N_small + beta log N_large", ("c", "alpha", "beta")),
         ("log_ratio", "log-ratio f(r) = c + d ln r", ("c", "d")))


def format_fits(groups: list[Any]) -> str:
    """The fits as text: per group (a ``GroupFit``) each law with its intervals, held-out (LOO) error and
    diagnostics, the alpha = beta verdict of the two-factor law, and the law best on held-out pairs."""
    lines = []
    for g in groups:
        head = f"[{g.label}] {g.n_points} points, {g.n_pairs} pairs"
        if g.error is not None:
            lines.append(f"{head}: no fit: {g.error}")
            continue
        lines.append(head)
        for attr, title, names in _LAWS:
            fit = getattr(g, attr)
            if fit is None:
                lines.append(f"  {title}: no fit: {g.errors.get(attr, 'not fitted')}")
                continue
            lines.append(f"  {title}:  " + _params_text(fit, names))
            lines.append(f"    R2={fit.r2:.4f}  LOO RMSE={_f(fit.loo_rmse)}  at bound: {', '.join(fit.at_bound) or 'none'}"
                         f"  interval at a bound: {', '.join(fit.ci_at_bound) or 'none'}")
            if attr == "two_factor":
                lines.append("    " + _alpha_beta_text(fit))
            lines.append("    " + _verdict(fit))
        lines.append(f"  best on held-out pairs (LOO RMSE): {g.better or 'undecided (too few points)'}")
    return "\n".join(lines)


def _params_text(fit: Any, names: tuple[str, ...]) -> str:
    """``name=value [lo, hi]`` per parameter; the interval reads ``no CI`` when there is none."""
    def one(k: str) -> str:
        lo, hi = fit.ci[k]
        ci = "no CI" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.3g}, {hi:.3g}]"
        return f"{k}={fit.params[k]:.4g} {ci}"
    how = f"{fit.ci_level:.0%} percentile CI, {fit.n_boot_used} resamples of {fit.resampling}"
    return "  ".join(one(k) for k in names) + f"  ({how})"


def _verdict(fit: Any) -> str:
    return "degenerate, not a law: " + "; ".join(fit.degenerate) if fit.degenerate else "not degenerate"


def _alpha_beta_text(two: Any) -> str:
    """alpha - beta with its bootstrap interval, and the fit's verdict on alpha = beta (or why none)."""
    d = two.extra["alpha_minus_beta"]
    lo, hi = two.ci["alpha_minus_beta"]
    ci = f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else "(no CI)"
    return f"alpha - beta = {d:.4g} {ci}: {two.verdict}"


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


# ------------------------------------------------------------------------------------------------ analyze


def _add_analyze(sub: Any) -> None:
    p = sub.add_parser("analyze", help="System-1 uncertainty vs handoffs from trace files; router what-if")
    p.add_argument("traces", nargs="+", type=Path,
                   help="traces_*.jsonl files, results_*.json files (their traces) or a folder holding one run")
    p.add_argument("--target-call-rate", type=float, help="what-if: threshold meeting this large-model call rate")
    p.add_argument("--max-position", type=int, default=32, help="absolute positions shown (later ones pooled)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins")
    p.add_argument("--request-type", choices=("generate_until", "loglikelihood", "loglikelihood_rolling"),
                   help="use only records of this request type (default: all)")
    p.add_argument("--learned", nargs="+", type=Path, default=[], metavar="ROUTER.json",
                   help="what-if: add these learned routers' curves (fsgen-eval router train)")
    p.add_argument("--run-id", help="use only this run's records (a trace file appended to by several runs); "
                                    "without it each run in the files is analysed on its own")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    """``fsgen-eval analyze``: :func:`analyze` over the trace records (optionally of one request type), one
    analysis per run id: two runs' tokens (a file appended to by both) are never pooled."""
    from fsgen_eval.analysis.files import ANALYSIS_COLUMNS, by_run_id, read_traces
    from fsgen_eval.analysis.handoffs import analyze

    records = read_traces(args.traces, ANALYSIS_COLUMNS)
    groups = by_run_id(records)
    if args.run_id is not None:
        if args.run_id not in groups:
            raise ValueError(f"--run-id {args.run_id}: no such run in {', '.join(map(str, args.traces))} (runs: "
                             f"{', '.join(str(k) for k in groups)})")
        groups = {args.run_id: groups[args.run_id]}
    if args.request_type is not None:
        groups = {k: g.select(g.get("request_type") == args.request_type) for k, g in groups.items()}
    groups = {k: g for k, g in groups.items() if len(g)}
    if not groups:
        raise ValueError(f"no trace records of request type {args.request_type!r} in {', '.join(map(str, args.traces))}")
    extra = []
    if args.learned:
        from fsgen_eval.analysis.learned import learned_curves

        if args.request_type is not None:
            raise ValueError("--learned reads every record of the trace files: drop --request-type")
        if len(by_run_id(records)) > 1:
            raise ValueError(f"--learned reads whole trace files, and these hold {len(by_run_id(records))} runs: "
                             "pass one run's traces")
        files = [f for p in args.traces for f in (sorted(Path(p).rglob("traces_*.jsonl")) if Path(p).is_dir() else [p])]
        extra = learned_curves(files, {p.stem: p for p in args.learned})
    if len(groups) == 1:
        (g,) = groups.values()
        res = analyze(g, args.target_call_rate, args.max_position, args.bins, extra)
        print(_dumps(res) if args.json else format_analysis(res))
        return 0
    # several runs: one that cannot be analysed (router=never: no handoff defined) is said, not fatal
    results: dict[Any, dict[str, Any]] = {}
    for k, g in groups.items():
        try:
            results[k] = analyze(g, args.target_call_rate, args.max_position, args.bins, extra)
        except ValueError as err:
            results[k] = {"skipped": str(err)}
    if all("skipped" in res for res in results.values()):
        raise ValueError(f"no run could be analysed: {next(iter(results.values()))['skipped']}")
    if args.json:
        print(_dumps({"runs": [{"run_id": groups[k].get("run_id")[0], "run_label": groups[k].get("run_label")[0],
                                 "n_records": len(groups[k]), **res} for k, res in results.items()]}))
    else:
        print("\n\n".join(f"== {_run_title(k, groups[k])}\n"
                           + (f"skipped: {res['skipped']}" if "skipped" in res else format_analysis(res))
                           for k, res in results.items()))
    return 0


def _run_title(key: Any, records: Any) -> str:
    """``pair | method/router (run ID, N records)`` for one run's analysis (the label when it was read through
    a results file); ``records``: a ``TraceTable``."""
    label, run_id = records.get("run_label")[0], records.get("run_id")[0]
    tasks = ", ".join(sorted({str(t) for t in records.get("task").tolist()}))
    return f"{label or 'run ' + str(key)} (run {run_id}; {tasks}; {len(records)} records)"


def format_analysis(res: dict[str, Any]) -> str:
    """The result of :func:`analyze` as text."""
    lines = [res["note"] + f"; {res['n_handoffs']} handoffs.", "",
             f"{'signal':16} {'AUROC':>6}  quantiles {tuple(res['signals'][0]['quantiles'])} handoff | agreement"]
    for s in res["signals"]:
        qh = " ".join(f"{v:.3f}" for v in s["quantiles_handoff"])
        qa = " ".join(f"{v:.3f}" for v in s["quantiles_agree"])
        lines.append(f"{s['signal']:16} {s['auroc']:6.3f}  {qh} | {qa}")
    fmt = lambda rates: " ".join("  -  " if not np.isfinite(v) else f"{v:.3f}" for v in rates)  # noqa: E731
    lines += ["", "handoff rate by decile of the generation: " + fmt(res["by_decile"]["rate"]),
              "handoff rate by position 0..: " + fmt(res["by_position"]["rate"])]
    w = res["whatif"]
    lines.append("")
    if "skipped" in w:
        lines.append(f"router what-if skipped: {w['skipped']}")
    for t in w.get("at_target", []):
        lines.append(f"what-if {t['signal']}: {t['rule']} -> call rate {t['call_rate']:.3f}, "
                     f"handoffs caught {t['caught']:.3f} (router={t['router']})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ report


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="leaderboard report (Markdown + standalone HTML) from results folders")
    p.add_argument("results", nargs="+", type=Path, help="results folders (or results_*.json files)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for report.md, report.html, plots")
    p.add_argument("--params", nargs="*", type=Path, help="YAML(s) of parameter counts (default: model_configs/)")
    p.add_argument("--title", default="fsgen-eval report")
    p.add_argument("--target-call-rate", type=float)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--cost-ratio", type=float, help="speculative speed-up bound: System 1's cost per forward pass "
                   "over the large model's (default: each pair's parameter ratio)")
    p.add_argument("--rank-by", default="collaboration_rate",
                   help="leaderboard ranking: collaboration_rate (default), base_collaboration_rate (FS-GEN's "
                        "proxy count), llm_call_rate, acceptance_rate, "
                        "accuracy (the task's first metric), tokens_per_second, or a metric name such as "
                        "exact_match,strict-match")
    p.add_argument("--learned", nargs="+", type=Path, default=[], metavar="ROUTER.json",
                   help="add these learned routers (fsgen-eval router train) to the router trade-off figure, "
                        "evaluated on the router=always runs' traces")
    p.add_argument("--pool-runs", action="store_true", help="also draw the uncertainty histograms of all runs' "
                   "tokens together, in a figure titled as pooled (default: each run on its own tokens)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """``fsgen-eval report``: write report.md (PNG plots beside it) and the standalone report.html."""
    import matplotlib

    matplotlib.use("Agg")
    from fsgen_eval.analysis.files import find_runs
    from fsgen_eval.analysis.frontier import find_frontiers
    from fsgen_eval.analysis.params import ParamTable
    from fsgen_eval.analysis.report import build_report, write_report
    from fsgen_eval.core.guards import writable_folder

    writable_folder(args.output, "report -o")  # before hours of fits, not after
    frontiers = find_frontiers(args.results)  # a malformed frontier.json: one line before the fits
    progress = FitProgress("report: scaling fits")
    try:
        rep = build_report(find_runs(args.results), ParamTable.load(args.params), args.title, args.target_call_rate,
                           args.n_boot, progress=progress, rank_by=args.rank_by,
                           cost_ratio=args.cost_ratio, learned={p.stem: p for p in args.learned},
                           pool=args.pool_runs, frontiers=frontiers)
    finally:
        progress.close()
    md, page = write_report(rep, args.output)
    print(f"wrote {md} and {page}")
    return 0


# ------------------------------------------------------------------------------------------------ check


def _add_check(sub: Any) -> None:
    p = sub.add_parser("check", help="CI regression gate: compare results with a baseline JSON (exit 1 on a regression)")
    p.add_argument("results", nargs="+", type=Path, help="results folders (or results_*.json files)")
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--update-baseline", action="store_true", help="write the baseline from these results")
    p.add_argument("--tol-collab", type=float, help="absolute tolerance, collaboration rate (default 0.02)")
    p.add_argument("--tol-call", type=float, help="absolute tolerance, large-model call rate (default 0.02)")
    p.add_argument("--tol-acc", type=float, help="absolute tolerance, accuracy metrics (default 0.02)")
    p.add_argument("--no-intervals", action="store_true",
                   help="judge by the tolerances alone, not excusing moves inside the run's 95%% interval (for "
                        "deterministic runs on fixed documents; stored in the baseline with --update-baseline)")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """``fsgen-eval check``: compare results with the baseline (1 on a regression) or rewrite it."""
    from fsgen_eval.analysis import gate
    from fsgen_eval.analysis.files import find_runs

    current = gate.collect(find_runs(args.results))
    given = {"collaboration_rate": args.tol_collab, "llm_call_rate": args.tol_call, "accuracy": args.tol_acc}
    if args.update_baseline:
        tol = {**gate.DEFAULT_TOLERANCES, **{k: v for k, v in given.items() if v is not None}}
        gate.write_baseline(args.baseline, current, tol, intervals=not args.no_intervals)
        print(f"wrote baseline {args.baseline} ({len(current)} entries)")
        return 0
    baseline = gate.read_baseline(args.baseline)
    tol = {**gate.DEFAULT_TOLERANCES, **baseline.get("tolerances", {}),
           **{k: v for k, v in given.items() if v is not None}}
    intervals = bool(baseline.get("intervals", True)) and not args.no_intervals
    checks = gate.compare(baseline, current, tol, intervals)
    print(gate.format_table(checks))
    return 1 if any(c.failed for c in checks) else 0
