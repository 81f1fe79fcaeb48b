"""Per-request trace files and the run summary of ``lm_eval --model fsgen``. Torch-free (numpy only).

One JSON object per request and line (fields in docs/INTERFACES.md). Each finished batch is appended and
flushed at once, so a run killed mid-way leaves a valid file holding every finished batch.

With ``trace_topk=K`` the top-K ids and probabilities go to a Parquet side file beside it (``*.topk.parquet``,
:func:`fsgen_eval.core.schema.topk_path`; one row per token, ``record`` = the 0-based JSONL line), one row
group per batch, written right after that batch's JSONL lines. Parquet's footer is written only when the
run closes the file: a killed run leaves the JSONL with every finished batch but a side file without a
footer, which readers refuse (rerun, or drop ``trace_topk``). Under data
parallelism each rank writes its own ``traces_<ts>_rank<k>.jsonl`` and rank 0 builds the summary of all
ranks from their files once lm-eval has synchronised the ranks.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fsgen_eval.core.jsonl import read_jsonl
from fsgen_eval.core.schema import (COUNTERS, SCHEMA_VERSION, SUMMARY_KEYS, TOPK_FIELDS, as_ints, summarize, topk_path,
                                    trace_to_json)
from fsgen_eval.core.traces_io import read_trace_file

log = logging.getLogger(__name__)


def timestamp() -> str:
    """The same shape as lm-eval's ``results_<ts>.json`` stamps (``:`` is not allowed in every filesystem)."""
    return datetime.now().isoformat().replace(":", "-")


def trace_path(target: Path, ts: str, rank: int = 0, world_size: int = 1) -> Path:
    """Where one rank writes: ``target`` is a ``*.jsonl`` file or a folder for ``traces_<ts>.jsonl``."""
    target = Path(target)
    suffix = f"_rank{rank}" if world_size > 1 else ""
    if target.suffix == ".jsonl":
        return target.with_name(f"{target.stem}{suffix}.jsonl")
    return target / f"traces_{ts}{suffix}.jsonl"


def all_rank_paths(target: Path, ts: str, world_size: int) -> list[Path]:
    """The trace file of every rank ``0 .. world_size-1`` of one run (rank 0 reads them all)."""
    return [trace_path(target, ts, r, world_size) for r in range(world_size)]


def make_record(
    meta: Mapping[str, Any], trace: Mapping[str, np.ndarray], counters: Mapping[str, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One trace line: request metadata, every per-token field as a list, the speculative counters.

    Top-K arrays ``[T, K]`` in ``trace`` stay numpy arrays in the record; :class:`TraceWriter` moves them
    to the Parquet side file and writes the rest as JSON."""
    rec = {"schema_version": SCHEMA_VERSION, **meta}
    rec.update(trace_to_json(trace))
    rec.update({k: np.asarray(trace[k]) for k in TOPK_FIELDS if k in trace})
    rec.update({k: int((counters or {}).get(k, 0)) for k in COUNTERS})
    rec.update(extra)
    return rec


class TraceWriter:
    """Writes records to one JSONL file, opened on the first write (no empty files for failed runs).

    An existing file is refused (two runs would mix silently) unless ``append`` is set. Records carrying
    top-K arrays (``trace_topk``) also get their rows in the Parquet side file, which is never appended to.
    """

    def __init__(self, path: Path, append: bool = False):
        self.path = Path(path)
        self.append = append
        self._fh: TextIO | None = None
        self._lines = 0  # records in the JSONL file so far (the side file's ``record`` key)
        self._topk: TopKWriter | None = None

    def write_batch(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append the records as JSON lines and flush, so a finished batch survives a later crash."""
        records = list(records)
        topk = [{k: r[k] for k in TOPK_FIELDS if k in r} for r in records]
        plain = [{k: v for k, v in r.items() if k not in TOPK_FIELDS} for r in records]
        lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in plain)
        if not lines:
            return
        if self._fh is None:
            self._open()
        try:
            self._fh.write(lines)
            self._fh.flush()  # the batch is on disk (in the OS) before the next one starts
        except OSError as err:  # a full disk: one line, the finished batches stay readable
            from fsgen_eval.lm_eval.args import OneLineError

            raise OneLineError(f"writing trace file {self.path} failed ({err.strerror or err}): it holds every "
                               "batch finished before (a torn last line is skipped by every reader)") from None
        if any(topk):
            if self._topk is None:
                self._topk = TopKWriter(topk_path(self.path))
            self._topk.write_batch(self._lines, plain, topk)
        self._lines += len(plain)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fh = open(self.path, "a" if self.append else "x", encoding="utf-8")
        except FileExistsError:
            raise FileExistsError(f"trace file {self.path} exists; pass trace_append=true to add to it") from None
        try:  # held until close: the side file's record numbers are this file's lines, so no run may append beside
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            self._fh = None
            raise FileExistsError(f"trace file {self.path} is being written by another run; concurrent appends "
                                  "are refused (their records and top-K rows would interleave)") from None
        if self.append:  # the side file's record numbers continue the file's physical lines
            with open(self.path, encoding="utf-8") as fh:
                self._lines = sum(1 for _ in fh)

    def close(self) -> None:
        """Close the file if one was opened."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._topk is not None:
            self._topk.close()
            self._topk = None


def topk_schema(k: int | None = None) -> Any:
    """The side file's Arrow schema (columns ``schema.TOPK_COLUMNS``)."""
    import pyarrow as pa

    ids, probs = pa.list_(pa.int32()), pa.list_(pa.float32())
    return pa.schema([("record", pa.int64()), ("token", pa.int32()), ("s1_topk_ids", ids),
                      ("s1_topk_probs", probs), ("s2_topk_ids", ids), ("s2_topk_probs", probs),
                      ("doc_id", pa.int64()), ("task", pa.string())])


class TopKWriter:
    """The Parquet side file of one trace file: one row per token, one row group per batch."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: top-K side file exists already (Parquet cannot be appended to); "
                                  "move it away or write the traces elsewhere")
        # zstd; dictionaries only for the repetitive key columns, byte-stream split for the probabilities:
        # about two thirds of the raw int32 + float32 size (benchmarks/bench_topk.py)
        self._writer = pq.ParquetWriter(str(self.path), topk_schema(), compression="zstd",
                                        use_dictionary=["record", "token", "doc_id", "task"],
                                        use_byte_stream_split=True)

    def write_batch(self, first: int, records: list[Mapping[str, Any]], topk: list[Mapping[str, np.ndarray]]) -> None:
        """Rows for ``records`` (JSONL lines ``first``, ``first+1``, ...); ``topk[i][field]`` is ``[T_i, K]``."""
        self._writer.write_table(topk_table(first, records, topk), row_group_size=None)

    def close(self) -> None:
        self._writer.close()


def topk_table(first: int, records: list[Mapping[str, Any]], topk: list[Mapping[str, np.ndarray]]) -> Any:
    """One Arrow table of the batch's tokens; System 2's lists are null where it was not evaluated."""
    import pyarrow as pa

    cols: dict[str, list] = {c: [] for c in topk_schema().names}
    for i, (rec, tk) in enumerate(zip(records, topk, strict=True)):
        if not tk:
            continue
        n = len(tk["s1_topk_ids"])
        called = np.asarray(rec.get("llm_called") or [False] * n, dtype=bool)
        cols["record"] += [first + i] * n
        cols["token"] += list(range(n))
        cols["s1_topk_ids"] += list(np.asarray(tk["s1_topk_ids"], np.int32))
        cols["s1_topk_probs"] += list(np.asarray(tk["s1_topk_probs"], np.float32))
        for f in ("s2_topk_ids", "s2_topk_probs"):
            cols[f] += [row if c else None for row, c in zip(tk[f], called)]
        cols["doc_id"] += [rec.get("doc_id")] * n
        cols["task"] += [rec.get("task")] * n
    return pa.table(cols, schema=topk_schema())


class SummaryBook:
    """Collects what the summary needs per task (handoff and llm_called per token, speculative counters)."""

    def __init__(self) -> None:
        self.traces: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.counters: dict[str, list[dict[str, int]]] = defaultdict(list)

    def add(self, task: str | None, trace: Mapping[str, Any], counters: Mapping[str, int] | None = None) -> None:
        """Count one generation under ``task``: its ``handoff`` and ``llm_called`` arrays ``[T]`` and speculative
        counters."""
        task = task or "unknown"
        kept = {"handoff": np.asarray(trace["handoff"], dtype=bool),
                "llm_called": np.asarray(trace["llm_called"], dtype=bool)}
        for k in ("accepted", "base_handoff"):  # FS-GEN's conventions count these
            if trace.get(k) is not None:
                kept[k] = as_ints(trace[k])
        self.traces[task].append(kept)
        self.counters[task].append({k: int((counters or {}).get(k, 0)) for k in COUNTERS})

    def add_record(self, rec: Mapping[str, Any]) -> None:
        """Add one line of a trace file (as written by :func:`make_record`)."""
        self.add(rec.get("task"), {k: rec.get(k) for k in ("handoff", "llm_called", "accepted", "base_handoff")}
                 | {"handoff": rec["handoff"], "llm_called": rec["llm_called"]}, rec)

    def summary(self) -> dict[str, Any]:
        """``{"summary": overall, "per_task": {task: summary}}`` in schema.SUMMARY_KEYS."""
        every_trace = [t for ts in self.traces.values() for t in ts]
        every_counter = [c for cs in self.counters.values() for c in cs]
        return {
            "summary": summarize(every_trace, every_counter),
            "per_task": {task: summarize(self.traces[task], self.counters[task]) for task in sorted(self.traces)},
        }

    @classmethod
    def from_files(cls, paths: Iterable[Path], run_id: str | None = None) -> "SummaryBook":
        """Rebuild from trace files (all ranks') through the one trace reader (a torn last line, a killed
        writer's, is skipped with a warning); each task's tokens are added as one trace and its counters
        summed, which :func:`schema.summarize` counts the same as record by record.

        With ``run_id``, only that run's records count (a file appended to by several runs).
        """
        book = cls()
        for path in paths:
            if not Path(path).exists():
                log.warning("fsgen: trace file %s is missing; the summary leaves it out", path)
                continue
            try:
                table = read_trace_file(Path(path), SUMMARY_COLUMNS)
            except ValueError:  # a record the analysis would refuse: count what can be counted, as lm-eval ran
                book._add_lines(Path(path), run_id)
                continue
            if run_id is not None:
                table = table.select(table.get("run_id") == run_id)
            tasks = table.get("task")
            for task in dict.fromkeys(tasks.tolist()):
                mine = table.select(tasks == task) if task is not None else table.select(
                    np.array([t is None for t in tasks.tolist()], bool))
                book.add(task, mine.tokens, {k: int(mine.get(k).sum()) for k in COUNTERS})
        return book


    def _add_lines(self, path: Path, run_id: str | None) -> None:
        """Add a file record by record, skipping (with a warning) lines that are not trace records."""
        for n, rec in read_jsonl(path, strict=False):
            try:
                if run_id is None or rec.get("run_id") == run_id:
                    self.add_record(rec)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                log.warning("fsgen: %s line %d is not a trace record (%s); skipped", path, n, err)


SUMMARY_COLUMNS = ("handoff", "llm_called", "accepted", "base_handoff")


def conventions_note(info: Mapping[str, Any]) -> list[str]:
    """Lines naming where this run's numbers follow FS-GEN's conventions rather than ours."""
    notes = ["FS-GEN's conventions beside ours: handoffs_per_call = handoffs / System 2 calls; "
             "rejections_per_round = rejected / verification rounds; base_collaboration_rate = proxy tuning's "
             "handoffs against the untuned base's greedy token (docs/analysis.md)."]
    params = info.get("params") or {}
    if info.get("method") == "speculative" and params.get("speculative_variant") == "fsgen":
        notes.append("speculative_variant=fsgen is LOSSY: System 1's tokens are emitted unverified where the "
                     "router does not fire (FS-GEN's code); the default bild verifies every token.")
    if info.get("router") == "margin" and info.get("threshold") is not None:
        notes.append(f"router=margin calls where p1 - p2 < {info['threshold']}; FS-GEN's delta router tests "
                     f"(p1 - p2)/2 < t, so this is its t = {float(info['threshold']) / 2:g}.")
    return notes


def format_summary(info: Mapping[str, Any]) -> str:
    """A small markdown table (overall and per task) printed after lm-eval's own tables."""
    keys = SUMMARY_KEYS
    params = ", ".join(f"{k}={v}" for k, v in (info.get("params") or {}).items())
    threshold = "" if info.get("threshold") is None else f", threshold={info['threshold']}"
    head = (f"fsgen: {info.get('small')} + {info.get('large')}, method={info.get('method')}"
            f"{f' ({params})' if params else ''}, router={info.get('router')}{threshold}")
    rows = [("all", info.get("summary") or {})] + sorted((info.get("per_task") or {}).items())

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [head, "", "| task | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + name + " | " + " | ".join(cell(s.get(k)) for k in keys) + " |" for name, s in rows]
    return "\n".join(lines + [""] + conventions_note(info))
