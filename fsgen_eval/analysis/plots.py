"""Figures drawn from finished estimates (fits, signal summaries, rates, trade-off curves); matplotlib Agg.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot's global state, so nothing is shown
and figures can be made in a headless CI; :func:`to_png_base64` embeds one in HTML.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from fsgen_eval.analysis.scaling import log_ratio_law, power_law
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


def _data_ylim(ys: list[np.ndarray]) -> tuple[float, float]:
    """The y-range of the points, padded by 15 % of their span (at least 0.01): the axes follow the data,
    never a fitted curve's excursions."""
    y = np.concatenate([np.asarray(v, float) for v in ys])
    lo, hi = float(np.min(y)), float(np.max(y))
    pad = max(0.15 * (hi - lo), 0.01)
    return lo - pad, hi + pad


def log_ticks(lo: float, hi: float) -> list[float]:
    """The 1-2-5 values (..., 1, 2, 5, 10, 20, ...) within [lo, hi]; the two ends themselves when fewer than
    two fall inside, so that a log axis is labelled at every tick it shows."""
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in (1, 2, 5) if lo <= m * 10.0 ** k <= hi]
    return ticks if len(ticks) >= 2 else sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})


def label_log_axis(ax: Any, values: np.ndarray) -> None:
    """A log x-axis over ``values`` [N] (padded 10 % each side) with every tick labelled (:func:`log_ticks`),
    no unlabelled minor ticks."""
    lo, hi = float(np.min(values)) / 1.1, float(np.max(values)) * 1.1
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = log_ticks(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])


def fit_legend(label: str, fit: dict[str, Any]) -> str:
    """The legend entry of a group's power-law fit: the law and R², or why it is not one."""
    if "error" in fit:
        return f"{label}: not fitted ({fit.get('n_pairs', 0)} pairs < 3)" if fit.get("n_pairs", 0) < 3 else \
            f"{label}: not fitted ({fit['error']})"
    if fit.get("degenerate"):
        return f"{label}: fit degenerate ({'; '.join(fit['degenerate'])})"
    return f"{label}: {fit['b']:.3g} - {fit['a']:.3g} r^-{fit['alpha']:.3g} (R²={fit['r2']:.2f})"


def scaling_figure(series: list[Any]) -> Figure:
    """Collaboration rate against the parameter ratio; each series has ``label``, ``r`` [N], ``y`` [N],
    ``fit`` (a ``fit_groups`` entry) and ``ci`` ([N, 2] 95 % intervals of the rates, NaN where unknown, or
    ``None``), drawn as error bars. A fit is drawn only over the data's ratios and the y-axis is the data's
    range; a degenerate fit is dotted and says so in the legend; an unfitted group shows points only. Series
    are told apart by colour and marker (10 colours x 5 markers)."""
    fig = Figure(figsize=(7, 4.2 + 0.18 * len(series)))
    ax = fig.add_subplot()
    for i, g in enumerate(series):
        color, marker = f"C{i % 10}", MARKERS[(i // 10) % len(MARKERS)]
        ci = getattr(g, "ci", None)
        if ci is not None and np.isfinite(ci).any():
            err = np.abs(np.asarray(ci, float).T - g.y)
            ax.errorbar(g.r, g.y, yerr=np.where(np.isfinite(err), err, 0), fmt="none", ecolor=color, elinewidth=0.8,
                        capsize=2, zorder=2)
        ax.scatter(g.r, g.y, color=color, marker=marker, zorder=3, s=18)
        fit = g.fit
        text = fit_legend(g.label, fit)
        if "error" in fit:
            ax.plot([], [], color=color, marker=marker, ls="none", label=text)
            continue
        grid = np.geomspace(float(np.min(g.r)), float(np.max(g.r)), 100)
        degenerate = bool(fit.get("degenerate"))
        ax.plot(grid, power_law(grid, fit["a"], fit["alpha"], fit["b"]), color=color, marker=marker, markevery=[0],
                ls=":" if degenerate else "-", lw=1.0 if degenerate else 1.6, alpha=0.6 if degenerate else 1.0,
                label=text)
    ax.set_ylim(*_data_ylim([g.y for g in series]))
    label_log_axis(ax, np.concatenate([np.asarray(g.r, float) for g in series]))
    ax.set_xlabel("parameter ratio r = N_large / N_small (log scale)")
    ax.set_ylabel("collaboration rate")
    ax.grid(alpha=0.3)
    # the legend below the axes: long group names and degeneracy notes would cover the points
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0, -0.16), ncol=1, frameon=False)
    return fig


MARKERS = ("o", "s", "^", "D", "v")


def law_panels_figure(panels: list[dict[str, Any]], rows: int, cols: int) -> Figure:
    """One panel per group, ``rows`` x ``cols``: its points (``r`` [N], ``y`` [N]), the power law and the
    log-ratio law over the points' ratios (dotted when degenerate) and the two-factor law's prediction at
    each point (``two`` [N], open squares; it depends on both sizes, not on r alone). Each panel dict has
    ``title``, ``r``, ``y``, ``power`` / ``log_ratio`` (parameter dicts or ``None``), ``power_degenerate``,
    ``two`` ([N] or ``None``) and ``note`` (one line under the title)."""
    fig = Figure(figsize=(4.2 * cols, 3.5 * rows))
    for i, p in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        r, y = np.asarray(p["r"], float), np.asarray(p["y"], float)
        grid = np.geomspace(r.min(), r.max(), 100)
        ax.scatter(r, y, color="k", s=14, zorder=3, label="published points")
        if p.get("power") is not None:
            q = p["power"]
            ax.plot(grid, power_law(grid, q["a"], q["alpha"], q["b"]), color="C0",
                    ls=":" if p.get("power_degenerate") else "-", label="b - a r^-alpha (dotted: degenerate)")
        if p.get("log_ratio") is not None:
            ax.plot(grid, log_ratio_law(grid, p["log_ratio"]["c"], p["log_ratio"]["d"]), color="C1", ls="--",
                    label="c + d ln r")
        if p.get("two") is not None:
            ax.scatter(r, p["two"], facecolors="none", edgecolors="C2", marker="s", s=22, zorder=2,
                       label="two-factor prediction")
        label_log_axis(ax, r)
        ax.set_title(p["title"] + ("\n" + p["note"] if p.get("note") else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("collaboration rate", fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel("r = N_large / N_small (log)", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
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


def auroc_figure(runs: list[str], signals: list[str], auroc: np.ndarray) -> Figure:
    """AUROC [R, S] of S signals in R runs: one row per run, one marker per signal, chance (0.5) dotted."""
    fig = Figure(figsize=(7, 0.3 * len(runs) + 1.6))
    ax = fig.add_subplot()
    y = np.arange(len(runs))
    for j, name in enumerate(signals):
        ax.scatter(auroc[:, j], y, color=f"C{j}", marker=MARKERS[j % len(MARKERS)], s=22, label=name, zorder=3)
    ax.axvline(0.5, ls=":", color="grey")
    ax.set_yticks(y, runs, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("AUROC: System-1 signal vs handoff (each run on its own tokens)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def tradeoff_runs_figure(runs: list[str], curves: list[list[TradeoffCurve]], target: float | None = None) -> Figure:
    """One panel per router signal (those of the first run), one line per run (``curves[i]``: run i's
    curves): share of handoffs caught against call rate, each run on its own tokens."""
    signals = [c.signal for c in curves[0]]
    fig = Figure(figsize=(3.6 * len(signals), 3.8))
    axes = fig.subplots(1, len(signals), squeeze=False)[0]
    for ax, sig in zip(axes, signals):
        for i, (run, cs) in enumerate(zip(runs, curves)):
            c = next((c for c in cs if c.signal == sig), None)
            if c is not None:
                ax.plot(c.call_rate, c.caught, drawstyle="steps-post", color=f"C{i % 10}", lw=1,
                        ls=("-", "--", ":", "-.")[(i // 10) % 4], label=run)
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        if target is not None:
            ax.axvline(target, ls="--", color="k", lw=0.8)
        ax.set_title(sig, fontsize=9)
        ax.set_xlabel("large-model call rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of handoffs caught")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def acceptance_figure(profiles: list, cost_ratio: float | None = None) -> Figure:
    """Greedy speculative decoding per draft length k: acceptance rate (left) and the wall-time speed-up
    bound ``mean_acceptance_length / (k·c + 1)`` (right), one line per (pair, task) ``AcceptanceProfile``.
    Lines differ by colour, marker and line style (10 colours x 5 markers x 3 styles: 150 series apart); the
    legend sits below the panels, never over the data."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, p in enumerate(profiles):
        label, style = f"{p.pair} ({p.task})", {"color": f"C{i % 10}", "marker": MARKERS[(i // 10) % len(MARKERS)],
                                                "ls": ("-", "--", ":")[(i // 50) % 3]}
        left.plot(p.k, p.acceptance_rate, label=label, **style)
        bound = p.speedup_bound(cost_ratio)
        if bound is not None:
            right.plot(p.k, bound, **style)
    right.axhline(1.0, ls=":", color="grey")
    c = "each pair's N_small/N_large" if cost_ratio is None else f"{cost_ratio:g}"
    for ax, ylabel in ((left, "acceptance rate"), (right, f"speed-up bound (cost ratio {c})")):
        ax.set_xlabel("draft length k")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ncol = 3 if len(profiles) > 6 else max(len(profiles), 1)
    fig.legend(*left.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               fontsize=7, frameon=False)
    fig.tight_layout()
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


def scatter3d_figure(groups: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
                     planes: tuple[float, ...] = (0.05, 0.10, 0.20)) -> Figure:
    """Per group (label, N_small [N], N_large [N], rate [N]): the rates over (log10 N_small, log10 N_large),
    one 3-D panel per group, with horizontal planes at the given rates (FS-GEN's 3d_scattar_plot_fig1.py / _fig2.py)."""
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig = Figure(figsize=(4.6 * cols, 4.2 * rows))
    for i, (label, ns, nl, y) in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        xs, ys = np.log10(ns), np.log10(nl)
        ax.scatter(xs, ys, y, c=y, cmap="viridis", depthshade=False, s=45, edgecolors="k", linewidths=0.4)
        gx, gy = np.meshgrid(np.linspace(xs.min(), xs.max(), 2), np.linspace(ys.min(), ys.max(), 2))
        for z, color in zip(planes, ("C2", "C1", "C3")):
            ax.plot_surface(gx, gy, np.full_like(gx, z), color=color, alpha=0.25, linewidth=0)
            ax.text(xs.max(), ys.min(), z, f"{z:.2f}", fontsize=6, color=color)
        ax.set_xlabel("log10 N_small", fontsize=7)
        ax.set_ylabel("log10 N_large", fontsize=7)
        ax.set_zlabel("collaboration rate", fontsize=7)
        ax.set_title(label, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.view_init(elev=20, azim=-130)
    return fig


def position_pair_figure(labels: list[str], rate: np.ndarray, share: np.ndarray) -> Figure:
    """Two heatmaps over the deciles of the generation, rows = labels [R]: P(handoff | decile) (rate
    [R, 10], the handoff rate within each tenth) and P(decile | handoff) (share [R, 10], where a row's
    handoffs fall; each row sums to 1, FS-GEN's mismatch_position_heatmap.py normalisation)."""
    fig = Figure(figsize=(12, 0.45 * len(labels) + 1.9))
    ticks = [f"{10 * k}-{10 * k + 10}%" for k in range(10)]
    for j, (vals, title, cbar) in enumerate(((rate, "P(handoff | decile): handoff rate", "handoff rate"),
                                             (share, "P(decile | handoff): share of the handoffs", "share"))):
        ax = fig.add_subplot(1, 2, j + 1)
        im = ax.imshow(np.ma.masked_invalid(np.atleast_2d(vals)), aspect="auto", cmap="viridis" if j == 0 else "Blues",
                       vmin=0)
        ax.set_yticks(range(len(labels)), labels if j == 0 else [""] * len(labels), fontsize=7)
        ax.set_xticks(range(10), ticks, fontsize=7, rotation=45)
        ax.set_xlabel("relative position in the generation")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    return fig


def topk_generation_figure(probs: np.ndarray, handoff: np.ndarray, token_ids: np.ndarray, title: str) -> Figure:
    """System 1's top-10 probabilities along one generation: probs [T, 10] as a heatmap (rank × position)
    with the top-1 probability as a line above it; handoff positions [T] marked in red (FS-GEN's mismatch_sample.py)."""
    t = len(probs)
    fig = Figure(figsize=(max(7.0, 0.16 * t + 2), 4.6))
    top, heat = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    x = np.arange(t)
    top.plot(x, probs[:, 0], color="C0", lw=1.2, label="top-1 probability")
    top.scatter(x[handoff], probs[handoff, 0], color="C3", zorder=3, s=22, label="handoff (System 2's token differs)")
    top.set_xlim(-0.5, t - 0.5)
    top.set_ylim(0, 1.02)
    top.set_ylabel("top-1 prob.")
    top.legend(fontsize=7, loc="lower left")
    top.set_title(title, fontsize=9)
    im = heat.imshow(probs[:, :10].T, aspect="auto", cmap="magma_r", vmin=0, vmax=1, interpolation="nearest")
    for pos in x[handoff]:
        heat.axvline(pos, color="C3", lw=0.8, alpha=0.8)
    heat.set_yticks(range(min(10, probs.shape[1])), [str(k + 1) for k in range(min(10, probs.shape[1]))], fontsize=6)
    heat.set_ylabel("rank")
    heat.set_xlabel("position in the generation (red: handoff)")
    fig.colorbar(im, ax=[top, heat], label="System 1 probability", shrink=0.6)
    return fig


def embedding_figure(embeddings: list[Any]) -> Figure:
    """Per embedding (``xy`` [M, 2], ``handoff`` [M], ``cluster`` [M] and its scores): points coloured by
    handoff vs agreement, and the k-means clusters beside them (FS-GEN's kde_scattar_1&5_tokens.py)."""
    fig = Figure(figsize=(10, 4.4 * len(embeddings)))
    for i, e in enumerate(embeddings):
        by_label, by_cluster = fig.add_subplot(len(embeddings), 2, 2 * i + 1), fig.add_subplot(len(embeddings), 2, 2 * i + 2)
        for flag, name, color in ((False, "agreement (match)", "C0"), (True, "handoff (mismatch)", "C3")):
            m = e.handoff == flag
            by_label.scatter(e.xy[m, 0], e.xy[m, 1], s=6, alpha=0.55, color=color, label=f"{name}, n={int(m.sum())}")
        by_label.legend(fontsize=7, markerscale=2)
        by_label.set_title(f"{e.name}: by handoff", fontsize=9)
        for c in (0, 1):
            m = e.cluster == c
            by_cluster.scatter(e.xy[m, 0], e.xy[m, 1], s=6, alpha=0.55, color=f"C{c + 4}", label=f"cluster {c + 1}")
        by_cluster.legend(fontsize=7, markerscale=2)
        by_cluster.set_title(f"k-means: silhouette {e.silhouette:.3f}, Davies–Bouldin {e.davies_bouldin:.3f}, "
                             f"ARI {e.ari:.3f}", fontsize=8)
        for ax in (by_label, by_cluster):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def frontier_figure(rows: list[dict[str, Any]]) -> Figure:
    """Accuracy (95 % interval bars) against ``llm_call_rate`` and against ``param_cost``, one series per
    router, with the straight line between System 1 alone and System 2 alone (``rows``:
    :meth:`fsgen_eval.analysis.frontier.Point.row` dicts; the end points are routers ``never`` and ``always``)."""
    fig = Figure(figsize=(11, 4.2))
    ends = {r["router"]: r for r in rows if r["router"] in ("never", "always")}
    for ax, x_key, x_label in zip(fig.subplots(1, 2), ("llm_call_rate", "param_cost"),
                                  ("large-model call rate (llm_call_rate)", "parameters activated per token")):
        if len(ends) == 2:
            a, b = ends["never"], ends["always"]
            ax.plot([a[x_key], b[x_key]], [a["accuracy"], b["accuracy"]], ls="--", color="grey",
                    label="System 1 alone - System 2 alone")
        for router in dict.fromkeys(r["router"] for r in rows):
            rs = sorted((r for r in rows if r["router"] == router), key=lambda r: r[x_key])
            x = np.array([r[x_key] for r in rs])
            y = np.array([r["accuracy"] for r in rs])
            err = np.abs(np.array([r["accuracy_ci"] for r in rs]).T - y)
            name = {"never": "System 1 alone", "always": "System 2 alone"}.get(router, router)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, ls="-" if len(rs) > 1 else "none", label=name)
        ax.set_xlabel(x_label)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    return fig
