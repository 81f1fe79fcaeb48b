"""``fsgen-eval demo``: one micro pair through lm-eval on GSM8K in five configurations, then a report.

The configurations are the FS-GEN comparison in miniature: System 1 alone (``router=never``), System 2 alone
(the oracle), greedy speculative decoding, contrastive decoding, and the oracle behind an entropy router whose
threshold is read off the oracle run's own traces (the router what-if at a target large-model call rate).
Each configuration is one ``fsgen-eval run --model fsgen`` (lm-eval) run (the sweep's runner: a temporary folder
renamed on success), so lm-eval writes its real results and our traces, a crash in one run loses no other,
and a rerun skips every configuration that is already complete. The report is the project's own
(:mod:`fsgen_eval.analysis.report`): Markdown plus one standalone HTML page.

Everything is offline: the models are the committed micro family; a task with a dataset reads it from
Hugging Face's datasets cache, filled first from ``FSGEN_DATASETS_DIR`` or ``../shared/hf-datasets`` beside the
repository (``fsgen-eval offline-cache``: :mod:`fsgen_eval.lm_eval.offline`).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsgen_eval.core.shipped import CHECKOUT, project_dir
from fsgen_eval.experiments.sweep import Cell, run_cell, subprocess_runner

REPO = CHECKOUT  # a source checkout's root
FAMILY_YAML = project_dir("model_configs") / "arith.yaml"  # the demo's pair; micro names resolve too (FAMILY_YAMLS)
FAMILY_YAMLS = (FAMILY_YAML, project_dir("model_configs") / "micro.yaml")


@dataclass(frozen=True)
class DemoSetup:
    """What the demo runs, in one place: the CLI's defaults and the committed report come from here, so
    switching the demo to another pair or task is an edit of :data:`DEMO` (then ``--update-committed``)."""

    # the arith pair whose accuracy moves with System 2's share: arith-s alone 2 %, arith-l alone 76 % on the
    # whole test split (models/arith/README.md)
    small: str = "arith-s"  # System 1: a family model name or a model folder
    large: str = "arith-l"
    task: str = "fsgen_arith"  # lm-eval's task (here the project's own, from tasks/: docs/arith.md)
    dataset: Path | None = None  # what that task loads under the datasets dir (None: generated, no dataset)
    limit: int = 10  # the task's first test problems (per level task: 4 x 10 = 40 problems)
    num_fewshot: int = 0  # the arith family is trained on the zero-shot format
    # the entropy router's large-model call rates on the oracle's traces: one routed run per rate
    call_rates: tuple[float, ...] = (0.05, 0.15)
    include_path: Path | None = project_dir("tasks")  # --include_path for a task of the project's tasks/


DEMO = DemoSetup()
GSM8K = DEMO.dataset  # (the name older callers use)
NUM_FEWSHOT = DEMO.num_fewshot
DEFAULT_OUT = Path("runs") / "demo"  # git-ignored: a plain `fsgen-eval demo` touches no committed file
COMMITTED_OUT = Path("reports") / "demo"  # rewritten only with --update-committed


@dataclass(frozen=True)
class DemoCell(Cell):
    """A sweep cell named by its role in the demo, so its folder reads ``runs/<name>/``."""

    name: str = ""

    @property
    def relpath(self) -> Path:
        """The cell's folder under the demo's output: its display name."""
        return Path(self.name)


def configs(call_rates: tuple[float, ...] = DEMO.call_rates) -> tuple[tuple[str, str, str, float | None], ...]:
    """(folder name, method, router, target call rate): System 1 alone, System 2 alone (the large model as both
    models, router never: what replay decodes), the oracle (System 2 at every token), greedy
    speculative, contrastive, and the oracle behind an entropy router per target call rate (its threshold is
    filled in once the oracle has run; one rate names the folder ``oracle-entropy``, several add the rate)."""
    routed = tuple((("oracle-entropy" if len(call_rates) == 1 else f"oracle-entropy-{r:g}"), "oracle", "entropy", r)
                   for r in call_rates)
    return (("system1", "oracle", "never", None), ("system2", "oracle", "never", None), ("oracle", "oracle", "always", None),
            ("speculative", "speculative", "always", None), ("contrastive", "contrastive", "always", None), *routed)


CONFIGS = configs()


# ------------------------------------------------------------------------------------------ inputs


def datasets_dir(environ: dict[str, str] | None = None) -> Path | None:
    """``FSGEN_DATASETS_DIR``, else ``../shared/hf-datasets`` beside the repository; it must hold the demo task's
    dataset. ``None`` when the task needs none (``fsgen_arith`` generates its problems)."""
    if DEMO.dataset is None:
        return None
    from fsgen_eval.lm_eval.offline import SOURCE_ENV, default_source

    env = os.environ if environ is None else environ
    root = default_source(env)
    origin = SOURCE_ENV if env.get(SOURCE_ENV, "").strip() else "the default beside the repository"
    if not (root / DEMO.dataset).is_dir():
        raise FileNotFoundError(f"no offline datasets: {root / DEMO.dataset} ({origin}) is not a folder; set "
                                f"FSGEN_DATASETS_DIR to a folder laid out like the hub ({DEMO.dataset}/...)")
    return root.resolve()


def family_models() -> dict[str, Path]:
    """The committed families (arith, micro): name -> model folder."""
    from fsgen_eval.experiments.zoo.family import load_family_yaml

    return {m.name: m.path for y in FAMILY_YAMLS for m in load_family_yaml(y)}


def resolve_model(spec: str, role: str) -> Path:
    """A micro family name (``micro-m``) or a folder holding a transformers model (``config.json``)."""
    known = family_models()
    if spec in known:
        path = known[spec]
    elif (Path(spec) / "config.json").is_file():
        path = Path(spec)
    else:
        raise ValueError(f"--{role} {spec!r} is neither a family model ({', '.join(known)}) nor a model folder")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--{role} {spec!r}: {path} holds no config.json (is the checkout complete?)")
    return path.resolve()


def display_path(path: Path) -> str:
    """The path lm-eval is given, relative to the working folder when below it, so that committed results
    and the report name ``models/micro/micro-m`` rather than one machine's absolute path."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check_args(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """Validate everything before any model runs; returns (datasets dir, small, large)."""
    if getattr(args, "update_committed", False):
        if args.out not in (DEFAULT_OUT, COMMITTED_OUT):
            raise ValueError(f"--update-committed rewrites {COMMITTED_OUT}; it cannot go with --out {args.out}")
        args.out = COMMITTED_OUT
    elif holds_committed_files(args.out):
        raise ValueError(f"--out {args.out} holds committed files; pass --update-committed to rewrite "
                         f"{COMMITTED_OUT}, or give another folder")
    if args.limit < 2:
        raise ValueError(f"--limit must be at least 2 (the report's intervals need two problems), got {args.limit}")
    for rate in args.target_call_rate:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"--target-call-rate must lie strictly between 0 and 1, got {rate}")
    if len(set(args.target_call_rate)) != len(args.target_call_rate):
        raise ValueError(f"--target-call-rate names a rate twice: {args.target_call_rate}")
    if args.max_gen_toks is not None and args.max_gen_toks < 1:
        raise ValueError(f"--max-gen-toks must be positive, got {args.max_gen_toks}")
    data = datasets_dir()
    small, large = resolve_model(args.small, "small"), resolve_model(args.large, "large")
    if small == large:
        raise ValueError(f"--small and --large are the same model ({small.name}): nothing would collaborate")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    return data, small, large


def holds_committed_files(folder: Path) -> bool:
    """Whether git tracks a file under ``folder`` (``False`` outside a git checkout or without git)."""
    try:
        found = subprocess.run(["git", "ls-files", "--", str(folder)], capture_output=True, text=True,
                               cwd=Path.cwd(), check=False)
    except OSError:
        return False
    return found.returncode == 0 and bool(found.stdout.strip())


# ------------------------------------------------------------------------------------------ runs


def completed(folder: Path) -> bool:
    """A configuration is complete when its results file exists and every trace file it names does too
    (traces are not committed, so a fresh clone reruns the runs instead of reporting without them)."""
    from fsgen_eval.core.jsonl import read_json
    from fsgen_eval.core.runs import recorded_trace

    results = sorted(folder.glob("*/results_*.json"))
    if len(results) != 1:
        return False
    try:  # the file itself, not load_run: a fresh clone's missing traces are expected here, not warned about
        names = read_json(results[0])["config"]["fsgen"]["traces"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(names, list) and bool(names) and all(
        isinstance(n, str) and recorded_trace(results[0], n)[1] is not None for n in names)


def entropy_threshold(oracle_folder: Path, target: float) -> tuple[float, dict[str, Any]]:
    """The entropy router's threshold whose call rate on the oracle's own traces is at most ``target``
    (the router what-if; the oracle calls System 2 at every token, so every handoff is known)."""
    from fsgen_eval.analysis.files import ANALYSIS_COLUMNS, find_runs, run_records
    from fsgen_eval.analysis.whatif import tradeoff_curves

    (run,) = find_runs([oracle_folder])
    curves = tradeoff_curves(run_records(run, ANALYSIS_COLUMNS))
    point = next(c for c in curves if c.signal == "s1_entropy").at_target(target)
    if point["router_threshold"] is None:
        raise ValueError(f"no entropy threshold reaches a call rate <= {target} on the oracle's traces")
    # rounded so the model_args string and the report stay readable; the router call rate is re-measured
    return float(f"{point['router_threshold']:.4g}"), point


def lm_eval_args(max_gen_toks: int | None) -> list[str]:
    """lm-eval's arguments for every demo cell (few-shot, batch size, and the generation cap if given)."""
    args = ["--num_fewshot", str(DEMO.num_fewshot), "--batch_size", "8"]
    if DEMO.include_path is not None:
        args += ["--include_path", str(DEMO.include_path)]
    if max_gen_toks is not None:
        args += ["--gen_kwargs", f"max_gen_toks={max_gen_toks}"]
    return args


def run_configs(small: Path, large: Path, runs_dir: Path, limit: int, max_gen_toks: int | None,
                targets: tuple[float, ...], force: bool) -> list[str]:
    """Run each configuration not yet complete (all with ``force``), printing each one's start, lm-eval's
    progress bars and its time as it finishes; returns one status line per config (the closing summary).
    Raises ``RuntimeError`` naming the configuration and its log when lm-eval fails (earlier ones are kept)."""
    lines, todo = [], configs(targets)
    for i, (name, method, router, target) in enumerate(todo, 1):
        threshold = None
        if router == "entropy":
            threshold, point = entropy_threshold(runs_dir / "oracle", target)
            lines.append(f"  entropy threshold {threshold:g}: oracle-trace call rate {point['call_rate']:.3f}, "
                         f"handoffs caught {point['caught']:.3f} (target {target})")
            print(f"demo: {lines[-1].strip()}", flush=True)
        first = large if name == "system2" else small  # System 2 alone: the large model as System 1 too
        cell = DemoCell(display_path(first), display_path(large), method, router, threshold, DEMO.task, name=name)
        folder = runs_dir / name
        if completed(folder) and not force and _same_threshold(folder, cell.threshold):
            lines.append(f"  {name:15} already complete: {folder}")
            print(f"demo: [{i}/{len(todo)}] {name} already complete", flush=True)
            continue
        t0 = time.monotonic()
        print(f"demo: [{i}/{len(todo)}] running {name} ({method}, router={router}); lm-eval's output goes to "
              f"{runs_dir / (name + '.tmp') / 'lm_eval.log'} (kept as {folder / 'lm_eval.log'})", flush=True)
        runner = functools.partial(subprocess_runner, echo=Progress(name))
        err = run_cell(cell, runs_dir, runner, limit=limit, trace_arg="",
                       model_args_extra="device=cpu,dtype=float32", lm_eval_args=lm_eval_args(max_gen_toks))
        Progress.end_line()
        if err:
            raise RuntimeError(f"demo: configuration {name} failed: {err}")
        lines.append(f"  {name:15} ran in {time.monotonic() - t0:.0f} s")
        print(f"demo: [{i}/{len(todo)}] {name} ran in {time.monotonic() - t0:.0f} s", flush=True)
    return lines


class Progress:
    """lm-eval's progress bars (tqdm lines: ``Running generate_until requests: 40%|...| 10/24``) redrawn on
    one screen line, prefixed by the configuration; the rest of lm-eval's output stays in its log only."""

    _open = False  # a progress line is on the screen and needs a newline before other output

    def __init__(self, name: str) -> None:
        self.name = name
        self.last = 0.0

    def __call__(self, line: str) -> None:
        if "%|" not in line:
            return
        now = time.monotonic()
        done = "100%|" in line
        if now - self.last < 1.0 and not done:  # at most one redraw a second
            return
        self.last = now
        sys.stdout.write(f"\r  {self.name}: {line.strip()[:110]}\033[K")
        sys.stdout.flush()
        Progress._open = True

    @classmethod
    def end_line(cls) -> None:
        if cls._open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            cls._open = False


def _same_threshold(folder: Path, threshold: float | None) -> bool:
    """A finished entropy run counts only if it used the threshold the (possibly rerun) oracle gives now."""
    from fsgen_eval.analysis.files import find_runs

    if threshold is None:
        return True
    (run,) = find_runs([folder])
    return run.fsgen.threshold is not None and float(run.fsgen.threshold) == threshold


# ------------------------------------------------------------------------------------------ report


def write_demo_report(out: Path, small: Path, large: Path, limit: int, targets: tuple[float, ...],
                      max_gen_toks: int | None) -> tuple[Path, Path]:
    """The project's report over the demo's runs, with a note saying how the runs were made (the report's own
    what-if target is the first entropy router's call rate)."""
    import matplotlib

    matplotlib.use("Agg")
    from fsgen_eval.analysis.files import find_runs
    from fsgen_eval.analysis.params import ParamTable
    from fsgen_eval.analysis.report import build_report, write_report

    task = "GSM8K" if DEMO.task == "gsm8k" else DEMO.task
    per = " per level" if DEMO.task == "fsgen_arith" else ""
    title = f"fsgen-eval demo: {small.name} -> {large.name} on {task} ({limit} problems{per}, {DEMO.num_fewshot}-shot)"
    rep = build_report(find_runs([out / "runs"]), ParamTable.load(list(FAMILY_YAMLS)), title, targets[0])
    gen = f"max_gen_toks={max_gen_toks}" if max_gen_toks else f"{task}'s max_gen_toks"
    rates = " and ".join(f"{t:.0%}" for t in targets)
    rep.notes.insert(0, f"made by `fsgen-eval demo`: lm-eval's {DEMO.task}, --limit {limit}, --num_fewshot "
                        f"{DEMO.num_fewshot}, {gen}, fp32 greedy on the CPU; System 1 = {small.name}, large = "
                        f"{large.name}; the entropy router's threshold is the what-if's for a {rates} call rate on "
                        "the oracle's traces; results and traces under runs/ (traces are not committed)")
    return write_report(rep, out)
