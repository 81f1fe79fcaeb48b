"""A leaderboard-style report over results folders: Markdown (plots as PNG files beside it) and one
standalone HTML file (plots embedded as base64 PNG).

Per task, one table: accuracy (lm-eval's metrics, ± stderr) of System 1 alone (``router=never``), System 2
alone (``method=oracle``, ``router=always``) and each collaborative configuration, with collaboration rate,
large-model call rate, mean acceptance length and tokens per second. Then the figures: collaboration rate vs
parameter ratio with the power-law fit, System-1 uncertainty at handoffs vs agreements, handoff rate by
relative position, and threshold-router trade-off curves.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.analysis import plots
from fsgen_eval.analysis.files import Run, is_metric, read_traces
from fsgen_eval.analysis.params import ParamTable
from fsgen_eval.analysis.scaling import Fit, fit_power_law
from fsgen_eval.analysis.signals import called_tokens, rate_by_decile, summarize_signals
from fsgen_eval.analysis.whatif import tradeoff_curves
from fsgen_eval.core.registry import METHODS, ROUTERS, RouterSpec

ROLE_ORDER = {"System 1 alone": 0, "System 2 alone (oracle)": 1, "collaborative": 2}
RATE_COLUMNS = ("collaboration_rate", "llm_call_rate", "mean_acceptance_length", "tokens_per_second")


@dataclass
class Table:
    task: str
    metrics: list[str]
    rows: list[dict[str, Any]]


@dataclass
class Plot:
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Report:
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _router(run: Run) -> RouterSpec | None:
    """The run's router entry (``None`` if not registered in this process: reported as collaborative)."""
    return ROUTERS.get(run.fsgen.get("router"))


def role(run: Run) -> str:
    """The run's row group: ``System 1 alone`` (a router that never calls System 2), ``System 2 alone
    (oracle)`` (a method whose System 2 is the large model alone behind an always-calling router), else
    ``collaborative``."""
    router, method = _router(run), METHODS.get(run.fsgen.get("method"))
    if router is not None and router.never_calls:
        return "System 1 alone"
    if method is not None and method.large_alone and router is not None and router.always_calls:
        return "System 2 alone (oracle)"
    return "collaborative"


def _metric_names(task_results: dict[str, Any]) -> list[str]:
    return [k for k, v in task_results.items() if is_metric(k, v)]


def _row(run: Run, task: str) -> dict[str, Any]:
    res = run.results[task]
    summary = (run.fsgen.get("per_task") or {}).get(task) or run.fsgen.get("summary") or {}
    metrics = {}
    for m in _metric_names(res):
        name, _, filt = m.partition(",")
        se = res.get(f"{name}_stderr,{filt}" if filt else f"{name}_stderr")
        metrics[m] = (float(res[m]), float(se) if isinstance(se, (int, float)) else None)
    row = {"role": role(run), "pair": run.pair, "config": run.label, "metrics": metrics}
    row.update({k: summary.get(k) for k in RATE_COLUMNS[:3]})
    row["tokens_per_second"] = run.fsgen.get("tokens_per_second")
    return row


def build_tables(runs: list[Run]) -> list[Table]:
    """One table per task (sorted): a row per run (role, pair, configuration, metrics ± stderr, rates),
    System 1 alone first, then System 2 alone, then the collaborative runs."""
    tasks = sorted({t for r in runs for t in r.results})
    tables = []
    for task in tasks:
        rows = [_row(r, task) for r in runs if task in r.results]
        rows.sort(key=lambda row: (ROLE_ORDER[row["role"]], row["pair"], row["config"]))
        metrics = sorted({m for row in rows for m in row["metrics"]})
        tables.append(Table(task, metrics, rows))
    return tables


def scaling_series(runs: list[Run], params: ParamTable | None, n_boot: int,
                   notes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, Fit | None]]:
    """Per task/method: ratios, collaboration rates and a power-law fit when there are >= 3 points."""
    points: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        if params is None or (_router(run) is not None and _router(run).never_calls):
            continue
        try:
            ratio = params.get(run.fsgen["large"]) / params.get(run.fsgen["small"])
        except ValueError as err:
            notes.append(f"scaling plot: {err}")
            continue
        for task in run.results:
            rate = ((run.fsgen.get("per_task") or {}).get(task) or run.fsgen.get("summary") or {}).get(
                "collaboration_rate")
            if rate is not None:
                points.setdefault(f"{task} / {run.fsgen['method']}", []).append((ratio, float(rate)))
    series = {}
    for label, pts in sorted(points.items()):
        r, y = np.array(pts).T
        try:
            fit = fit_power_law(r, y, n_boot=n_boot)
        except ValueError as err:
            notes.append(f"scaling fit for {label}: {err}")
            fit = None
        series[label] = (r, y, fit)
    return series


def _trace_figures(runs: list[Run], target: float | None, notes: list[str]) -> list[Plot]:
    figs: list[Plot] = []
    per_run = [(r, [rec["trace"] for rec in read_traces(r.trace_files)]) for r in runs if r.trace_files]
    if not per_run:
        notes.append("no trace files next to the results: uncertainty, position and router plots omitted")
        return figs
    pooled = called_tokens([t for _, ts in per_run for t in ts])
    notes.append(f"uncertainty analysis uses the {pooled.n_called} of {pooled.n_tokens} traced tokens where "
                 "System 2 was evaluated (llm_called): a handoff is defined only there")
    if pooled.n_called:
        figs.append(Plot("System-1 uncertainty at handoffs vs agreements",
                           plots.to_png_bytes(plots.signal_figure(summarize_signals(pooled)))))
        labels = [f"{r.pair} {r.label}" for r, _ in per_run]
        rates = np.array([rate_by_decile(called_tokens(ts))[0] for _, ts in per_run])
        figs.append(Plot("Handoff rate by relative position", plots.to_png_bytes(plots.position_figure(labels, rates))))
    always = [t for r, ts in per_run if _router(r) is not None and _router(r).always_calls for t in ts]
    if always:
        try:
            curves = tradeoff_curves(always)
            figs.append(Plot("Threshold-router trade-off (from router=always traces)",
                               plots.to_png_bytes(plots.tradeoff_figure(curves, target))))
        except ValueError as err:
            notes.append(f"router trade-off omitted: {err}")
    return figs


def build_report(runs: list[Run], params: ParamTable | None = None, title: str = "fsgen-eval report",
                 target_call_rate: float | None = None, n_boot: int = 200) -> Report:
    """The report over ``runs``: tables, the scaling figure (``params`` gives the parameter ratios; ``n_boot``
    bootstrap resamples for its fit) and the trace figures (``target_call_rate`` marks the what-if);
    ``ValueError`` without runs. What could not be drawn is said in ``notes``."""
    if not runs:
        raise ValueError("report: no runs to report on")
    rep = Report(title, build_tables(runs))
    series = scaling_series(runs, params, n_boot, rep.notes)
    if series:
        rep.figures.append(Plot("Collaboration rate vs parameter ratio",
                                  plots.to_png_bytes(plots.scaling_figure(series)),
                                  "fit: f(r) = b - a r^-alpha (a, alpha, b >= 0.05) where a group has >= 3 pairs"))
    else:
        rep.notes.append("scaling plot omitted: no collaborative run with known parameter counts")
    rep.figures += _trace_figures(runs, target_call_rate, rep.notes)
    return rep


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _cells(table: Table, row: dict[str, Any]) -> list[str]:
    out = [row["role"], row["pair"], row["config"]]
    for m in table.metrics:
        v = row["metrics"].get(m)
        out.append("–" if v is None else _fmt(v[0]) + ("" if v[1] is None else f" ± {v[1]:.4f}"))
    out += [_fmt(row["collaboration_rate"]), _fmt(row["llm_call_rate"]), _fmt(row["mean_acceptance_length"], 2),
            _fmt(row["tokens_per_second"], 1)]
    return out


def header(table: Table) -> list[str]:
    """The column titles of a task table."""
    return ["role", "pair", "configuration", *table.metrics, "collaboration rate", "LLM call rate",
            "acceptance length", "tokens/s"]


def to_markdown(rep: Report, image_names: list[str]) -> str:
    """Markdown text; figure i is linked as ``image_names[i]`` (written by :func:`write_report`)."""
    lines = [f"# {rep.title}", ""]
    for t in rep.tables:
        lines += [f"## {t.task}", "", "| " + " | ".join(header(t)) + " |", "|" + "---|" * len(header(t))]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(t, row)) + " |" for row in t.rows]
        lines.append("")
    for fig, name in zip(rep.figures, image_names):
        lines += [f"## {fig.title}", "", f"![{fig.title}]({name})", "", fig.caption, ""]
    if rep.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #bbb;padding:4px 8px;font-size:13px}th{background:#e8eef7}"
        "tr:nth-child(even){background:#f6f6f6}img{max-width:100%;border:1px solid #ddd}")


def to_html(rep: Report) -> str:
    """One standalone HTML page: inline CSS, tables, figures as base64 PNG data URIs; no scripts."""
    import base64

    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(rep.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(rep.title)}</h1>"]
    for t in rep.tables:
        parts.append(f"<h2>{e(t.task)}</h2><table class='leaderboard' data-task='{e(t.task)}'><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in header(t)) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in _cells(t, row)) + "</tr>" for row in t.rows]
        parts.append("</tbody></table>")
    for fig in rep.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(f"<h2>{e(fig.title)}</h2><figure><img class='plot' alt='{e(fig.title)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{e(fig.caption)}</figcaption></figure>")
    if rep.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in rep.notes) + "</ul>")
    return "".join(parts) + "</body></html>\n"


def write_report(rep: Report, out_dir: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` with ``<stem>_plots/*.png`` and the standalone ``<stem>.html``; returns both paths."""
    out_dir = Path(out_dir)
    img_dir = out_dir / f"{stem}_plots"
    img_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, fig in enumerate(rep.figures):
        (img_dir / f"figure{i + 1}.png").write_bytes(fig.png)
        names.append(f"{stem}_plots/figure{i + 1}.png")
    md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    md.write_text(to_markdown(rep, names))
    page.write_text(to_html(rep))
    return md, page
