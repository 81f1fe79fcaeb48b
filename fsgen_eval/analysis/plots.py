"""Figures drawn from finished estimates (fits, signal summaries, rates, trade-off curves); matplotlib Agg.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot's global state, so nothing is shown
and figures can be made in a headless CI; :func:`to_png_base64` embeds one in HTML.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from fsgen_eval.analysis.scaling import Fit, power_law
from fsgen_eval.analysis.signals import SignalSummary
from fsgen_eval.analysis.whatif import TradeoffCurve


def to_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def to_png_base64(fig: Figure, dpi: int = 100) -> str:
    """The figure as a base64 PNG string, for embedding in HTML."""
    return base64.b64encode(to_png_bytes(fig, dpi)).decode("ascii")


def scaling_figure(series: dict[str, tuple[np.ndarray, np.ndarray, Fit | None]]) -> Figure:
    """Collaboration rate against the parameter ratio: per label, (r [N], rate [N], power-law fit or None)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for i, (label, (r, y, fit)) in enumerate(series.items()):
        color = f"C{i % 10}"
        ax.scatter(r, y, color=color, label=label, zorder=3)
        if fit is not None:
            grid = np.geomspace(min(r) * 0.9, max(r) * 1.1, 100)
            p = fit.params
            ax.plot(grid, power_law(grid, p["a"], p["alpha"], p["b"]), color=color,
                    label=f"{p['b']:.3f} - {p['a']:.3f} r^-{p['alpha']:.2f} (R²={fit.r2:.2f})")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
    ax.set_xlabel("parameter ratio r = N_large / N_small")
    ax.set_ylabel("collaboration rate")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
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
