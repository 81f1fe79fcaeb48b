"""Speculative decoding's metrics as the engines report them, from each verification round's accepted count.

A round drafts ``d <= k`` tokens, the large model accepts the ``n`` leading ones (``0 <= n <= d``) and adds
one of its own. Besides the pooled ``acceptance_rate`` (accepted / drafted) and ``mean_acceptance_length``
(1 + accepted / rounds):

- ``per_position_acceptance_rate[i - 1]`` = rounds whose ``i``-th draft token was accepted (``n >= i``) /
  rounds, ``i = 1..k`` — vLLM's per-position rate (``num_accepted_tokens_per_pos / num_drafts``), the curve
  EAGLE and llama.cpp report. It falls with ``i``, and ``sum_i rate_i = mean_acceptance_length - 1``.
- ``accepted_length_histogram[n]`` = rounds that accepted exactly ``n`` drafts, ``n = 0..k``.
- per request (macro) averages beside the per-token (pooled) ones: ``macro_acceptance_rate`` = the mean over
  requests of accepted / drafted (requests that drafted nothing left out), ``macro_mean_acceptance_length`` =
  the mean over requests of 1 + accepted / rounds — what vLLM's per-request spec-decode metrics average.
- ``request_acceptance_histogram``: requests per bin of their own acceptance rate (``ACCEPTANCE_BINS``
  edges, the last bin closed at 1).

Pure functions of lists of integers (no torch): the replay computes them from its replayed rounds, the
analysis from a lockstep speculative run's traces (:func:`rounds_from_accepted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ACCEPTANCE_BINS: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 11), 1).tolist())


def rounds_from_accepted(accepted: Sequence[int]) -> list[int]:
    """Each round's accepted count from a trace's ``accepted`` field ``[T]`` of a speculative run whose every
    round is verified (router ``always``): accepted drafts are 1, and each round ends with the large model's
    token (0 after a rejected draft, -1 after a fully accepted one). A trailing run of 1s — a round whose
    last tokens the stop-string trim removed — counts as a round with those accepted drafts."""
    rounds, n = [], 0
    for a in accepted:
        if a == 1:
            n += 1
        else:
            rounds.append(n)
            n = 0
    if n:
        rounds.append(n)
    return rounds


def round_metrics(rounds: Sequence[Sequence[int]], drafted: Sequence[int] | None = None,
                  k: int | None = None) -> dict[str, Any]:
    """The metrics above from ``rounds[r]`` = request ``r``'s accepted count per round, and ``drafted[r]`` =
    its drafted tokens (for the per-request acceptance rate; without it, the macro acceptance rate and the
    request histogram are ``None``). ``k``: the draft length (default: the longest accepted run)."""
    flat = np.asarray([n for rs in rounds for n in rs], dtype=np.int64)
    if k is None:
        k = int(flat.max()) if flat.size else 0
    if flat.size and int(flat.max()) > k:
        raise ValueError(f"a round accepted {int(flat.max())} drafts, more than the draft length {k}")
    steps = flat.size
    hist = np.bincount(flat, minlength=k + 1)[: k + 1] if steps else np.zeros(k + 1, np.int64)
    # rounds with n >= i, i = 1..k: the reversed cumulative sum of the histogram
    at_least = hist[::-1].cumsum()[::-1][1:]
    out: dict[str, Any] = {
        "per_position_acceptance_rate": (at_least / steps).tolist() if steps else None,
        "accepted_length_histogram": hist.tolist(),
        "requests": len(rounds),
    }
    lengths = [1.0 + sum(rs) / len(rs) for rs in rounds if len(rs)]
    out["macro_mean_acceptance_length"] = float(np.mean(lengths)) if lengths else None
    if drafted is None:
        out["macro_acceptance_rate"] = out["request_acceptance_histogram"] = None
        return out
    rates = np.asarray([sum(rs) / d for rs, d in zip(rounds, drafted, strict=True) if d > 0], dtype=float)
    out["macro_acceptance_rate"] = float(rates.mean()) if rates.size else None
    out["request_acceptance_histogram"] = {"bin_edges": list(ACCEPTANCE_BINS),
                                           "counts": np.histogram(rates, bins=ACCEPTANCE_BINS)[0].tolist()}
    return out
