"""Files that disagree with each other: refused in one line instead of read into a silently wrong result.

Every reader of results folders (``fit``, ``report``, ``check``, ``analyze``) calls these:

- :func:`refuse_duplicate_runs`: two results files of one configuration (a rerun into the same
  ``--output_path``, a replay ``-o`` used twice). ``check`` would compare only one of them and ``fit`` would
  count both as points; which one is meant is the user's call, so both files are named.
- :func:`refuse_duplicate_records`: one request's record twice in a trace file (a line copied, a file
  concatenated to itself) would double its tokens in every rate.
- :func:`check_summary`: a run's rates in ``config["fsgen"]`` (what the leaderboard and the gate show) against
  the rates of the traces it names (where their intervals come from).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.core.schema import COUNTERS, TOKEN_FIELDS, summarize

# the identity of a run's configuration for one task: the pair and Run.settings (method, router, threshold,
# dtype, num_fewshot, batch size in half precision); two runs alike in all of these are one point twice
SUMMARY_CHECKED = ("generated_tokens", "collaboration_rate", "llm_call_rate")
_RATE_TOL = 1e-9  # both sides are computed from the same integers; only float rounding may differ


def refuse_duplicate_runs(runs: Iterable[Any]) -> None:
    """``ValueError`` naming both results files of the first (pair, settings, task) held by two runs."""
    seen: dict[tuple, Path] = {}
    for run in runs:
        for task in run.results:
            settings = run.settings(task)
            key = (run.fsgen.small, run.fsgen.large, run.fsgen.small_base, tuple(sorted(settings.items())),
                   tuple(sorted((run.fsgen.params or {}).items(), key=str)),
                   tuple(sorted((run.fsgen.router_params or {}).items(), key=str)))
            first = seen.setdefault(key, run.path)
            if first != run.path:
                raise ValueError(f"{run.path}: the same configuration as {first} ({run.pair} | {run.label} | "
                                 f"{task}): two runs of one configuration would be counted twice or compared "
                                 "once; move one of them out of the folder")


def record_key(rec: Mapping[str, Any]) -> tuple:
    """What makes two trace records copies of one: run, rank, task, document, prompt, type and every per-token
    field (so hand-made records of one document that differ anywhere stay apart)."""
    meta = tuple(_hashable(rec.get(k)) for k in ("run_id", "rank", "task", "doc_id", "prompt_hash", "request_type"))
    return meta + tuple(_hashable(v) for v in (rec.get(k) for k in TOKEN_FIELDS))


def _hashable(v: Any) -> Any:
    if isinstance(v, np.ndarray):  # a trace table's token field: its exact bytes (repr would elide long arrays)
        return (v.dtype.str, v.tobytes())
    if isinstance(v, list):
        return tuple(map(_hashable, v))
    return v if isinstance(v, (str, int, float, type(None))) else repr(v)


def refuse_duplicate_records(where: Path | str, records: list[Mapping[str, Any]]) -> None:
    """``ValueError`` naming the first record that repeats an earlier one (:func:`record_key`)."""
    seen: dict[tuple, int] = {}
    for i, rec in enumerate(records, start=1):
        first = seen.setdefault(record_key(rec), i)
        if first != i:
            raise ValueError(f"{where}: trace record {i} duplicates record {first} (same run_id, rank, task "
                             f"{rec.get('task')!r}, doc_id {rec.get('doc_id')!r}, prompt and every token field): it would be "
                             "counted twice; remove the copy")


def check_summary(run: Any, records: list[Mapping[str, Any]]) -> None:
    """``ValueError`` where ``config["fsgen"]``'s per-task ``generated_tokens``, ``collaboration_rate`` or
    ``llm_call_rate`` differs from the same numbers computed from the run's trace records (``records``: those of
    :func:`~fsgen_eval.analysis.files.run_records`, each with ``trace``). Runs without traces (``trace=false``)
    or with a trace file missing (already reported) are not checked."""
    if not records or run.missing_traces:
        return
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        by_task.setdefault(str(rec.get("task") or "unknown"), []).append(rec)
    for task in run.results:
        mine = by_task.get(task, [])
        from_traces = summarize([r["trace"] for r in mine], [{k: r.get(k, 0) for k in COUNTERS} for r in mine])
        stated = run.fsgen.per_task.get(task) if run.fsgen.per_task else None
        if stated is None and len(run.results) == 1:
            stated = run.fsgen.summary
        if not stated:
            continue
        for key in SUMMARY_CHECKED:
            if key in stated and not _same(stated[key], from_traces[key]):
                raise ValueError(f"{run.path}: config['fsgen'] says {task} {key} {stated[key]} but its traces "
                                 f"give {from_traces[key]} ({from_traces['generated_tokens']} tokens in "
                                 f"{len(mine)} records): the summary and the traces disagree")


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        return False
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=_RATE_TOL)
