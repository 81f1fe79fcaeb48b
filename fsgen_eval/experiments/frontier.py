"""``fsgen-eval frontier``: System 1 alone, System 2 alone and every threshold router at calibrated call rates,
each a real run through the sweep (resumable, locked; the oracle/``always`` end point replayed).

Steps (each resumable, since each is a sweep cell with its own results file):

1. **calibration** — System 1 alone (router ``never``, traced) on documents that are not evaluated:
   ``calibration_docs`` (indices of the evaluated task's split, passed to lm-eval as ``--samples``; they must
   not overlap the evaluated ``range(limit)``) or another task (e.g. a validation-split variant);
2. **thresholds** — per router and target call rate, from System 1's statistics on those documents
   (:func:`fsgen_eval.analysis.frontier.native_threshold`); a learned router's decision threshold the same way,
   written into a copy of its file under ``OUT/_routers/``;
3. **points** — router ``never``, oracle/``always`` and every calibrated router on the evaluated documents
   (``--limit``), with ``--log_samples`` (per-document correctness for the intervals); optionally FS-GEN's
   lossy speculative variant (``method=speculative``, ``speculative_variant=fsgen``) at a router's calibrated
   thresholds, its own series: where the router fires System 1 drafts ``num_draft`` tokens that System 2
   verifies, elsewhere System 1's token is emitted unverified;
4. **the frontier** — :func:`collect` reads the runs into points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from fsgen_eval.analysis import files
from fsgen_eval.analysis import frontier as F
from fsgen_eval.core import registry
from fsgen_eval.core.runs import results_files
from fsgen_eval.experiments.sweep import Cell

DEFAULT_RATES = (0.05, 0.1, 0.2, 0.3, 0.5)
CALIBRATION = "_calibration"
SPEC_SERIES = "fsgen-spec:"  # the router column of FS-GEN's lossy speculative points: their own series


@dataclass
class Plan:
    """What a frontier runs: one pair, one generate_until task."""

    small: str
    large: str
    task: str
    routers: list[str]  # threshold routers (a registry entry with a signal)
    rates: list[float]
    limit: int | None  # the evaluated documents: the task's first ``limit``
    calibration_docs: list[int] | None = None  # indices in the evaluated task's split ...
    calibration_task: str | None = None  # ... or another task's documents
    calibration_limit: int | None = None
    learned: list[Path] = field(default_factory=list)
    speculative_fsgen: list[str] = field(default_factory=list)  # routers whose thresholds also run lossy speculative
    num_draft: int = 5  # the speculative points' draft length

    def __post_init__(self) -> None:
        check_plan(self)

    @property
    def cal_task(self) -> str:
        return self.calibration_task or self.task

    def calibration_cell(self) -> Cell:
        return Cell(self.small, self.large, "oracle", "never", None, self.cal_task)

    def calibration_args(self) -> tuple[int | None, list[str]]:
        """lm-eval's ``--limit`` and extra arguments of the calibration run."""
        if self.calibration_docs is not None:
            return None, ["--samples", json.dumps({self.cal_task: self.calibration_docs})]
        return self.calibration_limit, []

    def describe_calibration(self) -> str:
        if self.calibration_docs is not None:
            d = self.calibration_docs
            return f"documents {d[0]}..{d[-1]} ({len(d)}) of {self.task}, after the evaluated first {self.limit}"
        first = f"the first {self.calibration_limit}" if self.calibration_limit else "all"
        return f"{first} documents of task {self.calibration_task} (of each subtask, for a group)"


def check_plan(p: Plan) -> None:
    """One-line refusals before anything runs."""
    for name in p.routers:
        spec = registry.get_router(name)
        if spec.signal is None:
            raise ValueError(f"router {name!r} thresholds no System 1 signal; frontier routers: "
                             + ", ".join(n for n, s in registry.ROUTERS.items() if s.signal))
    for name in p.speculative_fsgen:
        if name not in p.routers:
            raise ValueError(f"--speculative-fsgen {name}: not among --routers ({','.join(p.routers)}); its points "
                             "run at those routers' calibrated thresholds")
    if p.num_draft < 1:
        raise ValueError(f"--num-draft must be >= 1, got {p.num_draft}")
    for r in p.rates:
        if not 0.0 < r < 1.0:
            raise ValueError(f"target call rates must lie in (0, 1), got {r}")
    if (p.calibration_docs is None) == (p.calibration_task is None):
        raise ValueError("give the calibration documents either as --calibration-docs START:END (of the evaluated "
                         "task's split) or as --calibration-task TASK, exactly one")
    if p.calibration_docs is not None:
        if not p.calibration_docs:
            raise ValueError("--calibration-docs is empty")
        if p.limit is None:
            raise ValueError("--calibration-docs needs --limit (the evaluated documents are the first LIMIT)")
        if min(p.calibration_docs) < p.limit:
            raise ValueError(f"--calibration-docs starts at {min(p.calibration_docs)}, inside the evaluated "
                             f"documents 0..{p.limit - 1}: calibration documents must not be evaluated ones")
    elif p.calibration_task == p.task:
        raise ValueError("--calibration-task is the evaluated task: its documents would be evaluated ones; "
                         "use --calibration-docs for a disjoint slice")
    for path in p.learned:
        check_router_pair(path, p.small, p.large)


def check_calibration_tasks(p: Plan, lm_eval_args: list[str] | None = None) -> None:
    """Refuse a ``calibration_task`` that shares a task with the evaluated one (a group containing it, one of
    its subtasks, two groups with a subtask in common): those documents would be evaluated ones. Names are
    expanded through lm-eval's task index, before any model loads."""
    if p.calibration_task is None:
        return
    from lm_eval.tasks import TaskManager

    from fsgen_eval.experiments.sweep import check_tasks, include_path

    check_tasks([p.task, p.calibration_task], lm_eval_args)  # unknown names: the sweep's one line
    index = TaskManager(verbosity="ERROR", include_path=include_path(lm_eval_args)).task_index
    shared = sorted(task_members(index, p.task) & task_members(index, p.calibration_task))
    if shared:
        raise ValueError(f"--calibration-task {p.calibration_task} shares {', '.join(shared)} with the evaluated "
                         f"task {p.task}: its documents would be evaluated ones; calibrate on another split's task "
                         "or use --calibration-docs")


class _AnyTagLoader(yaml.SafeLoader):
    """A task YAML's ``!function`` values read as None: only the group's ``task`` list is needed."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def task_members(index: Mapping[str, Any], name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The task names under ``name`` in lm-eval's ``TaskManager.task_index`` (lm-eval 0.4.10 indexes dicts with
    ``type``/``yaml_path``/``task``, 0.4.11+ ``Entry`` objects with ``kind``/``yaml_path``/``tags``): a task
    itself, a group's ``task`` list from its YAML and a tag's members, nested groups expanded."""
    entry = index.get(name)
    if entry is None or name in seen:
        return {name}
    as_dict = isinstance(entry, dict)
    kind = entry["type"] if as_dict else entry.kind.name.lower()
    if kind == "tag":
        members = list(entry["task"] if as_dict else entry.tags)
    elif kind == "group":
        path = entry["yaml_path"] if as_dict else entry.yaml_path
        cfg = yaml.load(Path(path).read_text(), Loader=_AnyTagLoader) or {}
        subs = cfg.get("task") or []
        members = [t if isinstance(t, str) else t.get("task") or t.get("group") for t in subs]
    else:
        return {name}
    return set().union(set(), *(task_members(index, str(m), seen | {name}) for m in members if m))


def parse_docs(spec: str) -> list[int]:
    """``"100:150"`` -> [100, ..., 149]."""
    a, sep, b = spec.partition(":")
    try:
        lo, hi = int(a), int(b)
    except ValueError:
        raise ValueError(f"--calibration-docs: write START:END (document indices), got {spec!r}") from None
    if not sep or lo < 0 or hi <= lo:
        raise ValueError(f"--calibration-docs: need 0 <= START < END, got {spec!r}")
    return list(range(lo, hi))


def _short(model: str) -> str:
    return Path(model).name


def check_router_pair(path: Path, small: str, large: str) -> None:
    """Refuse a learned router trained on another pair's traces (``pair`` in its file, written by
    ``fsgen-eval router train``; a file without it cannot be checked and is taken as given) or on features the
    calibration run does not record (``topk`` needs a top-K side file)."""
    from fsgen_eval.core import learned as L

    router = L.load(path)
    if router.features != "scalar":
        raise ValueError(f"{path}: frontier calibrates learned routers on scalar features only, this one uses "
                         f"{router.features}")
    pair = dict(router.info or {}).get("pair")
    if pair and (_short(pair.get("small", "")), _short(pair.get("large", ""))) != (_short(small), _short(large)):
        raise ValueError(f"{path}: a router of the pair {pair.get('small')} -> {pair.get('large')}, not "
                         f"{small} -> {large}")


# ------------------------------------------------------------------------------------------ calibration
def calibration_statistics(run_folder: Path) -> list[dict[str, np.ndarray]]:
    """System 1's per-token statistics (traces [T_i]) of the finished calibration run in ``run_folder``."""
    (results, *rest) = results_files(run_folder) or [None]
    if results is None or rest:
        raise ValueError(f"{run_folder}: expected one finished calibration run")
    run = files.load_run(results)
    traces = [r["trace"] for r in files.run_records(run)]
    if not traces or not sum(len(t["s1_entropy"]) for t in traces):
        raise ValueError(f"{run_folder}: the calibration run generated no token")
    return traces


def thresholds(traces: list[dict[str, np.ndarray]], routers: list[str], rates: list[float]
               ) -> dict[tuple[str, float], tuple[float, float]]:
    """(router, rate) -> (the router's threshold, its call rate on the calibration tokens)."""
    out = {}
    for name in routers:
        spec = registry.get_router(name)
        values = np.concatenate([np.asarray(t[spec.signal], float) for t in traces])
        for rate in rates:
            out[(name, rate)] = F.native_threshold(values, spec.calls_when, rate)
    return out


def learned_thresholds(traces: list[dict[str, np.ndarray]], path: Path, rates: list[float], out_dir: Path
                       ) -> dict[float, tuple[Path, float, float]]:
    """rate -> (a copy of the learned router at ``path`` with its decision threshold calibrated for ``rate``,
    that threshold, its call rate on the calibration tokens). ``scalar`` features only (``topk`` would need the
    calibration run's top-K side file)."""
    from fsgen_eval.core import learned as L

    router = L.load(path)  # scalar features: checked by check_router_pair before anything ran
    scores = np.concatenate([L.decision(router, L.trace_features("scalar", t)) for t in traces])
    obj = json.loads(Path(path).read_text())
    out = {}
    for rate in rates:
        t, k = F.calibrate(scores, rate)
        dest = out_dir / "_routers" / f"{Path(path).stem}@{rate:g}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({**obj, "threshold": t, "calibrated_for": rate}) + "\n")
        out[rate] = (dest, t, k / len(scores))
    return out


def point_cells(p: Plan, thr: dict[tuple[str, float], tuple[float, float]],
                learned: dict[str, dict[float, tuple[Path, float, float]]]) -> list[tuple[Cell, str, float | None, float]]:
    """(cell, router name, target rate, calibration call rate) of every point, end points first."""
    cells: list[tuple[Cell, str, float | None, float]] = [
        (Cell(p.small, p.large, "oracle", "never", None, p.task), "never", None, 0.0),
        (Cell(p.small, p.large, "oracle", "always", None, p.task), "always", None, 1.0)]
    for (name, rate), (t, cal) in thr.items():
        cells.append((Cell(p.small, p.large, "oracle", name, t, p.task), name, rate, cal))
    for stem, by_rate in learned.items():
        for rate, (path, _, cal) in by_rate.items():
            cells.append((Cell(p.small, p.large, "oracle", "learned", None, p.task,
                               router_params=(("router_path", str(path)),)), f"learned:{stem}", rate, cal))
    lossy = (("num_draft", p.num_draft), ("speculative_variant", "fsgen"))
    for (name, rate), (t, cal) in thr.items():
        if name in p.speculative_fsgen:
            cells.append((Cell(p.small, p.large, "speculative", name, t, p.task, method_params=lossy),
                          f"{SPEC_SERIES}{name}", rate, cal))
    return cells


# ------------------------------------------------------------------------------------------ reading points
def _metric_key(run: files.Run, task: str, metric: str | None) -> str:
    res = run.results.get(task) or {}
    keys = [k for k, v in res.items() if files.is_metric(k, v) and k != "alias"]
    if metric:
        if metric not in keys:
            raise ValueError(f"{run.path}: no metric {metric!r} for {task} (it has {', '.join(keys)})")
        return metric
    if not keys:
        raise ValueError(f"{run.path}: no metric for task {task}")
    return keys[0]


def _samples_file(run: files.Run, task: str) -> Path:
    """lm-eval's samples file of ``run``; a replayed run's are System 2's run's (its tokens)."""
    folders = [run.path.parent]
    if run.fsgen.replay and run.fsgen.replay.get("system2_results"):
        folders.append(Path(run.fsgen.replay["system2_results"]).parent)
    for folder in folders:
        found = sorted(folder.glob(f"samples_{task}_*.jsonl"))
        if found:
            return found[-1]
    raise ValueError(f"{run.path}: no samples_{task}_*.jsonl beside it: run with --log_samples")


def leaf_tasks(results: Path, task: str) -> list[str]:
    """The tasks that hold documents under ``task`` in the lm-eval results file ``results``: ``task`` itself, or
    a group's subtasks (lm-eval's ``group_subtasks``, nested groups expanded)."""
    subtasks = json.loads(results.read_text()).get("group_subtasks") or {}
    if not subtasks.get(task):
        return [task]
    return [leaf for sub in subtasks[task] for leaf in leaf_tasks(results, sub)]


def doc_key(task: str, doc_id: int) -> str:
    """A document's identity across a group's subtasks (each numbers its documents from 0)."""
    return f"{task}/{doc_id}"


def per_doc_correct(run: files.Run, task: str, metric: str) -> dict[str, float]:
    """:func:`doc_key` -> the metric's value (``name,filter`` as lm-eval's results key it), over ``task``'s
    documents (a group's: every subtask's)."""
    name, _, flt = metric.partition(",")
    out: dict[str, float] = {}
    for leaf in leaf_tasks(run.path, task):
        for line in _samples_file(run, leaf).read_text().splitlines():
            s = json.loads(line)
            if flt and s.get("filter") != flt:
                continue
            out[doc_key(leaf, int(s["doc_id"]))] = float(s[name])
    return out


def _wall_s(path: Path) -> float:
    obj = json.loads(path.read_text())
    try:
        return float(obj.get("total_evaluation_time_seconds"))
    except (TypeError, ValueError):
        return float("nan")


def read_point(folder: Path, task: str, label: str, router: str, target: float | None, threshold: float | None,
               n_small: int, n_large: int, metric: str | None = None) -> F.Point:
    """One finished cell as a :class:`~fsgen_eval.analysis.frontier.Point` (documents sorted by
    :func:`doc_key`, so every point of a frontier lists them in one order)."""
    (results,) = results_files(folder)
    run = files.load_run(results)
    key = _metric_key(run, task, metric)
    correct = per_doc_correct(run, task, key)
    leaves = set(leaf_tasks(results, task))
    recs = {doc_key(r["task"], int(r["doc_id"])): r["trace"] for r in files.run_records(run) if r.get("task") in leaves}
    if set(recs) != set(correct):
        raise ValueError(f"{results}: traces cover {len(recs)} documents, samples {len(correct)}")
    docs = np.array(sorted(recs))
    tok = np.array([len(recs[d]["token_id"]) for d in docs])
    calls = np.array([int(np.sum(np.asarray(recs[d]["llm_called"], bool))) for d in docs])
    hand = np.array([int(np.nansum(np.asarray(recs[d]["handoff"], float))) for d in docs])
    wall = _wall_s(results)
    if run.fsgen.replay and run.fsgen.replay.get("system2_results"):
        wall = _wall_s(Path(run.fsgen.replay["system2_results"]))  # System 2's own generation
    return F.Point(label, router, target, threshold, docs, np.array([correct[d] for d in docs]), tok, calls, hand,
                   n_small, n_large, wall, {"metric": key, "run_id": run.fsgen.run_id, **speculative_extra(run)})


def speculative_extra(run: files.Run) -> dict[str, float]:
    """A speculative run's ``mean_acceptance_length`` and ``s2_passes_per_token`` (System 2's verification
    passes per generated token = ``llm_call_rate`` / ``mean_acceptance_length``: each pass checks the accepted
    drafts and its own token); nothing for other runs."""
    s = run.fsgen.summary
    mal, rate = s.get("mean_acceptance_length"), s.get("llm_call_rate")
    if mal is None or rate is None:
        return {}
    return {"mean_acceptance_length": float(mal), "s2_passes_per_token": float(rate) / float(mal)}


# ------------------------------------------------------------------------------------------ the whole run
def param_counts(small: str, large: str, params: list[Path] | None = None) -> tuple[int, int]:
    """Total parameters of the two models from ``model_configs/`` (or ``--params`` YAMLs)."""
    from fsgen_eval.analysis.params import ParamTable

    table = ParamTable.load(params)
    return table.get(small), table.get(large)


def run_frontier(p: Plan, out: Path, runner: Any = None, replay: bool = True, model_args_extra: str = "",
                 lm_eval_args: list[str] | None = None, metric: str | None = None, params: list[Path] | None = None,
                 n_boot: int = 2000, seed: int = 0, progress: bool = True, in_process: bool = False) -> dict[str, Any]:
    """Calibrate, run every point (finished cells are reused) and write ``OUT/frontier.json``, ``frontier.md``
    and ``frontier.png``; returns the JSON object. ``RuntimeError`` naming the failed cells. ``in_process``: the
    lockstep points (one pair, one task) run in one process with the models loaded once (the sweep's
    in-process cells, :mod:`fsgen_eval.experiments.cells`)."""
    from fsgen_eval.analysis.plots import frontier_figure, to_png_bytes
    from fsgen_eval.experiments import sweep

    runner = runner or sweep.subprocess_runner
    n_small, n_large = param_counts(p.small, p.large, params)  # before anything runs
    extra_args = list(lm_eval_args or [])
    check_calibration_tasks(p, extra_args)
    cal = p.calibration_cell()
    cal_limit, cal_args = p.calibration_args()
    done = sweep.run_sweep([cal], out / CALIBRATION, runner, progress, limit=cal_limit,
                           model_args_extra=model_args_extra, lm_eval_args=[*extra_args, *cal_args])
    _raise_failed(done)
    traces = calibration_statistics(out / CALIBRATION / cal.relpath)
    thr = thresholds(traces, p.routers, p.rates)
    learned = {Path(path).stem: learned_thresholds(traces, Path(path), p.rates, out) for path in p.learned}
    cells = point_cells(p, thr, learned)
    done = sweep.run_sweep([c for c, *_ in cells], out, runner, progress, replay=replay, limit=p.limit,
                           in_process=in_process, model_args_extra=model_args_extra, lm_eval_args=["--log_samples", *extra_args])
    _raise_failed(done)
    points = []
    for cell, router, rate, cal_rate in cells:
        label = {"never": "System 1 alone", "always": "System 2 alone"}.get(router) or f"{router}@{rate:g}"
        threshold = learned[router[len("learned:"):]][rate][1] if router.startswith("learned:") else cell.threshold
        pt = read_point(out / cell.relpath, p.task, label, router, rate, threshold, n_small, n_large, metric)
        pt.extra["calibration_call_rate"] = cal_rate
        points.append(pt)
    s1, s2, routed = points[0], points[1], points[2:]
    recovery = {name: F.gap_recovery(s1, s2, [q for q in routed if q.router == name], n_boot=n_boot, seed=seed)
                for name in dict.fromkeys(q.router for q in routed)}
    result = {"small": p.small, "large": p.large, "task": p.task, "limit": p.limit,
              "calibration": p.describe_calibration(), "calibration_tokens": int(sum(len(t["s1_entropy"]) for t in traces)),
              "n_small": n_small, "n_large": n_large, "points": [q.row() for q in points],
              "gap_recovery": recovery, "n_boot": n_boot, "seed": seed,
              **({"num_draft": p.num_draft} if p.speculative_fsgen else {})}
    write_outputs(out, result, frontier_figure, to_png_bytes)
    return result


def _raise_failed(outcome: Any) -> None:
    if outcome.failed:
        raise RuntimeError("; ".join(f"{c.relpath}: {err}" for c, err in outcome.failed))


def format_markdown(result: dict[str, Any]) -> str:
    """frontier.md: the table and the gap recovery, numbers as computed in frontier.json."""
    return "\n\n".join([
        f"# Frontier: {_short(result['small'])} -> {_short(result['large'])} on {result['task']}",
        f"Evaluated: the first {result['limit'] or 'all'} documents (of each subtask, for a group; "
        f"{result['points'][0]['n_docs']} in all). Thresholds calibrated on System 1 alone's statistics "
        f"over {result['calibration']} ({result['calibration_tokens']} tokens). param_cost = N_small + "
        f"llm_call_rate * N_large with N_small = {result['n_small']}, N_large = {result['n_large']}; wall s of "
        "System 2 alone is its own generation's (a replayed run).",
        F.format_table(result["points"]),
        f"Call rate recovering 50 % and 90 % of the accuracy gap (linear between points; interval: "
        f"{result['n_boot']} resamples of the documents, seed {result['seed']}):",
        F.format_recovery(result["gap_recovery"]),
        *speculative_markdown(result),
        "![frontier](frontier.png)"]) + "\n"


def speculative_markdown(result: dict[str, Any]) -> list[str]:
    """What FS-GEN's lossy speculative points are, and their System 2 passes (none without such points)."""
    rows = [r for r in result["points"] if r["router"].startswith(SPEC_SERIES)]
    if not rows:
        return []
    lines = ["| point | llm_call_rate | mean_acceptance_length | System 2 passes per token |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['llm_call_rate']:.3f} | {r['mean_acceptance_length']:.3f} | "
              f"{r['s2_passes_per_token']:.3f} |" for r in rows]
    return [f"`{SPEC_SERIES}ROUTER@RATE`: FS-GEN's lossy speculative decoding (method=speculative, "
            f"speculative_variant=fsgen, num_draft={result.get('num_draft')}) at ROUTER's threshold for RATE: where "
            "the router fires, System 1 drafts and System 2 verifies the draft in one pass (every verified token "
            "counts in llm_call_rate), elsewhere System 1's token is emitted unverified. Its System 2 passes:",
            "\n".join(lines)]


def write_outputs(out: Path, result: dict[str, Any], figure: Any, png: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    (out / "frontier.md").write_text(format_markdown(result))
    (out / "frontier.png").write_bytes(png(figure(result["points"])))


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))
