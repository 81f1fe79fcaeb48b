"""Outcome labels of handoffs: does System 1's token, where System 2 overruled it, change the task's outcome?

At a handoff at position ``i`` of System 2's greedy generation ``g`` (an oracle/``always`` run, or a replayed
one): keep the prompt and ``g[:i]``, emit System 1's token instead of ``g[i]``, let System 2 continue greedily
to the task's own end (stop strings, EOS, the rest of ``max_gen_toks``) and score the text with the task's
scorer. **necessary** where the outcome differs from System 2's own (direction ``correct->wrong``,
``wrong->correct`` or ``wrong->other wrong``: both wrong, another answer), **neutral** otherwise.

Continuations run in batches (:func:`fsgen_eval.engine.continuation.iter_continuations`), the handoffs of one
request sharing its prompt's cache (fed once, forked per handoff). Labels are appended to a
side file keyed by ``(run_id, task, doc_id, position)``, one flushed batch at a time; a rerun skips the keys already
there (a killed run resumes without duplicates; a torn last line is dropped by :func:`read_labels`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Scorer = Callable[[tuple[str, int], str], tuple[float, str]]  # ((task, doc_id), text) -> (metric value, filtered answer)


@dataclass(frozen=True)
class Handoff:
    run_id: str
    doc_id: int
    position: int  # tokens generated before it
    s1_token: int
    s2_token: int
    length: int  # System 2's generation length (tokens)
    task: str = ""  # lm-eval task (doc ids repeat across the tasks of a group)

    @property
    def key(self) -> tuple[str, str, int, int]:
        """The side file's key: (run_id, task, doc_id, position)."""
        return (self.run_id, self.task, self.doc_id, self.position)


def record_key(rec: dict[str, Any]) -> tuple[str, str, int, int]:
    """A label record's key (records written before tasks were keyed have task "")."""
    return (rec["run_id"], rec.get("task", ""), rec["doc_id"], rec["position"])


def stratum(position: int, length: int, strata: int = 10) -> int:
    """A handoff's position stratum: ``floor(strata * position / length)`` (the last one holds the end)."""
    return min(strata - 1, strata * position // max(length, 1))


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """The text before the first stop string (as the engine trims a generation)."""
    cuts = [text.find(s) for s in (stop or ()) if s and s in text]
    return text[:min(cuts)] if cuts else text


def sample_handoffs(handoffs: Sequence[Handoff], n: int | None, seed: int, strata: int = 10) -> list[Handoff]:
    """All handoffs (``n`` None), or a seeded sample of ``n`` stratified by relative position: stratum
    ``floor(strata * position / length)``; each stratum gets ``n`` times its share of the handoffs (largest
    remainders round), drawn without replacement with ``numpy.random.default_rng(seed)``; returned in
    (task, doc_id, position) order, so the sample does not depend on the input's order."""
    hs = sorted(handoffs, key=lambda h: (h.task, h.doc_id, h.position))
    if n is None or n >= len(hs):
        return hs
    if n < 0:
        raise ValueError(f"--sample must be >= 0, got {n}")
    where = np.array([stratum(h.position, h.length, strata) for h in hs])
    counts = np.bincount(where, minlength=strata)
    quota = n * counts / len(hs)
    take = np.floor(quota).astype(int)
    rest = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    chosen = [i for s in range(strata) for i in rng.choice(np.flatnonzero(where == s), take[s], replace=False)]
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


@dataclass(frozen=True)
class Doc:
    """One request of the labelled run: its prompt ``[P]``, System 2's generation ``[G]`` (as the trace holds
    it), and the task's finishing rule."""

    prompt: list[int]
    generation: list[int]
    max_gen_toks: int
    stop: tuple[str, ...]


DocKey = tuple[str, int]  # (task, doc_id)


def label_handoffs(model: Any, tokenizer: Any, handoffs: Sequence[Handoff], docs: dict[DocKey, Doc],
                   score: Scorer, out: Path, batch_size: int = 8,
                   extra: Callable[[Handoff], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Label every handoff not yet in ``out`` (appending, one flushed batch at a time); returns the cost:
    handoffs labelled, System 2 tokens decoded, seconds. ``score((task, doc_id), text)`` is the task's
    filter and metric; ``docs`` holds every handoff's request."""
    import time

    from fsgen_eval.engine.continuation import iter_continuations

    have = {record_key(r) for r in read_labels(out)}
    drop_torn_tail(out)
    todo = [h for h in handoffs if h.key not in have]
    need = {(h.task, h.doc_id) for h in todo}
    own = {k: score(k, cut_at_stop(tokenizer.decode(docs[k].generation), docs[k].stop)) for k in sorted(need)}
    decoded, t0 = 0, time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    # rows of one stop rule together (a batch decodes under one rule); (task, doc, position) order within
    todo.sort(key=lambda h: (docs[(h.task, h.doc_id)].stop, h.task, h.doc_id, h.position))
    groups: dict[tuple[str, ...], list[Handoff]] = {}
    for h in todo:
        groups.setdefault(docs[(h.task, h.doc_id)].stop, []).append(h)
    with out.open("a") as fh:
        for stop, hs in groups.items():
            ds = [docs[(h.task, h.doc_id)] for h in hs]
            heads = [d.generation[:h.position] + [h.s1_token] for h, d in zip(hs, ds)]
            budgets = [0 if h.s1_token == tokenizer.eos_token_id else d.max_gen_toks - h.position - 1  # EOS ends it
                       for h, d in zip(hs, ds)]
            # the handoffs of one request share its prompt's cache: fed once, forked per handoff
            for rows, conts in iter_continuations(model, tokenizer, [d.prompt + hd for d, hd in zip(ds, heads)],
                                                  budgets, list(stop), batch_size,
                                                  requests=[(h.task, h.doc_id) for h in hs]):
                for j, (toks, _) in zip(rows, conts):
                    h, k = hs[j], (hs[j].task, hs[j].doc_id)
                    decoded += len(toks)
                    new = score(k, cut_at_stop(tokenizer.decode(heads[j] + toks), docs[k].stop))
                    label, direction = outcome(own[k], new)
                    rec = {"run_id": h.run_id, "task": h.task, "doc_id": h.doc_id, "position": h.position,
                           "length": h.length, "s1_token": h.s1_token, "s2_token": h.s2_token, "label": label,
                           "direction": direction, "own_score": own[k][0], "own_answer": own[k][1],
                           "new_score": new[0], "new_answer": new[1], "s2_tokens_decoded": len(toks),
                           **(extra(h) if extra else {})}
                    fh.write(json.dumps(rec) + "\n")
                fh.flush()  # one decoded batch at a time: a killed run keeps every finished batch
    return {"labelled": len(todo), "already": len(handoffs) - len(todo), "s2_tokens_decoded": decoded,
            "seconds": time.perf_counter() - t0}
