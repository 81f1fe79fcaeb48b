"""System 1's uncertainty against handoffs: AUROC, distributions, and handoff rate by position.

A *handoff* (System 2's token differs from System 1's greedy token) is defined only where System 2 was
evaluated (``llm_called``); everything here uses those tokens only. Each signal is oriented so that a higher
value means System 1 is less sure: ``s1_entropy``, ``1-s1_top1_prob`` and ``-s1_margin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fsgen_eval.core.traces_io import TraceTable, as_table

SIGNALS: dict[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]] = {
    "s1_entropy": lambda t: np.asarray(t["s1_entropy"], float),
    "1-s1_top1_prob": lambda t: 1.0 - np.asarray(t["s1_top1_prob"], float),
    "-s1_margin": lambda t: -np.asarray(t["s1_margin"], float),
}
# each signal as the router's view of it: (the System-1 trace field, "above"/"below": the side of the
# field's threshold where a higher signal lies, the field's threshold for the signal's threshold t)
FIELD_OF: dict[str, tuple[str, str, Callable[[float], float]]] = {
    "s1_entropy": ("s1_entropy", "above", lambda t: t),
    "1-s1_top1_prob": ("s1_top1_prob", "below", lambda t: 1.0 - t),
    "-s1_margin": ("s1_margin", "below", lambda t: -t),
}
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def auroc(scores: np.ndarray, labels: np.ndarray, block: int = 1 << 20) -> float:
    """Area under the ROC curve of ``scores`` [N] for boolean ``labels`` [N]: the probability that a random
    positive scores above a random negative, ties counting one half (the Mann-Whitney U statistic divided
    by n_pos * n_neg). NaN when either class is empty.

    U is counted from the negatives' sorted scores, ``block`` positives at a time (negatives below each
    positive, and half those equal to it): one sorted copy of the scores and [block] counts, where ranking
    all N scores held four [N] arrays (10 M tokens: ~300 MB)."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg = np.sort(np.asarray(scores)[~labels])
    pos = np.sort(np.asarray(scores)[labels])  # sorted needles: the binary searches walk memory in order
    u = 0.0
    for a in range(0, n_pos, block):
        p = pos[a:a + block]
        below, upto = np.searchsorted(neg, p, side="left"), np.searchsorted(neg, p, side="right")
        u += float(below.sum()) + 0.5 * float((upto - below).sum())
    return float(u / (n_pos * n_neg))


@dataclass
class CalledTokens:
    """Tokens pooled over records where System 2 was evaluated (all arrays [M]).

    ``scores``: signal name -> [M] values (NaN where the trace had none; each computed when read); ``handoff``: [M] bool;
    ``position``: [M] index in its generation; ``rel_decile``: [M] in 0..9, position / length of its
    generation; ``n_tokens``: all tokens, called or not.
    """

    scores: Mapping[str, np.ndarray]
    handoff: np.ndarray
    position: np.ndarray
    rel_decile: np.ndarray
    n_tokens: int

    @property
    def n_called(self) -> int:
        """M, the number of tokens where System 2 was evaluated."""
        return int(len(self.handoff))


def called_tokens(traces: TraceTable | list[Mapping[str, np.ndarray]]) -> CalledTokens:
    """Pool the tokens of per-generation traces (a table, or each field [T_i]) where ``llm_called`` is true."""
    t = as_table(traces)
    called = t.tokens["llm_called"].astype(bool) if t.n_tokens else np.zeros(0, bool)
    # positions as int32 and deciles as int8: at 10 M tokens, int64 copies alone would take 160 MB more
    pos = t.position().astype(np.int32)[called]
    decile = np.minimum(pos * 10 // np.maximum(np.repeat(t.lengths.astype(np.int32), t.lengths)[called], 1),
                        9).astype(np.int8)
    scores = _LazyScores(t.tokens, called)
    handoff = t.tokens["handoff"][called].astype(bool) if t.n_tokens else np.zeros(0, bool)
    return CalledTokens(scores, handoff, pos, decile, t.n_tokens)


class _LazyScores(Mapping[str, np.ndarray]):
    """Signal name -> [M] values at the called tokens, computed when asked for: the analysis takes one signal
    at a time, and three float64 copies held at once cost 240 MB at 10 M tokens."""

    def __init__(self, tokens: Mapping[str, np.ndarray], called: np.ndarray):
        self._tokens, self._called = tokens, called

    def __getitem__(self, name: str) -> np.ndarray:
        if not len(self._called):
            return np.zeros(0)
        values = SIGNALS[name](self._tokens)
        return values if self._called.all() else values[self._called]

    def __iter__(self):
        return iter(SIGNALS)

    def __len__(self) -> int:
        return len(SIGNALS)


@dataclass
class SignalSummary:
    """One signal at handoffs vs agreements: AUROC, quantiles (at :data:`QUANTILES`) and a histogram over
    shared ``bin_edges`` [B+1] (``hist_handoff``, ``hist_agree``: [B] counts)."""

    name: str
    auroc: float
    n_handoff: int
    n_agree: int
    quantiles_handoff: list[float]
    quantiles_agree: list[float]
    bin_edges: np.ndarray
    hist_handoff: np.ndarray
    hist_agree: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: AUROC, counts, quantiles and histograms (lists)."""
        return {"signal": self.name, "auroc": self.auroc, "n_handoff": self.n_handoff, "n_agree": self.n_agree,
                "quantiles": list(QUANTILES), "quantiles_handoff": self.quantiles_handoff,
                "quantiles_agree": self.quantiles_agree, "bin_edges": self.bin_edges.tolist(),
                "hist_handoff": self.hist_handoff.tolist(), "hist_agree": self.hist_agree.tolist()}


def summarize_signal(name: str, scores: np.ndarray, handoff: np.ndarray, bins: int = 20) -> SignalSummary:
    """AUROC and distributions of one signal's [M] scores split by [M] handoff (NaN scores dropped)."""
    ok = np.isfinite(scores)
    s, h = (scores, handoff) if ok.all() else (scores[ok], handoff[ok])
    edges = np.histogram_bin_edges(s if len(s) else np.zeros(1), bins=bins)
    q = lambda x: [float(v) for v in np.quantile(x, QUANTILES)] if len(x) else [float("nan")] * len(QUANTILES)  # noqa: E731
    return SignalSummary(name, auroc(s, h), int(h.sum()), int((~h).sum()), q(s[h]), q(s[~h]), edges,
                         np.histogram(s[h], edges)[0], np.histogram(s[~h], edges)[0])


def summarize_signals(tokens: CalledTokens, bins: int = 20) -> list[SignalSummary]:
    """One :class:`SignalSummary` per signal of :data:`SIGNALS` over the called tokens (``bins`` histogram bins)."""
    return [summarize_signal(n, tokens.scores[n], tokens.handoff, bins) for n in SIGNALS]


def rate_by(index: np.ndarray, handoff: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Handoff rate and token count per bin: index [M] in 0..n_bins-1 (larger values go to the last bin),
    handoff [M] -> (rate [n_bins] with NaN for empty bins, count [n_bins])."""
    idx = np.minimum(np.asarray(index, int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    hits = np.bincount(idx, weights=np.asarray(handoff, float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan), count


def rate_by_decile(tokens: CalledTokens) -> tuple[np.ndarray, np.ndarray]:
    """Handoff rate [10] and count [10] by relative position in the generation (deciles)."""
    return rate_by(tokens.rel_decile, tokens.handoff, 10)


def rate_by_position(tokens: CalledTokens, max_position: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Handoff rate and count by absolute position 0..max_position-1; the last bin pools later tokens."""
    return rate_by(tokens.position, tokens.handoff, max_position)
