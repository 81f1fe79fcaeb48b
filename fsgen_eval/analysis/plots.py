"""Figures drawn from finished estimates (fits, signal summaries, rates, trade-off curves); matplotlib Agg.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot's global state, so nothing is shown
and figures can be made in a headless CI; :func:`to_png_base64` embeds one in HTML.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from fsgen_eval.analysis.scaling import power_law
from fsgen_eval.analysis.signals import SignalSummary
from fsgen_eval.analysis.whatif import TradeoffCurve


def to_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def to_png_base64(fig: Figure, dpi: int = 100) -> str:
    return base64.b64encode(to_png_bytes(fig, dpi)).decode("ascii")


def _data_ylim(ys: list[np.ndarray]) -> tuple[float, float]:
    """The y-range of the points, padded by 15 % of their span (at least 0.01): the axes follow the data,
    never a fitted curve's excursions."""
    y = np.concatenate([np.asarray(v, float) for v in ys])
    lo, hi = float(np.min(y)), float(np.max(y))
    pad = max(0.15 * (hi - lo), 0.01)
    return lo - pad, hi + pad


def fit_legend(label: str, fit: dict[str, Any]) -> str:
    """The legend entry of a group's power-law fit: the law and R², or why it is not one."""
    if "error" in fit:
        return f"{label}: not fitted ({fit.get('n_pairs', 0)} pairs < 3)" if fit.get("n_pairs", 0) < 3 else \
            f"{label}: not fitted ({fit['error']})"
    if fit.get("degenerate"):
        return f"{label}: fit degenerate ({'; '.join(fit['degenerate'])})"
    return f"{label}: {fit['b']:.3g} - {fit['a']:.3g} r^-{fit['alpha']:.3g} (R²={fit['r2']:.2f})"


def scaling_figure(series: list[Any]) -> Figure:
    """Collaboration rate against the parameter ratio; each series has ``label``, ``r`` [N], ``y`` [N] and
    ``fit`` (a ``fit_groups`` entry). A fit is drawn only over the data's ratios and the y-axis is the
    data's range; a degenerate fit is dotted and says so in the legend; an unfitted group shows points only."""
    fig = Figure(figsize=(7, 4.2 + 0.18 * len(series)))
    ax = fig.add_subplot()
    for i, g in enumerate(series):
        color = f"C{i % 10}"
        ax.scatter(g.r, g.y, color=color, zorder=3, s=18)
        fit = g.fit
        text = fit_legend(g.label, fit)
        if "error" in fit:
            ax.plot([], [], color=color, marker="o", ls="none", label=text)
            continue
        grid = np.geomspace(float(np.min(g.r)), float(np.max(g.r)), 100)
        degenerate = bool(fit.get("degenerate"))
        ax.plot(grid, power_law(grid, fit["a"], fit["alpha"], fit["b"]), color=color,
                ls=":" if degenerate else "-", lw=1.0 if degenerate else 1.6, alpha=0.6 if degenerate else 1.0,
                label=text)
    ax.set_ylim(*_data_ylim([g.y for g in series]))
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
    ax.set_xlabel("parameter ratio r = N_large / N_small")
    ax.set_ylabel("collaboration rate")
    ax.grid(alpha=0.3)
    # the legend below the axes: long group names and degeneracy notes would cover the points
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0, -0.16), ncol=1, frameon=False)
    return fig


def signal_figure(summaries: list[SignalSummary]) -> Figure:
    """Histograms (density) of each System-1 signal at handoffs vs agreements, AUROC in the title."""
    fig = Figure(figsize=(4 * len(summaries), 3.2))
    for i, s in enumerate(summaries):
        ax = fig.add_subplot(1, len(summaries), i + 1)
        width = np.diff(s.bin_edges)
        for hist, label, color in ((s.hist_agree, "agreement", "C0"), (s.hist_handoff, "handoff", "C3")):
            dens = hist / max(hist.sum(), 1) / np.where(width > 0, width, 1)
            ax.stairs(dens, s.bin_edges, fill=True, alpha=0.45, color=color, label=f"{label} (n={int(hist.sum())})")
        ax.set_title(f"{s.name}  AUROC={s.auroc:.3f}", fontsize=9)
        ax.set_xlabel(s.name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def position_figure(labels: list[str], rates: np.ndarray) -> Figure:
    """Heatmap of handoff rate: rows = labels [R], columns = deciles of the generation; rates [R, 10]."""
    rates = np.atleast_2d(np.asarray(rates, float))
    fig = Figure(figsize=(7, 0.5 * len(labels) + 1.6))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(rates), aspect="auto", cmap="viridis", vmin=0)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xticks(range(rates.shape[1]), [f"{10 * k}-{10 * k + 10}%" for k in range(rates.shape[1])],
                  fontsize=7, rotation=45)
    ax.set_xlabel("relative position in the generation")
    fig.colorbar(im, ax=ax, label="handoff rate")
    return fig


def tradeoff_figure(curves: list[TradeoffCurve], target: float | None = None) -> Figure:
    """Share of handoffs caught against large-model call rate, one curve per signal."""
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for i, c in enumerate(curves):
        ax.plot(c.call_rate, c.caught, drawstyle="steps-post", color=f"C{i}", label=c.signal)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="random router")
    if target is not None:
        ax.axvline(target, ls="--", color="k", lw=0.8, label=f"target call rate {target:g}")
    ax.set_xlabel("large-model call rate")
    ax.set_ylabel("share of handoffs caught")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def ranking_figure(labels: list[str], values: list[float], intervals: list[tuple[float, float] | None],
                   xlabel: str, best: list[int], title: str) -> Figure:
    """A ranked list, best at the top: per row [R] its value (dot) and 95 % interval (bar); ``best``: the
    indices marked with a star."""
    n = len(labels)
    fig = Figure(figsize=(7, 0.32 * n + 1.4))
    ax = fig.add_subplot()
    y = np.arange(n)
    v = np.asarray(values, float)
    lo = np.array([v[i] - ci[0] if ci else 0.0 for i, ci in enumerate(intervals)])
    hi = np.array([ci[1] - v[i] if ci else 0.0 for i, ci in enumerate(intervals)])
    colors = ["C3" if i in best else "C0" for i in range(n)]
    ax.barh(y, v, color=colors, alpha=0.7, height=0.6)
    ax.errorbar(v, y, xerr=np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)]), fmt="none", ecolor="k", capsize=3, lw=1)
    ax.scatter(v, y, color=colors, zorder=3, s=14)
    for i in best:
        ax.annotate("★", (v[i], y[i]), xytext=(6, -4), textcoords="offset points", color="C3", fontsize=11)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()  # rank 1 on top
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return fig


def matrix_figure(rows: list[str], cols: list[str], values: np.ndarray, label: str) -> Figure:
    """A [R, C] matrix coloured by value, each cell annotated (NaN cells left blank)."""
    values = np.atleast_2d(np.asarray(values, float))
    fig = Figure(figsize=(1.3 * len(cols) + 3.5, 0.45 * len(rows) + 1.8))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis_r")
    finite = values[np.isfinite(values)]
    mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white" if v > mid else "black")
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=30, ha="right")
    fig.colorbar(im, ax=ax, label=label)
    return fig
