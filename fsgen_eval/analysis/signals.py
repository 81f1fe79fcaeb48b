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
    if not labels.any() or labels.all():
        return float("nan")
    return auroc_sorted(np.sort(np.asarray(scores)[labels]), np.sort(np.asarray(scores)[~labels]), block)


def auroc_sorted(pos: np.ndarray, neg: np.ndarray, block: int = 1 << 20) -> float:
    """:func:`auroc` from the positives' [P] and the negatives' [Q] scores, each sorted ascending (sorted
    needles: the binary searches walk memory in order)."""
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
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
    every = bool(called.all())  # router=always: the token arrays themselves, no [N] copies
    pos, length = _positions(t)
    if not every:
        pos, length = pos[called], length[called]
    decile = np.empty(len(pos), np.int8)
    for a in range(0, len(pos), 1 << 16):  # in int64 a block at a time: position * 10 may pass int32
        p, n = pos[a:a + (1 << 16)].astype(np.int64), length[a:a + (1 << 16)]
        decile[a:a + len(p)] = np.minimum(p * 10 // np.maximum(n, 1), 9)
    del length
    scores = _LazyScores(t.tokens, called)
    handoff = t.tokens["handoff"].astype(bool, copy=False) if t.n_tokens else np.zeros(0, bool)
    return CalledTokens(scores, handoff if every else handoff[called], pos, decile, t.n_tokens)


def _positions(t: TraceTable) -> tuple[np.ndarray, np.ndarray]:
    """([N] each token's index in its generation, [N] its generation's length), int32 where N allows it: at
    10 M tokens int64 copies would take 160 MB more."""
    kind = np.int32 if t.n_tokens < 2**31 else np.int64
    lengths = t.lengths.astype(kind)
    pos = np.arange(t.n_tokens, dtype=kind)
    pos -= np.repeat(t.offsets[:-1].astype(kind), lengths)
    return pos, np.repeat(lengths, lengths)


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
    """AUROC and distributions of one signal's [M] scores split by [M] handoff (NaN scores dropped).

    The two classes are copied and sorted once each; AUROC, histograms and quantiles all read those two
    arrays (the quantiles last: they partition their input in place), so the working memory is one copy of
    the scores, where sorting, histogramming and taking quantiles of each class made four."""
    ok = np.isfinite(scores)
    s, h = (scores, handoff) if ok.all() else (scores[ok], handoff[ok])
    del ok
    edges = np.histogram_bin_edges(s if len(s) else np.zeros(1), bins=bins)
    pos, neg = s[h], s[~h]
    pos.sort()
    neg.sort()

    def q(x: np.ndarray) -> list[float]:
        if not len(x):
            return [float("nan")] * len(QUANTILES)
        return [float(v) for v in np.quantile(x, QUANTILES, overwrite_input=True)]

    area = auroc_sorted(pos, neg)
    hist_pos, hist_neg = np.histogram(pos, edges)[0], np.histogram(neg, edges)[0]
    return SignalSummary(name, area, len(pos), len(neg), q(pos), q(neg), edges, hist_pos, hist_neg)


def summarize_signals(tokens: CalledTokens, bins: int = 20) -> list[SignalSummary]:
    """One :class:`SignalSummary` per signal of :data:`SIGNALS` over the called tokens (``bins`` histogram bins)."""
    return [summarize_signal(n, tokens.scores[n], tokens.handoff, bins) for n in SIGNALS]


def rate_by(index: np.ndarray, handoff: np.ndarray, n_bins: int, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Handoff rate and token count per bin: index [M] in 0..n_bins-1 (larger values go to the last bin),
    handoff [M] -> (rate [n_bins] with NaN for empty bins, count [n_bins]). Counted ``block`` tokens at a time:
    bincount wants int64 indices and float weights, [M] copies of each (160 MB at 10 M tokens)."""
    count = np.zeros(n_bins, np.int64)
    hits = np.zeros(n_bins, np.int64)
    for a in range(0, len(index), block):
        idx = np.minimum(np.asarray(index[a:a + block], np.int64), n_bins - 1)
        count += np.bincount(idx, minlength=n_bins)
        hits += np.bincount(idx[np.asarray(handoff[a:a + block], bool)], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hits / np.maximum(count, 1), np.nan), count


def rate_by_decile(tokens: CalledTokens) -> tuple[np.ndarray, np.ndarray]:
    """Handoff rate [10] and count [10] by relative position in the generation (deciles)."""
    return rate_by(tokens.rel_decile, tokens.handoff, 10)


def rate_by_position(tokens: CalledTokens, max_position: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Handoff rate and count by absolute position 0..max_position-1; the last bin pools later tokens."""
    return rate_by(tokens.position, tokens.handoff, max_position)
