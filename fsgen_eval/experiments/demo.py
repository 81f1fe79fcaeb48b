"""``fsgen-eval demo``: one micro pair through lm-eval on GSM8K in five configurations, then a report.

The configurations are the FS-GEN comparison in miniature: System 1 alone (``router=never``), System 2 alone
(the oracle), greedy speculative decoding, contrastive decoding, and the oracle behind an entropy router whose
threshold is read off the oracle run's own traces (the router what-if at a target large-model call rate).
Each configuration is one ``python -m lm_eval --model fsgen`` run (the sweep's runner: a temporary folder
renamed on success), so lm-eval writes its real results and our traces, a crash in one run loses no other,
and a rerun skips every configuration that is already complete. The report is the project's own
(:mod:`fsgen_eval.analysis.report`): Markdown plus one standalone HTML page.

Everything is offline: the models are the committed micro family, the datasets come from
``FSGEN_DATASETS_DIR`` or ``../shared/hf-datasets`` beside the repository.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsgen_eval.experiments.sweep import Cell, run_cell, subprocess_runner

REPO = Path(__file__).resolve().parents[2]
FAMILY_YAML = REPO / "model_configs" / "micro.yaml"
GSM8K = Path("openai") / "gsm8k"  # what lm-eval's gsm8k task loads, as a folder under the datasets dir
DEFAULT_OUT = Path("reports") / "demo"
# the micro models were trained on 1024-token windows: 3 exemplars plus 256 new tokens fit (docs/zoo.md)
NUM_FEWSHOT = 3


@dataclass(frozen=True)
class DemoCell(Cell):
    """A sweep cell named by its role in the demo, so its folder reads ``runs/<name>/``."""

    name: str = ""

    @property
    def relpath(self) -> Path:
        """The cell's folder under the demo's output: its display name."""
        return Path(self.name)


# (folder name, method, router): the entropy router's threshold is filled in once the oracle has run
CONFIGS: tuple[tuple[str, str, str], ...] = (
    ("system1", "oracle", "never"),
    ("oracle", "oracle", "always"),
    ("speculative", "speculative", "always"),
    ("contrastive", "contrastive", "always"),
    ("oracle-entropy", "oracle", "entropy"),
)


# ------------------------------------------------------------------------------------------ inputs


def datasets_dir(environ: dict[str, str] | None = None) -> Path:
    """``FSGEN_DATASETS_DIR``, else ``../shared/hf-datasets`` beside the repository; it must hold GSM8K."""
    env = os.environ if environ is None else environ
    given = env.get("FSGEN_DATASETS_DIR", "").strip()
    root = Path(given).expanduser() if given else REPO.parent / "shared" / "hf-datasets"
    origin = "FSGEN_DATASETS_DIR" if given else "the default beside the repository"
    if not (root / GSM8K).is_dir():
        raise FileNotFoundError(f"no offline datasets: {root / GSM8K} ({origin}) is not a folder; set "
                                "FSGEN_DATASETS_DIR to a folder laid out like the hub (openai/gsm8k/...)")
    return root.resolve()


def family_models() -> dict[str, Path]:
    """The committed micro family: name -> model folder."""
    from fsgen_eval.experiments.zoo.family import load_family_yaml

    return {m.name: m.path for m in load_family_yaml(FAMILY_YAML)}


def resolve_model(spec: str, role: str) -> Path:
    """A micro family name (``micro-m``) or a folder holding a transformers model (``config.json``)."""
    known = family_models()
    if spec in known:
        path = known[spec]
    elif (Path(spec) / "config.json").is_file():
        path = Path(spec)
    else:
        raise ValueError(f"--{role} {spec!r} is neither a micro model ({', '.join(known)}) nor a model folder")
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
    if args.limit < 2:
        raise ValueError(f"--limit must be at least 2 (the report's intervals need two problems), got {args.limit}")
    if not 0.0 < args.target_call_rate < 1.0:
        raise ValueError(f"--target-call-rate must lie strictly between 0 and 1, got {args.target_call_rate}")
    if args.max_gen_toks is not None and args.max_gen_toks < 1:
        raise ValueError(f"--max-gen-toks must be positive, got {args.max_gen_toks}")
    data = datasets_dir()
    small, large = resolve_model(args.small, "small"), resolve_model(args.large, "large")
    if small == large:
        raise ValueError(f"--small and --large are the same model ({small.name}): nothing would collaborate")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    return data, small, large


# ------------------------------------------------------------------------------------------ runs


def completed(folder: Path) -> bool:
    """A configuration is complete when its results file exists and every trace file it names does too
    (traces are not committed, so a fresh clone reruns the runs instead of reporting without them)."""
    from fsgen_eval.core.jsonl import read_json

    results = sorted(folder.glob("*/results_*.json"))
    if len(results) != 1:
        return False
    try:  # the file itself, not load_run: a fresh clone's missing traces are expected here, not warned about
        names = read_json(results[0])["config"]["fsgen"]["traces"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(names, list) and bool(names) and all(
        isinstance(n, str) and (results[0].parent / n).is_file() for n in names)


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
    args = ["--num_fewshot", str(NUM_FEWSHOT), "--batch_size", "8"]
    if max_gen_toks is not None:
        args += ["--gen_kwargs", f"max_gen_toks={max_gen_toks}"]
    return args


def run_configs(small: Path, large: Path, runs_dir: Path, limit: int, max_gen_toks: int | None,
                target: float, force: bool) -> list[str]:
    """Run each configuration not yet complete (all with ``force``); returns one status line per config.
    Raises ``RuntimeError`` naming the configuration and its log when lm-eval fails (earlier ones are kept)."""
    lines, threshold = [], None
    for name, method, router in CONFIGS:
        if router == "entropy":
            threshold, point = entropy_threshold(runs_dir / "oracle", target)
            lines.append(f"  entropy threshold {threshold:g}: oracle-trace call rate {point['call_rate']:.3f}, "
                         f"handoffs caught {point['caught']:.3f} (target {target})")
        cell = DemoCell(display_path(small), display_path(large), method, router,
                        threshold if router == "entropy" else None, "gsm8k", name=name)
        folder = runs_dir / name
        if completed(folder) and not force and _same_threshold(folder, cell.threshold):
            lines.append(f"  {name:15} already complete: {folder}")
            continue
        t0 = time.monotonic()
        print(f"demo: running {name} ({method}, router={router}) ...", flush=True)
        err = run_cell(cell, runs_dir, subprocess_runner, limit=limit, trace_arg="",
                       model_args_extra="device=cpu,dtype=float32", lm_eval_args=lm_eval_args(max_gen_toks))
        if err:
            raise RuntimeError(f"demo: configuration {name} failed: {err}")
        lines.append(f"  {name:15} ran in {time.monotonic() - t0:.0f} s")
    return lines


def _same_threshold(folder: Path, threshold: float | None) -> bool:
    """A finished entropy run counts only if it used the threshold the (possibly rerun) oracle gives now."""
    from fsgen_eval.analysis.files import find_runs

    if threshold is None:
        return True
    (run,) = find_runs([folder])
    return run.fsgen.threshold is not None and float(run.fsgen.threshold) == threshold


# ------------------------------------------------------------------------------------------ report


def write_demo_report(out: Path, small: Path, large: Path, limit: int, target: float,
                      max_gen_toks: int | None) -> tuple[Path, Path]:
    """The project's report over the demo's runs, with a note saying how the runs were made."""
    import matplotlib

    matplotlib.use("Agg")
    from fsgen_eval.analysis.files import find_runs
    from fsgen_eval.analysis.params import ParamTable
    from fsgen_eval.analysis.report import build_report, write_report

    title = f"fsgen-eval demo: {small.name} -> {large.name} on GSM8K ({limit} problems, {NUM_FEWSHOT}-shot)"
    rep = build_report(find_runs([out / "runs"]), ParamTable.load([FAMILY_YAML]), title, target)
    gen = f"max_gen_toks={max_gen_toks}" if max_gen_toks else "GSM8K's max_gen_toks (256)"
    rep.notes.insert(0, f"made by `fsgen-eval demo`: lm-eval's gsm8k, --limit {limit}, --num_fewshot {NUM_FEWSHOT}, "
                        f"{gen}, fp32 greedy on the CPU; System 1 = {small.name}, large = {large.name}; the "
                        f"entropy router's threshold is the what-if's for a {target:.0%} call rate on the oracle's "
                        "traces; results and traces under runs/ (traces are not committed)")
    return write_report(rep, out)
