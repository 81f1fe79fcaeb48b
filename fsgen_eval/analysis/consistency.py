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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.core.schema import COUNTERS, summarize
from fsgen_eval.core.traces_io import TraceTable, object_column, record_blocks

# the identity of a run's configuration for one task: the pair and Run.settings (method, router, threshold,
# dtype, num_fewshot, batch size in half precision); two runs alike in all of these are one point twice
SUMMARY_CHECKED = ("generated_tokens", "collaboration_rate", "llm_call_rate")
_RATE_TOL = 1e-9  # both sides are computed from the same integers; only float rounding may differ
# the per-record fields of a record's identity (the trace table does not keep rank or prompt_hash)
_KEY_FIELDS = ("run_id", "task", "doc_id", "request_type")


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


def record_key(table: TraceTable, i: int) -> tuple:
    """What makes two trace records copies of one: run, task, document, request type and every per-token field
    the table holds (so hand-made records of one document that differ anywhere stay apart). Record ``i``'s."""
    meta = tuple(_item(table.get(k)[i]) for k in _KEY_FIELDS)
    return meta + tuple((v.dtype.str, v.tobytes()) for v in table.trace(i).values())


def _item(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def refuse_duplicate_records(where: Path | str, table: TraceTable) -> None:
    """``ValueError`` naming the first record that repeats an earlier one (:func:`record_key`).

    Vectorised: a 64-bit fingerprint per record (:func:`record_fingerprints`), sorted; only records whose
    fingerprint an earlier record shares are compared exactly, so a fingerprint collision never refuses a file."""
    h = record_fingerprints(table)
    order = np.argsort(h, kind="stable")  # equal fingerprints: in record order
    hs = h[order]
    del h
    if len(hs) < 2 or not (hs[1:] == hs[:-1]).any():
        return  # the usual case, decided in [R] uint64s and one sort
    group_start = np.concatenate([[True], hs[1:] != hs[:-1]])
    first_pos = np.maximum.accumulate(np.where(group_start, np.arange(len(hs)), 0))
    repeats = np.sort(order[~group_start])  # records whose fingerprint an earlier record holds, in record order
    if not len(repeats):
        return
    pos_of = np.empty(len(order), np.int64)
    pos_of[order] = np.arange(len(order))
    for i in repeats.tolist():
        key = record_key(table, i)
        for j in order[first_pos[pos_of[i]]:pos_of[i]].tolist():  # the earlier records of its fingerprint
            if record_key(table, j) == key:
                raise ValueError(f"{where}: trace record {i + 1} duplicates record {j + 1} (same run_id, task "
                                 f"{_item(table.get('task')[i])!r}, doc_id {_item(table.get('doc_id')[i])!r} "
                                 "and every token field): it would be counted twice; remove the copy")


def record_fingerprints(table: TraceTable, chunk_tokens: int = 1 << 16) -> np.ndarray:
    """[R] uint64: a hash of each record's :func:`record_key` (equal keys, equal fingerprints), computed a block
    of records (about ``chunk_tokens`` tokens) at a time so the working memory stays bounded (blocks of 1 M
    tokens made 8 MB temporaries that the allocator kept on its heap: +190 MiB of RSS at 10 M tokens)."""
    h = np.zeros(len(table), np.uint64)
    for k in _KEY_FIELDS:
        h = _mix(h ^ _codes(table.get(k)))
    h = _mix(h ^ table.lengths.astype(np.uint64))
    starts = record_blocks(table.offsets, chunk_tokens)
    with np.errstate(over="ignore"):
        for a, b in zip(starts[:-1], starts[1:]):
            lo, hi = table.offsets[a], table.offsets[b]
            local = table.offsets[a:b + 1] - lo
            pos = (np.arange(hi - lo, dtype=np.int64) - np.repeat(local[:-1], np.diff(local))).astype(np.uint64)
            for f, (name, v) in enumerate(table.tokens.items()):
                bits = _bits(v[lo:hi])
                x = _mix(bits * np.uint64(0x9E3779B97F4A7C15) + pos * np.uint64(0xC2B2AE3D27D4EB4F)
                         + np.uint64(f + 1))
                c = np.concatenate([np.zeros(1, np.uint64), np.cumsum(x, dtype=np.uint64)])
                h[a:b] = _mix(h[a:b] ^ (c[local[1:]] - c[local[:-1]]))
    return h


def _bits(v: np.ndarray) -> np.ndarray:
    """A token field's exact bytes as uint64 per token (NaN payloads and all)."""
    width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[v.dtype.itemsize]
    return np.ascontiguousarray(v).view(width).astype(np.uint64)


def _codes(values: np.ndarray) -> np.ndarray:
    """[R] uint64: Python's hash of each per-record value (strings, ints, ``None``): equal values, equal codes.
    An int64 column (``doc_id``, checked >= 0 by the reader) is its own hash (Python hashes 0 <= n < 2**61 - 1
    to n), so it costs no Python int per record."""
    if values.dtype == np.int64 and (not len(values) or (values.min() >= 0 and values.max() < _HASH_MODULUS)):
        return values.view(np.uint64)
    return np.fromiter(map(hash, values), np.int64, len(values)).view(np.uint64)


_HASH_MODULUS = (1 << 61) - 1  # sys.hash_info.modulus on 64-bit builds: hash(n) == n below it


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def check_summary(run: Any, records: TraceTable) -> None:
    """``ValueError`` where ``config["fsgen"]``'s per-task ``generated_tokens``, ``collaboration_rate`` or
    ``llm_call_rate`` differs from the same numbers computed from the run's trace records (``records``: those of
    :func:`~fsgen_eval.analysis.files.run_records`). Runs without traces (``trace=false``) or with a trace file
    missing (already reported) are not checked.

    Each task's tokens are summarised as one trace with its records' counters summed (what
    :func:`schema.summarize` counts the same as record by record), column by column, never record by record."""
    if not len(records) or run.missing_traces:
        return
    tasks = np.array([str(t or "unknown") for t in dict.fromkeys(records.get("task").tolist())], dtype=object)
    task_of = np.array([str(t or "unknown") for t in records.get("task").tolist()], dtype=object) \
        if len(tasks) > 1 else object_column(len(records), tasks[0])
    for task in run.results:
        stated = run.fsgen.per_task.get(task) if run.fsgen.per_task else None
        if stated is None and len(run.results) == 1:
            stated = run.fsgen.summary
        if not stated:
            continue
        mine = task_of == task
        from_traces = summarize([_tokens_of(records, mine)],
                                [{k: int(records.get(k)[mine].sum()) for k in COUNTERS if k in records.records}])
        for key in SUMMARY_CHECKED:
            if key in stated and not _same(stated[key], from_traces[key]):
                raise ValueError(f"{run.path}: config['fsgen'] says {task} {key} {stated[key]} but its traces "
                                 f"give {from_traces[key]} ({from_traces['generated_tokens']} tokens in "
                                 f"{int(mine.sum())} records): the summary and the traces disagree")


def _tokens_of(table: TraceTable, keep: np.ndarray) -> dict[str, np.ndarray]:
    """The token fields [N'] of the records where ``keep`` [R]: the columns themselves when every record is kept."""
    if keep.all():
        return table.tokens
    tok = np.repeat(keep, table.lengths)
    return {k: v[tok] for k, v in table.tokens.items()}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        return False
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=_RATE_TOL)
