"""Shared names of per-token trace fields and summaries, and the summary arithmetic.

Every layer (decoding, lm-eval adapter, analysis) uses these exact words; see ../shared/STYLE.md.
This module is numpy-only so the analysis layer can import it without torch.

A *trace* describes one generation (or one teacher-forced continuation) as parallel per-token arrays:

=================  =======  ===========================================================================
field              dtype    meaning
=================  =======  ===========================================================================
``token_id``       int64    the emitted (or teacher-forced) token
``source``         int8     1 = System 1 chose this token, 2 = System 2 did
``llm_called``     bool     System 2 was evaluated at this token
``handoff``        bool     System 2's token differs from System 1's greedy token (False where not called)
``s1_entropy``     float32  entropy (nats) of System 1's next-token distribution (temperature 1)
``s1_top1_prob``   float32  System 1's top-1 probability
``s1_margin``      float32  System 1's top-1 minus top-2 probability
``s2_entropy``     float32  the same for System 2's distribution; NaN where System 2 was not evaluated
``s2_top1_prob``   float32  ″
``s2_margin``      float32  ″
``accepted``       int8     speculative decoding: 1 = accepted draft, 0 = token that replaced a rejected
                            draft, -1 = not a draft position (bonus token, or another method)
=================  =======  ===========================================================================

Per-generation counters (speculative decoding only, 0 otherwise): ``drafted_tokens``,
``accepted_tokens``, ``verification_steps``.

In JSON (trace files) NaN and -1 become ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TOKEN_FIELDS: tuple[str, ...] = (
    "token_id",
    "source",
    "llm_called",
    "handoff",
    "s1_entropy",
    "s1_top1_prob",
    "s1_margin",
    "s2_entropy",
    "s2_top1_prob",
    "s2_margin",
    "accepted",
)
FIELD_DTYPES: dict[str, Any] = {
    "token_id": np.int64,
    "source": np.int8,
    "llm_called": np.bool_,
    "handoff": np.bool_,
    "s1_entropy": np.float32,
    "s1_top1_prob": np.float32,
    "s1_margin": np.float32,
    "s2_entropy": np.float32,
    "s2_top1_prob": np.float32,
    "s2_margin": np.float32,
    "accepted": np.int8,
}
COUNTERS: tuple[str, ...] = ("drafted_tokens", "accepted_tokens", "verification_steps")
SUMMARY_KEYS: tuple[str, ...] = (
    "generated_tokens",
    "collaboration_rate",
    "llm_call_rate",
    "acceptance_rate",
    "mean_acceptance_length",
)

Trace = dict[str, np.ndarray]


def empty_trace() -> Trace:
    """A trace of zero tokens with the right dtypes."""
    return {k: np.zeros(0, dtype=FIELD_DTYPES[k]) for k in TOKEN_FIELDS}


def trace_len(trace: Mapping[str, np.ndarray]) -> int:
    """T, the number of tokens in a trace."""
    return int(len(trace["token_id"]))


def slice_trace(trace: Mapping[str, np.ndarray], n: int) -> Trace:
    """The first ``n`` tokens of a trace (used when a stop string trims a generation)."""
    return {k: np.asarray(v)[:n] for k, v in trace.items()}


def summarize(
    traces: Iterable[Mapping[str, Any]],
    counters: Iterable[Mapping[str, int]] | None = None,
) -> dict[str, float | int | None]:
    """Pool per-token traces into the shared summary.

    Args:
        traces: per-generation mappings holding at least ``handoff`` and ``llm_called`` arrays (shape [T_i]).
        counters: per-generation speculative counters (``drafted_tokens``, ``accepted_tokens``,
            ``verification_steps``); omit or pass zeros for non-speculative methods.

    Returns:
        ``generated_tokens`` (sum of T_i); ``collaboration_rate`` = handoffs / tokens; ``llm_call_rate`` =
        tokens where System 2 was evaluated / tokens; ``acceptance_rate`` = accepted / drafted and
        ``mean_acceptance_length`` = 1 + accepted / verification steps (vLLM's definition), ``None`` where
        nothing was drafted. Rates are ``None`` when no token was generated.
    """
    n = handoffs = calls = 0
    for t in traces:
        h = np.asarray(t["handoff"], dtype=bool)
        n += int(h.size)
        handoffs += int(h.sum())
        calls += int(np.asarray(t["llm_called"], dtype=bool).sum())
    drafted = accepted = steps = 0
    for c in counters or ():
        drafted += int(c.get("drafted_tokens", 0))
        accepted += int(c.get("accepted_tokens", 0))
        steps += int(c.get("verification_steps", 0))
    return {
        "generated_tokens": n,
        "collaboration_rate": handoffs / n if n else None,
        "llm_call_rate": calls / n if n else None,
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_acceptance_length": 1.0 + accepted / steps if steps else None,
    }


def _json_value(field: str, v: Any) -> Any:
    if field == "accepted":
        return None if int(v) < 0 else bool(v)
    if field in ("llm_called", "handoff"):
        return bool(v)
    if field in ("token_id", "source"):
        return int(v)
    f = float(v)
    return None if math.isnan(f) else round(f, 6)


def trace_to_json(trace: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Per-token arrays → JSON-ready lists (NaN and -1 become ``None``)."""
    return {k: [_json_value(k, v) for v in np.asarray(trace[k]).tolist()] for k in TOKEN_FIELDS}


def trace_from_json(obj: Mapping[str, Any]) -> Trace:
    """Inverse of :func:`trace_to_json`; raises ``ValueError`` naming a missing or ragged field."""
    missing = [k for k in TOKEN_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"trace record lacks field(s) {', '.join(missing)}")
    n = len(obj["token_id"])
    out: Trace = {}
    for k in TOKEN_FIELDS:
        vals = obj[k]
        if len(vals) != n:
            raise ValueError(f"trace field {k!r} has {len(vals)} values, token_id has {n}")
        if k == "accepted":
            vals = [-1 if v is None else int(bool(v)) for v in vals]
        elif FIELD_DTYPES[k] is np.float32:
            vals = [math.nan if v is None else v for v in vals]
        out[k] = np.asarray(vals, dtype=FIELD_DTYPES[k])
    return out
