"""Where handoffs happen, from the per-token traces: the numbers ``fsgen-eval analyze`` prints.

AUROC and quantiles of each uncertainty signal against handoffs, the handoff rate by signal decile and by
position, and the router what-if (threshold routers, plus any learned router's curve), as one plain dict
(the CLI formats it).
"""

from __future__ import annotations

from typing import Any

from fsgen_eval.analysis import signals, whatif


def analyze(traces: Any, target: float | None, max_position: int, bins: int,
            extra_curves: list | None = None) -> dict[str, Any]:
    """Uncertainty vs handoffs over per-generation ``traces`` (a ``TraceTable``, or fields ``[T_i]``): AUROC and quantiles per signal,
    handoff rate by decile and by position (up to ``max_position``), and the router what-if (at ``target``
    call rate if given; skipped with a reason unless every token was called); ``extra_curves``: more what-if
    curves (learned routers) beside the threshold routers'."""
    tok = signals.called_tokens(traces)
    if tok.n_called == 0:
        raise ValueError(f"none of the {tok.n_tokens} traced tokens has llm_called true: no handoff is defined")
    dec_rate, dec_n = signals.rate_by_decile(tok)
    pos_rate, pos_n = signals.rate_by_position(tok, max_position)
    out: dict[str, Any] = {
        "n_tokens": tok.n_tokens, "n_called": tok.n_called, "n_handoffs": int(tok.handoff.sum()),
        "note": f"handoff is defined only where System 2 was evaluated (llm_called): {tok.n_called} of "
                f"{tok.n_tokens} tokens are used",
        "signals": [s.to_dict() for s in signals.summarize_signals(tok, bins)],
        "by_decile": {"rate": dec_rate, "count": dec_n}, "by_position": {"rate": pos_rate, "count": pos_n}}
    try:
        curves = whatif.tradeoff_curves(traces) + list(extra_curves or [])
    except ValueError as err:
        if target is not None:
            raise
        out["whatif"] = {"skipped": str(err)}
        return out
    out["whatif"] = {"curves": [{"signal": c.signal, "threshold": c.thresholds, "call_rate": c.call_rate,
                                 "caught": c.caught} for c in curves]}
    if target is not None:
        out["whatif"]["at_target"] = [c.at_target(target) for c in curves]
    return out
