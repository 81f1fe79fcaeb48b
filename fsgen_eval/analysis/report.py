"""A leaderboard-style report over results folders: Markdown (plots as PNG files beside it) and one
standalone HTML file (plots embedded as base64 PNG).

Per task, a leaderboard (:mod:`.leaderboard`): System 1 alone (``router=never``), System 2 alone
(``method=oracle``, ``router=always``) and each collaborative configuration, ranked by one column (collaboration
rate by default; call rate, acceptance, accuracy or tokens/s at the user's choice), every column with its
95 % interval and its best value marked; its intervals as bars, and a pair × configuration matrix coloured by
collaboration rate. Then the figures: collaboration rate vs parameter ratio with the power-law fit,
System-1 uncertainty at handoffs vs agreements, handoff rate by relative position, and threshold-router
trade-off curves; the accuracy frontier of every ``frontier.json`` below the folders read. In the HTML
page the leaderboard's columns sort on a click (a few lines of inline script).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.analysis import paper, plots
from fsgen_eval.analysis.files import ANALYSIS_COLUMNS, Run, is_metric, read_trace_file, run_records
from fsgen_eval.analysis.leaderboard import Table, format_rows, header, rank_table, trace_intervals
from fsgen_eval.analysis.params import ParamTable
from fsgen_eval.analysis.points import fit_points, method_label, rate_field
from fsgen_eval.analysis.scaling import GROUP_FIELDS, MIN_PAIRS, fit_groups, group_key
from fsgen_eval.analysis.signals import called_tokens, rate_by_decile, summarize_signals
from fsgen_eval.analysis.whatif import tradeoff_curves
from fsgen_eval.core.guards import atomic_write
from fsgen_eval.core.registry import METHODS, ROUTERS, RouterSpec
from fsgen_eval.core.traces_io import TraceTable, concat

SUMMARY_RATES = ("collaboration_rate", "base_collaboration_rate", "llm_call_rate", "acceptance_rate",
                 "mean_acceptance_length")
# the token fields the report reads: the analysis' own and proxy tuning's base_handoff (for its interval)
REPORT_COLUMNS = (*ANALYSIS_COLUMNS, "base_handoff")


# The FS-GEN figure each report figure redraws, by the script that draws it there (TsinghuaC3I/FS-GEN, visualize/).
# The scripts name their outputs fig1..fig7.pdf, which are not the paper's figure numbers; the paper's own numbers
# (arXiv 2406.12295) were not checked against the paper (docs/analysis.md: no stored copy of its body was
# reachable). Every other figure of the report (leaderboards, matrix, frontier, uncertainty, trade-off,
# speculative) has no FS-GEN counterpart.
FSGEN_SCRIPTS = {
    "scaling": "visualize/scaling_law.py (its output: fig4.pdf)",
    "3d": "visualize/3d_scattar_plot_fig1.py and 3d_scattar_plot_fig2.py (fig1.pdf, fig2.pdf)",
    "position": "visualize/mismatch_position_heatmap.py (fig3.pdf)",
    "topk": "visualize/mismatch_sample.py (fig5-*.pdf)",
    "tsne": "visualize/kde_scattar_1&5_tokens.py (fig6.pdf, fig7.pdf)",
}


def fsgen_counterpart(key: str) -> str:
    """The caption sentence naming a figure's FS-GEN counterpart (:data:`FSGEN_SCRIPTS`) and what is known of
    its number in the paper."""
    return (f"FS-GEN counterpart: {FSGEN_SCRIPTS[key]}; its figure number in the paper not checked against "
            "the paper")


@dataclass
class Plot:
    """A figure and, where it has one, its data table (``data``: header, rows of cell texts)."""

    title: str
    png: bytes
    caption: str = ""
    data: tuple[list[str], list[list[str]]] | None = None


@dataclass
class Report:
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _router(run: Run) -> RouterSpec | None:
    """The run's router entry (``None`` if not registered in this process: reported as collaborative)."""
    return ROUTERS.get(run.fsgen.router)


def role(run: Run) -> str:
    """The run's row group: ``System 1 alone`` (a router that never calls System 2), ``System 2 alone
    (oracle)`` (a method whose System 2 is the large model alone behind an always-calling router), else
    ``collaborative``. A run whose System 1 is the large model itself (``small = large``: the System 2 run a
    replaying sweep decodes once, in ``_system2/``) is ``System 2 alone (small = large)``: the large model by
    itself, as the demo runs it."""
    router, method = _router(run), METHODS.get(run.fsgen.method)
    if router is not None and router.never_calls:
        return "System 2 alone (small = large)" if run.fsgen.small == run.fsgen.large else "System 1 alone"
    if method is not None and method.large_alone and router is not None and router.always_calls:
        return "System 2 alone (oracle)"
    return "collaborative"


def _metric_names(task_results: dict[str, Any]) -> list[str]:
    return [k for k, v in task_results.items() if is_metric(k, v)]


def _row(run: Run, task: str, records: TraceTable | None) -> dict[str, Any]:
    """One leaderboard row: the run's metrics (value, stderr), rates and their intervals on ``task``."""
    res = run.results[task]
    summary = run.fsgen.task_summary(task)
    metrics = {}
    for m in _metric_names(res):
        name, _, filt = m.partition(",")
        se = res.get(f"{name}_stderr,{filt}" if filt else f"{name}_stderr")
        metrics[m] = (float(res[m]), float(se) if isinstance(se, (int, float)) else None)
    row = {"role": role(run), "pair": run.pair, "config": run.label, "metrics": metrics}
    row.update({k: summary.get(k) for k in SUMMARY_RATES})
    row["rate_field"] = rate_field(run.fsgen.method)  # the collaboration rate as the run's method defines it
    row["tokens_per_second"] = run.fsgen.tokens_per_second
    mine = _of_task(records, task) if records is not None else None
    row["ci"] = trace_intervals(mine) if mine is not None else {}
    row["n_requests"] = _n_requests(run, task, mine)
    return row


def _of_task(records: TraceTable, task: str) -> TraceTable:
    """The records of one task (task names compared as text, as lm-eval's results name them)."""
    return records.select(np.array([str(t) == task for t in records.get("task").tolist()], bool))


def _n_requests(run: Run, task: str, records: TraceTable | None) -> int | None:
    """The requests a task's metrics and rates rest on: lm-eval's effective sample count, else the number of
    trace records, else unknown (``None``)."""
    n = run.n_samples.get(task)
    if isinstance(n, dict) and isinstance(n.get("effective"), int):
        return n["effective"]
    # a group (fsgen_arith): lm-eval counts its subtasks (fsgen_arith_level1, ...), whose requests it pools
    parts = [v["effective"] for k, v in run.n_samples.items() if k.startswith(task + "_") and isinstance(v, dict)
             and isinstance(v.get("effective"), int)]
    if parts:
        return sum(parts)
    return (len(records) if records is not None else 0) or None


def build_tables(runs: list[Run], records: list[TraceTable] | None = None,
                 rank_by: str = "collaboration_rate") -> list[Table]:
    """One ranked leaderboard per task (sorted): a row per run (role, pair, configuration, metrics ± stderr,
    rates); ``records[i]``: the trace records of ``runs[i]`` (for the intervals)."""
    records = records if records is not None else [None for _ in runs]
    tasks = sorted({t for r in runs for t in r.results})
    tables = []
    for task in tasks:
        # a replaying sweep's internal System 2 run (in its _system2/ folder) is no configuration: no row
        rows = [_row(r, task, recs) for r, recs in zip(runs, records)
                if task in r.results and "_system2" not in Path(r.path).parts]
        metrics = sorted({m for row in rows for m in row["metrics"]})
        try:
            tables.append(rank_table(Table(task, metrics, rows), rank_by))
        except ValueError as err:
            raise ValueError(f"task {task}: {err}") from None
    return tables


@dataclass
class ScalingGroup:
    """One group of the scaling plot: ratios r [N], rates y [N], its ``fit_groups`` entry (``error`` set
    when the group was not fitted) and ``ci`` [N, 2], each rate's 95 % interval with requests as clusters
    (NaN where the run has no traces)."""

    label: str
    r: np.ndarray
    y: np.ndarray
    fit: dict[str, Any]
    ci: np.ndarray | None = None


def scaling_points(runs: list[Run], params: ParamTable | None, notes: list[str]) -> list[dict[str, Any]]:
    """One point per (collaborative run, task) with known sizes (:func:`points.fit_points`: the rate its
    method defines, never a run that does not call System 2); a run whose sizes are unknown is a note."""
    rows: list[dict[str, Any]] = []
    if params is None:
        return rows
    for run in runs:
        try:
            rows += [{**row, "run_path": str(run.path)} for row in fit_points([run], params, "any")]
        except ValueError as err:
            notes.append(f"scaling plot: {err}")
    return rows


def rate_intervals(runs: list[Run], records: list[TraceTable]) -> dict[tuple[str, str], tuple[float, float]]:
    """(run path, task) -> the 95 % interval of the run's collaboration rate on the task as its method defines
    it (:func:`points.rate_field`: proxy's ``base_collaboration_rate``), requests as clusters
    (:func:`leaderboard.trace_intervals`); absent where the run has too few traced requests."""
    out = {}
    for run, recs in zip(runs, records):
        for task in run.results:
            ci = trace_intervals(_of_task(recs, task)).get(rate_field(run.fsgen.method)) if len(recs) else None
            if ci is not None:
                out[(str(run.path), task)] = ci
    return out


def scaling_series(runs: list[Run], params: ParamTable | None, n_boot: int, notes: list[str],
                   progress: Callable[[int, int, str], None] | None = None,
                   intervals: dict[tuple[str, str], tuple[float, float]] | None = None) -> list[ScalingGroup]:
    """Per group of runs that share every setting (task, method, router and threshold, dtype, few-shot,
    batch size in half precision): ratios, rates, both laws' fits where the group has >= 3 pairs, and each
    rate's interval from ``intervals`` (:func:`rate_intervals`); a group fitted on another rate than
    ``collaboration_rate`` (proxy's ``base_collaboration_rate``) names it in its label."""
    rows = scaling_points(runs, params, notes)
    if not rows:
        return []
    fits = fit_groups(rows, n_boot=n_boot, progress=progress)
    out = []
    for g in (f.to_dict() for f in fits):
        mine = [r for r in rows if group_key(r) == tuple((k, g[k]) for k in GROUP_FIELDS if g.get(k) is not None)]
        ci = np.array([(intervals or {}).get((r["run_path"], r["task"]), (np.nan, np.nan)) for r in mine], float)
        fields = sorted({r["rate_field"] for r in mine})
        label = g["label"] + ("" if fields == ["collaboration_rate"] else f" ({', '.join(fields)})")
        out.append(ScalingGroup(label, np.array([r["large_params"] / r["small_params"] for r in mine]),
                                np.array([r["collaboration_rate"] for r in mine]), g, ci.reshape(-1, 2)))
        if "error" in g:
            notes.append(f"scaling fit for [{g['label']}]: not fitted: {g['error']}")
        elif g.get("degenerate"):
            notes.append(f"scaling fit for [{g['label']}]: degenerate, not drawn as a law: "
                         + "; ".join(g["degenerate"]))
    return out


def position_plot(per_task: list[tuple[Run, TraceTable]]) -> Plot:
    """Both normalisations of where handoffs fall, one row per (task, run): P(handoff | decile), the rate
    within each tenth of the generation, and P(decile | handoff), the share of the row's handoffs in each
    tenth (:data:`FSGEN_SCRIPTS` ``position``)."""
    labels, rates, shares, counts = [], [], [], []
    for run, recs in per_task:
        labels.append(f"{recs.get('task')[0]} | {run.pair} | {run.label}")
        rates.append(rate_by_decile(called_tokens(recs))[0])
        share, n = paper.handoff_position_distribution(recs)
        shares.append(share)
        counts.append(n)
    head = ["task | pair | configuration", "handoffs", *(f"P(h|d{k})" for k in range(10)),
            *(f"P(d{k}|h)" for k in range(10))]
    cells = [[label, str(n), *(_fmt(float(v), 3) for v in r), *(_fmt(float(v), 3) for v in sh)]
             for label, n, r, sh in zip(labels, counts, rates, shares)]
    return Plot("Handoff position: P(handoff | decile) and P(decile | handoff)",
                plots.to_png_bytes(plots.position_pair_figure(labels, np.array(rates), np.array(shares))),
                "left: the handoff rate within each tenth of the generation (ours); right: where a row's handoffs "
                "fall, each row summing to 1 (FS-GEN's normalisation); d0 = first 10 %. " + fsgen_counterpart("position"),
                (head, cells))


def scatter3d_plot(rows: list[dict[str, Any]]) -> Plot | None:
    """Collaboration rate over (log N_small, log N_large), one panel per (task, method) (:data:`FSGEN_SCRIPTS`
    ``3d``); each point the rate its method defines (``rate_field``)."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("task"), method_label(r.get("method"), r.get("variant"))), []).append(r)
    if not groups:
        return None
    panels = [(f"{task} / {method}", np.array([r["small_params"] for r in g], float),
               np.array([r["large_params"] for r in g], float), np.array([r["collaboration_rate"] for r in g]))
              for (task, method), g in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))]
    data = (["task", "method", "router", "small", "large", "N_small", "N_large", "collaboration rate", "rate field"],
            [[str(r.get("task")), method_label(r.get("method"), r.get("variant")), str(r.get("router")),
              _short_name(r.get("small")), _short_name(r.get("large")), f"{r['small_params']:.4g}",
              f"{r['large_params']:.4g}", _fmt(r["collaboration_rate"]), r["rate_field"]]
             for r in sorted(rows, key=lambda r: (str(r.get("task")), str(r.get("method")), r["small_params"],
                                                  r["large_params"]))])
    return Plot("Collaboration rate over model sizes (3-D)", plots.to_png_bytes(plots.scatter3d_figure(panels)),
                "one panel per task and method (every router's runs), each point the collaboration rate its method "
                "defines (rate field); planes at collaboration rate 0.05, 0.10 and 0.20. " + fsgen_counterpart("3d"),
                data)


def _short_name(model: Any) -> str:
    return Path(model).name if isinstance(model, str) and Path(model).is_absolute() else str(model)


def topk_figures(runs: list[Run], notes: list[str], random_state: int = 0) -> list[Plot]:
    """System 1's top-10 probabilities along one generation and the t-SNE of its top-100 probability vectors
    (:data:`FSGEN_SCRIPTS` ``topk``, ``tsne``), from the top-K side files beside the traces; none without them."""
    parts: list[tuple[Run, paper.TopK]] = []
    for run in runs:
        for f in run.trace_files:
            if paper.topk_path(f).is_file():
                parts.append((run, paper.read_topk(f, read_trace_file(f, paper.TOPK_COLUMNS), run.fsgen.run_id)))
    if not parts:
        notes.append("no top-K side files (traces_*.topk.parquet, written with trace_topk=K): the top-10 "
                     "probability and t-SNE figures are omitted")
        return []
    figs = []
    run, topk = next(((r, t) for r, t in parts if len(t.record)), parts[0])
    idx = paper.pick_generation(topk)
    if len(idx):
        probs, hand, ids = topk.probs[idx, :10], topk.handoff[idx], topk.ids[idx, 0]
        title = f"{topk.task[idx[0]]} | {run.pair} | {run.label} | record {int(topk.record[idx[0]])}"
        head = ["position", "top-1 token id", "handoff", *(f"p{k + 1}" for k in range(probs.shape[1]))]
        cells = [[str(int(topk.token[i])), str(int(t)), "yes" if h else "", *(_fmt(float(v), 3) for v in p)]
                 for i, t, h, p in zip(idx, ids, hand, probs)]
        figs.append(Plot("System 1's top-10 probabilities along one generation",
                         plots.to_png_bytes(plots.topk_generation_figure(probs, hand, ids, title)),
                         f"{title}: System 1's ten most likely tokens at each evaluated position, red where System "
                         "2's token differed (a handoff). " + fsgen_counterpart("topk"), (head, cells)))
    pooled = paper.concat_topk([t for _, t in parts])
    try:
        embs = paper.embed_topk(pooled, random_state=random_state)
    except ValueError as err:
        notes.append(f"t-SNE omitted: {err}")
        return figs
    head = ["features", "dimensions", "points", "handoffs", "agreements", "silhouette", "Davies-Bouldin",
            "adjusted Rand index vs handoff"]
    cells = [[e.name, str(e.n_features), str(len(e.handoff)), str(int(e.handoff.sum())), str(int((~e.handoff).sum())),
              _fmt(e.silhouette, 3), _fmt(e.davies_bouldin, 3), _fmt(e.ari, 3)] for e in embs]
    figs.append(Plot("t-SNE of System 1's top-100 probabilities: handoffs vs agreements",
                     plots.to_png_bytes(plots.embedding_figure(embs)),
                     "tokens where System 2 was evaluated, an equal sample of handoffs (System 2's token differs: "
                     "FS-GEN's 'mismatch') and agreements ('match'), PCA to 10 dimensions, then t-SNE; k-means "
                     "(k = 2) on the embedding, scored by silhouette and Davies-Bouldin, and against the handoff "
                     "labels by the adjusted Rand index (0: chance). " + fsgen_counterpart("tsne"), (head, cells)))
    return figs


def _run_name(run: Run) -> str:
    """A run as figures and tables name it: pair and configuration."""
    return f"{run.pair} | {run.label}"


def uncertainty_plots(per_run: list[tuple[Run, TraceTable]], pool: bool) -> list[Plot]:
    """System 1's uncertainty at handoffs vs agreements, per run: one run's histograms, or for several runs
    each run's AUROC per signal (one row per run, never their tokens together); with ``pool`` also the
    histograms of all runs' tokens together, titled and captioned as pooled."""
    per = [(run, called_tokens(recs)) for run, recs in per_run]
    per = [(run, tok) for run, tok in per if tok.n_called]
    if not per:
        return []
    sums = [(run, summarize_signals(tok)) for run, tok in per]
    head = ["run", "tokens where System 2 was evaluated", "handoffs", *(f"AUROC {s.name}" for s in sums[0][1])]
    cells = [[_run_name(run), str(tok.n_called), str(int(tok.handoff.sum())), *(_fmt(s.auroc, 3) for s in ss)]
             for (run, tok), (_, ss) in zip(per, sums)]
    if len(per) == 1:
        figs = [Plot("System-1 uncertainty at handoffs vs agreements",
                     plots.to_png_bytes(plots.signal_figure(sums[0][1])), f"run {_run_name(per[0][0])}",
                     (head, cells))]
    else:
        figs = [Plot("System-1 uncertainty at handoffs vs agreements, per run",
                     plots.to_png_bytes(plots.auroc_figure([_run_name(r) for r, _ in sums],
                                                           [s.name for s in sums[0][1]],
                                                           np.array([[s.auroc for s in ss] for _, ss in sums]))),
                     "AUROC of each System-1 signal for telling handoffs from agreements, each run on its own "
                     "tokens (0.5: chance)", (head, cells))]
    if pool and len(per) > 1:
        pooled = called_tokens(concat([recs for _, recs in per_run]))
        figs.append(Plot(f"System-1 uncertainty at handoffs vs agreements, POOLED over {len(per)} runs",
                         plots.to_png_bytes(plots.signal_figure(summarize_signals(pooled))),
                         f"pooled (asked for with --pool-runs): the {pooled.n_called} evaluated tokens of {len(per)} "
                         "runs together, as if one run; the per-run figure above is the one to compare runs by"))
    return figs


def tradeoff_plot(always: list[tuple[Run, TraceTable]], target: float | None, learned: dict[str, Path],
                  notes: list[str]) -> Plot | None:
    """Threshold (and learned) routers' trade-off from ``router=always`` traces, each run on its own
    tokens: one run's curves, or per signal one curve per run; the table has a row per (run, router)."""
    per: list[tuple[Run, list[Any]]] = []
    for run, recs in always:
        try:
            curves = tradeoff_curves(recs)
        except ValueError as err:
            notes.append(f"router trade-off omitted for {_run_name(run)}: {err}")
            continue
        if learned:
            from fsgen_eval.analysis.learned import learned_curves

            curves += learned_curves(run.trace_files, learned)
        per.append((run, curves))
    if not per:
        return None
    title = "Router trade-off (from router=always traces)" if learned else \
        "Threshold-router trade-off (from router=always traces)"
    caption = "learned routers: " + ", ".join(f"{n} ({p})" for n, p in learned.items()) if learned else ""
    if len(per) == 1:
        return Plot(title, plots.to_png_bytes(plots.tradeoff_figure(per[0][1], target)),
                    "; ".join(x for x in (f"run {_run_name(per[0][0])}", caption) if x), _tradeoff_table(per[0][1]))
    head, _ = _tradeoff_table(per[0][1])
    rows = [[_run_name(run), *row] for run, curves in per for row in _tradeoff_table(curves)[1]]
    fig = plots.tradeoff_runs_figure([_run_name(r) for r, _ in per], [c for _, c in per], target)
    return Plot(title + ", per run", plots.to_png_bytes(fig), "; ".join(
        x for x in ("one panel per router signal, one line per run (each on its own tokens)", caption) if x),
        (["run", *head], rows))


def _trace_figures(runs: list[Run], all_records: list[TraceTable], target: float | None,
                   notes: list[str], learned: dict[str, Path], pool: bool = False) -> list[Plot]:
    figs: list[Plot] = []
    per_run = [(r, recs) for r, recs in zip(runs, all_records) if len(recs)]
    # one heatmap row per (run, task): a run over several tasks is several rows, each named by its task
    per_task = [(r, _of_task(recs, task)) for r, recs in per_run
                for task in sorted({str(t) for t in recs.get("task").tolist()})]
    per_task = [(r, recs) for r, recs in per_task if len(recs)]
    if not per_run:
        notes.append("no trace files next to the results: uncertainty, position and router plots omitted")
        return figs
    n_called = sum(called_tokens(recs).n_called for _, recs in per_run)
    notes.append(f"uncertainty analysis uses the {n_called} of {sum(recs.n_tokens for _, recs in per_run)} traced "
                 "tokens where System 2 was evaluated (llm_called): a handoff is defined only there; each run is "
                 "analysed on its own tokens" + (" (and, as asked, pooled in a figure that says so)" if pool else ""))
    if n_called:
        figs += uncertainty_plots(per_run, pool)
        figs.append(position_plot(per_task))
    always = [(r, recs) for r, recs in per_run if _router(r) is not None and _router(r).always_calls]
    plot = tradeoff_plot(always, target, learned, notes) if always else None
    if plot is not None:
        figs.append(plot)
    elif learned:
        notes.append("learned routers omitted: they are evaluated on router=always traces, and none was given")
    return figs


def _tradeoff_table(curves: list[Any], rates: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)) -> tuple[list[str], list[list[str]]]:
    """Per router (signal), the share of handoffs caught at a few call rates: the figure's data."""
    head = ["router", *(f"caught @ {r:g} calls" for r in rates)]
    rows = [[c.signal, *(_fmt(c.at_target(r)["caught"], 3) for r in rates)] for c in curves]
    return head, rows


def _speculative_figures(runs: list[Run], params: ParamTable | None, cost_ratio: float | None) -> list[Plot]:
    """Replayed runs with per-draft-length speculative counters: acceptance and speed-up bound against k."""
    from fsgen_eval.analysis.speculative import acceptance_profiles, profile_table

    profiles = acceptance_profiles(runs, params)
    if not profiles:
        return []
    c = "each pair's N_small / N_large" if cost_ratio is None else f"{cost_ratio:g}"
    return [Plot("Greedy speculative decoding per draft length", plots.to_png_bytes(plots.acceptance_figure(
        profiles, cost_ratio)), f"batch-1 greedy speculative decoding replayed from one teacher-forced pass; speed-up "
        f"bound = mean acceptance length / (k c + 1) at cost ratio c = {c}", profile_table(profiles, cost_ratio))]


def leaderboard_figures(tables: list[Table]) -> list[Plot]:
    """Per task: the ranked column's values with their 95 % intervals as bars, and the pair × configuration
    matrix of collaboration rates, each as its method defines it (each figure with its data table)."""
    figs = []
    for t in tables:
        col = t.column(t.rank_by)
        ranked = [r for r in t.rows if r["rank"] is not None]
        if ranked:
            vals = [col.value(r) for r in ranked]
            labels = [f"{r['rank']}. {r['pair']} | {r['config']}" for r in ranked]
            best = [i for i, r in enumerate(ranked) if t.rows.index(r) in t.best.get(col.key, [])]
            fig = plots.ranking_figure(labels, [v for v, _ in vals], [ci for _, ci in vals], col.title, best,
                                       f"{t.task}: ranked by {col.title.rstrip(' ↓↑')}")
            data = (["rank", "pair", "configuration", col.title, "95 % low", "95 % high"],
                    [[str(r["rank"]), r["pair"], r["config"], _fmt(v), *(("–", "–") if ci is None else
                      (_fmt(ci[0]), _fmt(ci[1])))] for r, (v, ci) in zip(ranked, vals)])
            figs.append(Plot(f"Leaderboard {t.task}: {col.title.rstrip(' ↓↑')} with 95 % intervals",
                             plots.to_png_bytes(fig), "bars: 95 % intervals (rates: requests as clusters, "
                             "clipped to [0, 1]; proportions: Wilson; other metrics: ± 1.96 stderr)"
                             + ("; ★ strict best" if best else ""), data))
        pairs = sorted({r["pair"] for r in t.rows})
        configs = sorted({r["config"] for r in t.rows})
        matrix = np.full((len(pairs), len(configs)), np.nan)
        for r in t.rows:  # each cell the rate its method defines (proxy: against the untuned base)
            if r.get(r["rate_field"]) is not None:
                matrix[pairs.index(r["pair"]), configs.index(r["config"])] = r[r["rate_field"]]
        other = sorted({f"{r['config']}: {r['rate_field']}" for r in t.rows if r["rate_field"] != "collaboration_rate"})
        if np.isfinite(matrix).any():
            figs.append(Plot(f"Collaboration rate {t.task}: pair × configuration",
                             plots.to_png_bytes(plots.matrix_figure(pairs, configs, matrix, "collaboration rate")),
                             "empty cell: that pair did not run that configuration" + (
                                 "; each cell the rate its method defines, collaboration_rate except "
                                 + ", ".join(other) + " (FS-GEN's proxy count, against the untuned base's greedy "
                                 "token)" if other else ""),
                             (["pair", *configs], [[p, *(_fmt(v) if np.isfinite(v) else "–" for v in row)]
                                                    for p, row in zip(pairs, matrix)])))
    return figs


def frontier_figures(frontiers: list[tuple[Path, dict[str, Any]]]) -> list[Plot]:
    """Per ``frontier.json`` (``fsgen-eval frontier``): accuracy against call rate and parameter cost, its points
    as the data table and the gap recovery in the caption, as the frontier computed them."""
    from fsgen_eval.analysis.frontier import recovery_text

    figs = []
    for path, obj in frontiers:
        rows = obj["points"]
        name = f"{_short_name(obj.get('small', '?'))} -> {_short_name(obj.get('large', '?'))} on {obj.get('task', '?')}"
        caption = (f"{path}: bars 95 % Wilson intervals over {rows[0].get('n_docs', '?')} documents; dashed: the "
                   f"straight line between System 1 alone and System 2 alone; thresholds calibrated on "
                   f"{obj.get('calibration', '?')}. Call rate recovering 50 % / 90 % of the gap: "
                   + recovery_text(obj.get("gap_recovery") or {}))
        data = (["point", "target call rate", "accuracy", "95 % low", "95 % high", "llm_call_rate",
                 "collaboration_rate", "param_cost"],
                [[r["label"], _fmt(r.get("target_call_rate"), 2), _fmt(r["accuracy"], 3), _fmt(r["accuracy_ci"][0], 3),
                  _fmt(r["accuracy_ci"][1], 3), _fmt(r["llm_call_rate"], 3), _fmt(r.get("collaboration_rate"), 3),
                  f"{r['param_cost']:.4g}"] for r in rows])
        figs.append(Plot(f"Accuracy frontier {name}", plots.to_png_bytes(plots.frontier_figure(rows)), caption, data))
    return figs


def build_report(runs: list[Run], params: ParamTable | None = None, title: str = "fsgen-eval report",
                 target_call_rate: float | None = None, n_boot: int = 200,
                 progress: Callable[[int, int, str], None] | None = None,
                 rank_by: str = "collaboration_rate", cost_ratio: float | None = None,
                 learned: dict[str, Path] | None = None, pool: bool = False,
                 frontiers: list[tuple[Path, dict[str, Any]]] | None = None) -> Report:
    """The report over ``runs``: tables, the scaling figure (``params`` gives the parameter ratios; ``n_boot``
    bootstrap resamples for its fit) and the trace figures (``target_call_rate`` marks the what-if);
    ``ValueError`` without runs. What could not be drawn is said in ``notes``. ``progress(i, n, group)`` is
    called before each scaling fit (the CLI prints it); ``rank_by``: the leaderboard's ranking column
    (:data:`leaderboard.RANK_CHOICES` or a metric name); ``cost_ratio``: the speculative speed-up bound's
    System 1 / large cost per pass (default: each pair's parameter ratio); ``learned``: learned routers
    (name -> ``ROUTER.json``) drawn in the trade-off figure beside the threshold routers; ``pool``: also draw
    the uncertainty histograms of all runs' tokens together (labelled as pooled; per run otherwise);
    ``frontiers``: ``frontier.json`` files (:func:`fsgen_eval.analysis.frontier.find_frontiers`), each drawn as
    a figure."""
    if not runs:
        raise ValueError("report: no runs to report on")
    if learned:
        from fsgen_eval.core import learned as core_learned

        for path in learned.values():
            core_learned.load(path)  # a bad router file fails here, before any trace is read
    build_tables(runs, None, rank_by)  # a bad rank_by fails here, before the traces are read
    records = [run_records(r, REPORT_COLUMNS) for r in runs]
    rep = Report(title, build_tables(runs, records, rank_by))
    rep.notes += [f"{r.pair} | {r.label}: its generated programs ran in the code_eval sandbox's fallback WITHOUT "
                  "namespaces (fallback_no_namespaces): they could read what their user can read"
                  for r in runs if r.code_tasks and "fallback_no_namespaces" in (r.fsgen.code_eval_sandbox or [])]
    rep.figures += leaderboard_figures(rep.tables)
    rep.figures += frontier_figures(frontiers or [])
    series = scaling_series(runs, params, n_boot, rep.notes, progress, rate_intervals(runs, records))
    if series:
        rep.figures.append(Plot("Collaboration rate vs parameter ratio",
                                  plots.to_png_bytes(plots.scaling_figure(series)),
                                  f"fit: f(r) = b - a r^-alpha (a, alpha, b >= 0.05), drawn over the data's range, "
                                  f"where a group has >= {MIN_PAIRS} distinct pairs; a degenerate fit (a parameter "
                                  "at its bound, R² <= 0, an unbounded interval) is dotted and named so in the "
                                  "legend; bars: each rate's 95 % interval with requests as clusters (none where "
                                  "the run has no traces); x: the ratio itself on a log axis; each point the "
                                  "collaboration rate its method defines (a group on another rate names it). "
                                  + fsgen_counterpart("scaling")))
        cube = scatter3d_plot(scaling_points(runs, params, []))
        if cube is not None:
            rep.figures.append(cube)
    else:
        rep.notes.append("scaling plot omitted: no collaborative run with known parameter counts")
    rep.figures += _trace_figures(runs, records, target_call_rate, rep.notes, learned or {}, pool)
    rep.figures += topk_figures(runs, rep.notes)
    rep.figures += _speculative_figures(runs, params, cost_ratio)
    return rep


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(map(esc, r)) + " |" for r in rows]


def to_markdown(rep: Report, image_names: list[str]) -> str:
    """Markdown text; figure i is linked as ``image_names[i]`` (written by :func:`write_report`)."""
    lines = [f"# {rep.title}", ""]
    for t in rep.tables:
        cells = format_rows(t, lambda text: f"**{text}** ★")
        lines += [f"## {t.task}", "", *_md_table(header(t), [[c[0] for c in row] for row in cells]), ""]
    for fig, name in zip(rep.figures, image_names):
        lines += [f"## {fig.title}", "", f"![{fig.title}]({name})", "", fig.caption, ""]
        if fig.data is not None:
            lines += [*_md_table(*fig.data), ""]
    if rep.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #bbb;padding:4px 8px;font-size:13px}th{background:#e8eef7}"
        "table.sortable th{cursor:pointer}td.best{font-weight:bold;background:#fff3c4}"
        "tr:nth-child(even){background:#f6f6f6}img{max-width:100%;border:1px solid #ddd}")

# Sorts a leaderboard by the clicked column (again: the other way); numbers by value, text alphabetically,
# empty cells last. ``#sort=T:C:asc|desc`` in the URL sorts table T by column C on load (for a headless check).
_SORT_JS = """<script>
function fsgenSort(t, c, dir) {
  const rows = Array.from(t.tBodies[0].rows), key = r => r.cells[c].dataset.v;
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === '' || y === '') return (x === '') - (y === '');
    const nx = Number(x), ny = Number(y);
    const d = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
    return dir === 'desc' ? -d : d;
  });
  rows.forEach(r => t.tBodies[0].appendChild(r));
  t.dataset.sorted = c + ':' + dir;
}
const fsgenTables = Array.from(document.querySelectorAll('table.sortable'));
fsgenTables.forEach(t => Array.from(t.tHead.rows[0].cells).forEach((th, c) => th.addEventListener('click',
  () => fsgenSort(t, c, t.dataset.sorted === c + ':asc' ? 'desc' : 'asc'))));
const fsgenHash = location.hash.match(/sort=(\\d+):(\\d+):(asc|desc)/);
if (fsgenHash && fsgenTables[+fsgenHash[1]]) fsgenSort(fsgenTables[+fsgenHash[1]], +fsgenHash[2], fsgenHash[3]);
</script>"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table class='data'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")


def _sort_value(v: float | str | None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, (int, float)) else str(v)


def to_html(rep: Report) -> str:
    """One standalone HTML page: inline CSS, sortable leaderboards (inline script), figures as base64 PNG
    data URIs with their data tables; nothing is fetched."""
    import base64

    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(rep.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(rep.title)}</h1>"]
    for t in rep.tables:
        parts.append(f"<h2>{e(t.task)}</h2><p>Click a column to sort; ★ marks each column's best.</p>"
                     f"<table class='leaderboard sortable' data-task='{e(t.task)}'><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in header(t)) + "</tr></thead><tbody>")
        for row in format_rows(t, lambda text: f"{text} ★"):
            parts.append("<tr>" + "".join(
                f"<td{' class=best' if best else ''} data-v='{e(_sort_value(v))}'>{e(text)}</td>"
                for text, v, best in row) + "</tr>")
        parts.append("</tbody></table>")
    for fig in rep.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(f"<h2>{e(fig.title)}</h2><figure><img class='plot' alt='{e(fig.title)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{e(fig.caption)}</figcaption></figure>")
        if fig.data is not None:
            parts.append(_html_table(*fig.data))
    if rep.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in rep.notes) + "</ul>")
    return "".join(parts) + _SORT_JS + "</body></html>\n"


def write_report(rep: Report, out_dir: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` with ``<stem>_plots/*.png`` and the standalone ``<stem>.html``; returns both paths."""
    out_dir = Path(out_dir)
    img_dir = out_dir / f"{stem}_plots"
    names = []
    for i, fig in enumerate(rep.figures):
        atomic_write(img_dir / f"figure{i + 1}.png", fig.png)
        names.append(f"{stem}_plots/figure{i + 1}.png")
    md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    atomic_write(md, to_markdown(rep, names))
    atomic_write(page, to_html(rep))
    return md, page
