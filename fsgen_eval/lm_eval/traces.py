"""Per-request trace files and the run summary of ``lm_eval --model fsgen``. Torch-free (numpy only).

One JSON object per request and line (fields in docs/INTERFACES.md). Each finished batch is appended and
flushed at once, so a run killed mid-way leaves a valid file holding every finished batch. Under data
parallelism each rank writes its own ``traces_<ts>_rank<k>.jsonl`` and rank 0 builds the summary of all
ranks from their files once lm-eval has synchronised the ranks.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fsgen_eval.core.jsonl import read_jsonl
from fsgen_eval.core.schema import COUNTERS, SCHEMA_VERSION, summarize, trace_to_json

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
    """One trace line: request metadata, every per-token field as a list, the speculative counters."""
    rec = {"schema_version": SCHEMA_VERSION, **meta}
    rec.update(trace_to_json(trace))
    rec.update({k: int((counters or {}).get(k, 0)) for k in COUNTERS})
    rec.update(extra)
    return rec


class TraceWriter:
    """Writes records to one JSONL file, opened on the first write (no empty files for failed runs).

    An existing file is refused (two runs would mix silently) unless ``append`` is set.
    """

    def __init__(self, path: Path, append: bool = False):
        self.path = Path(path)
        self.append = append
        self._fh: TextIO | None = None

    def write_batch(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append the records as JSON lines and flush, so a finished batch survives a later crash."""
        lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
        if not lines:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._fh = open(self.path, "a" if self.append else "x", encoding="utf-8")
            except FileExistsError:
                raise FileExistsError(f"trace file {self.path} exists; pass trace_append=true to add to it") from None
        self._fh.write(lines)
        self._fh.flush()  # the batch is on disk (in the OS) before the next one starts

    def close(self) -> None:
        """Close the file if one was opened."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class SummaryBook:
    """Collects what the summary needs per task (handoff and llm_called per token, speculative counters)."""

    def __init__(self) -> None:
        self.traces: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.counters: dict[str, list[dict[str, int]]] = defaultdict(list)

    def add(self, task: str | None, trace: Mapping[str, Any], counters: Mapping[str, int] | None = None) -> None:
        """Count one generation under ``task``: its ``handoff`` and ``llm_called`` arrays ``[T]`` and speculative
        counters."""
        task = task or "unknown"
        self.traces[task].append({
            "handoff": np.asarray(trace["handoff"], dtype=bool),
            "llm_called": np.asarray(trace["llm_called"], dtype=bool),
        })
        self.counters[task].append({k: int((counters or {}).get(k, 0)) for k in COUNTERS})

    def add_record(self, rec: Mapping[str, Any]) -> None:
        """Add one line of a trace file (as written by :func:`make_record`)."""
        self.add(rec.get("task"), {"handoff": rec["handoff"], "llm_called": rec["llm_called"]}, rec)

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
        """Rebuild from trace files (all ranks'); a torn last line (a killed writer) is skipped with a warning.

        With ``run_id``, only that run's records count (a file appended to by several runs).
        """
        book = cls()
        for path in paths:
            if not Path(path).exists():
                log.warning("fsgen: trace file %s is missing; the summary leaves it out", path)
                continue
            for n, rec in read_jsonl(Path(path), strict=False):  # (the torn-last-line rule of every reader)
                try:
                    if run_id is None or rec.get("run_id") == run_id:
                        book.add_record(rec)
                except (KeyError, TypeError, ValueError, AttributeError) as err:
                    log.warning("fsgen: %s line %d is not a trace record (%s); skipped", path, n, err)
        return book


def format_summary(info: Mapping[str, Any]) -> str:
    """A small markdown table (overall and per task) printed after lm-eval's own tables."""
    keys = ("generated_tokens", "collaboration_rate", "llm_call_rate", "acceptance_rate", "mean_acceptance_length")
    params = ", ".join(f"{k}={v}" for k, v in (info.get("params") or {}).items())
    threshold = "" if info.get("threshold") is None else f", threshold={info['threshold']}"
    head = (f"fsgen: {info.get('small')} + {info.get('large')}, method={info.get('method')}"
            f"{f' ({params})' if params else ''}, router={info.get('router')}{threshold}")
    rows = [("all", info.get("summary") or {})] + sorted((info.get("per_task") or {}).items())

    def cell(v: Any) -> str:
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [head, "", "| task | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + name + " | " + " | ".join(cell(s.get(k)) for k in keys) + " |" for name, s in rows]
    return "\n".join(lines)
