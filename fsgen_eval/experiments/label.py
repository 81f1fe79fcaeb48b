"""Outcome labels of handoffs: does System 1's token, where System 2 overruled it, change the task's outcome?

At a handoff at position ``i`` of System 2's greedy generation ``g`` (an oracle/``always`` run, or a replayed
one): keep the prompt and ``g[:i]``, emit System 1's token instead of ``g[i]``, let System 2 continue greedily
to the task's own end (stop strings, EOS, the rest of ``max_gen_toks``) and score the text with the task's
scorer. **necessary** where the outcome differs from System 2's own (direction ``correct->wrong``,
``wrong->correct`` or ``wrong->other wrong``: both wrong, another answer), **neutral** otherwise.

Continuations run in batches (:func:`fsgen_eval.engine.continuation.continue_greedy`). Labels are appended to a
side file keyed by ``(run_id, doc_id, position)``, one flushed batch at a time; a rerun skips the keys already
there (a killed run resumes without duplicates; a torn last line is dropped by :func:`read_labels`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Scorer = Callable[[int, str], tuple[float, str]]  # (doc_id, generated text) -> (metric value, filtered answer)


@dataclass(frozen=True)
class Handoff:
    run_id: str
    doc_id: int
    position: int  # tokens generated before it
    s1_token: int
    s2_token: int
    length: int  # System 2's generation length (tokens)


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """The text before the first stop string (as the engine trims a generation)."""
    cuts = [text.find(s) for s in (stop or ()) if s and s in text]
    return text[:min(cuts)] if cuts else text


def sample_handoffs(handoffs: Sequence[Handoff], n: int | None, seed: int, strata: int = 10) -> list[Handoff]:
    """All handoffs (``n`` None), or a seeded sample of ``n`` stratified by relative position: stratum
    ``floor(strata * position / length)``; each stratum gets ``n`` times its share of the handoffs (largest
    remainders round), drawn without replacement with ``numpy.random.default_rng(seed)``; returned in
    (doc_id, position) order, so the sample does not depend on the input's order."""
    hs = sorted(handoffs, key=lambda h: (h.doc_id, h.position))
    if n is None or n >= len(hs):
        return hs
    if n < 0:
        raise ValueError(f"--sample must be >= 0, got {n}")
    stratum = np.array([min(strata - 1, strata * h.position // max(h.length, 1)) for h in hs])
    counts = np.bincount(stratum, minlength=strata)
    quota = n * counts / len(hs)
    take = np.floor(quota).astype(int)
    rest = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    chosen = [i for s in range(strata) for i in rng.choice(np.flatnonzero(stratum == s), take[s], replace=False)]
    return [hs[i] for i in sorted(chosen)]


def outcome(own: tuple[float, str], new: tuple[float, str]) -> tuple[str, str | None]:
    """(label, direction) comparing System 2's own (score, answer) with the swapped one's."""
    (s_own, a_own), (s_new, a_new) = own, new
    if s_own > 0 and s_new <= 0:
        return "necessary", "correct->wrong"
    if s_own <= 0 and s_new > 0:
        return "necessary", "wrong->correct"
    if s_own <= 0 and s_new <= 0 and a_own != a_new:
        return "necessary", "wrong->other wrong"
    return "neutral", None


def read_labels(path: Path) -> list[dict[str, Any]]:
    """The label side file's records (a torn last line — a writer killed mid-line — is dropped)."""
    from fsgen_eval.core.jsonl import read_jsonl

    return [obj for _, obj in read_jsonl(path)] if path.exists() else []


def drop_torn_tail(path: Path) -> None:
    """Cut a torn last line (no newline after it: its writer was killed) before appending after it."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def label_handoffs(model: Any, tokenizer: Any, handoffs: Sequence[Handoff], prompts: dict[int, list[int]],
                   generations: dict[int, list[int]], max_gen_toks: int, stop: Sequence[str] | None, score: Scorer,
                   out: Path, batch_size: int = 8, extra: Callable[[Handoff], dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """Label every handoff not yet in ``out`` (appending, one flushed batch at a time); returns the cost:
    handoffs labelled, System 2 tokens decoded, seconds."""
    import time

    from fsgen_eval.engine.continuation import continue_greedy

    have = {(r["run_id"], r["doc_id"], r["position"]) for r in read_labels(out)}
    drop_torn_tail(out)
    todo = [h for h in handoffs if (h.run_id, h.doc_id, h.position) not in have]
    own = {d: score(d, cut_at_stop(tokenizer.decode(g), stop)) for d, g in generations.items()}
    decoded, t0 = 0, time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            heads = [generations[h.doc_id][:h.position] + [h.s1_token] for h in batch]
            conts = continue_greedy(model, tokenizer, [prompts[h.doc_id] + hd for h, hd in zip(batch, heads)],
                                    [max_gen_toks - h.position - 1 for h in batch], stop, batch_size)
            for h, hd, (toks, _) in zip(batch, heads, conts):
                decoded += len(toks)
                new = score(h.doc_id, cut_at_stop(tokenizer.decode(hd + toks), stop))
                label, direction = outcome(own[h.doc_id], new)
                rec = {"run_id": h.run_id, "doc_id": h.doc_id, "position": h.position, "s1_token": h.s1_token,
                       "s2_token": h.s2_token, "label": label, "direction": direction, "own_score": own[h.doc_id][0],
                       "new_score": new[0], "new_answer": new[1], "s2_tokens_decoded": len(toks),
                       **(extra(h) if extra else {})}
                fh.write(json.dumps(rec) + "\n")
            fh.flush()
    return {"labelled": len(todo), "already": len(handoffs) - len(todo), "s2_tokens_decoded": decoded,
            "seconds": time.perf_counter() - t0}
