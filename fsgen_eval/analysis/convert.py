"""JSONL traces to Parquet: a study's trace files in the columnar form every reader takes.

Parquet (one row per record, token fields as lists, zstd) is ~6x smaller than JSONL and is read a column at
a time without parsing text, in about half the JSONL reader's time (benchmarks/bench_analysis_memory.py,
which measures a 10 M-token study in this form). lm-eval runs still write JSONL (a killed run keeps every
finished batch of an append-only text file; a Parquet file is readable only once closed), and a finished
study is converted.

Each step leaves the study readable if the process dies after it: the Parquet file is written beside the
JSONL (renamed when complete) and read back and compared with the JSONL's table; then each results file
naming the JSONL is rewritten to name the Parquet file (written beside, renamed); only then is the JSONL
moved aside (``traces_X.jsonl.converted``, which no reader looks for) or deleted. A trace's top-K side file
(``traces_X.topk.parquet``) is the side file of its Parquet form too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsgen_eval.analysis.files import find_runs, read_trace_file
from fsgen_eval.core import traces_io
from fsgen_eval.core.jsonl import read_json
from fsgen_eval.core.traces_io import TraceTable


@dataclass
class Converted:
    """One converted trace file: its JSONL, the Parquet written, the results files now naming it."""

    jsonl: Path
    parquet: Path
    results: list[Path]
    records: int
    tokens: int
    jsonl_bytes: int


def convert_study(paths: list[Path], delete_jsonl: bool = False) -> list[Converted]:
    """Convert every JSONL trace file that the runs below ``paths`` name (results files or folders); a
    results file naming Parquet traces already is left as it is. Raises (one line) before writing anything
    for a trace file whose name does not end in ``.jsonl`` or whose Parquet form exists already."""
    runs = find_runs(paths)
    named: dict[Path, list[Path]] = {}
    for run in runs:
        for f in run.trace_files:
            if f.suffix == ".jsonl":
                named.setdefault(f.resolve(), []).append(Path(run.path))
    for jsonl in named:
        if jsonl.with_suffix(".parquet").exists():
            raise ValueError(f"{jsonl.with_suffix('.parquet')}: exists already; move it away to convert {jsonl}")
    return [convert_file(jsonl, results, delete_jsonl) for jsonl, results in named.items()]


def convert_file(jsonl: Path, results: list[Path], delete_jsonl: bool = False) -> Converted:
    """One JSONL trace file to Parquet (every field checked as every reader checks it), the ``results``
    files naming it rewritten, the JSONL moved aside (or deleted)."""
    table = read_trace_file(jsonl)
    size = jsonl.stat().st_size
    parquet = traces_io.write_parquet(table, jsonl.with_suffix(".parquet"))
    _require_same(jsonl, table, read_trace_file(parquet))
    for path in results:
        _rename_trace(path, jsonl, parquet)
    if delete_jsonl:
        jsonl.unlink()
    else:
        jsonl.replace(jsonl.with_name(jsonl.name + ".converted"))
    return Converted(jsonl, parquet, results, len(table), table.n_tokens, size)


def _require_same(jsonl: Path, a: TraceTable, b: TraceTable) -> None:
    """``ValueError`` unless the Parquet form reads back as the JSONL's table."""
    same = np.array_equal(a.offsets, b.offsets) and list(a.tokens) == list(b.tokens) and all(
        np.array_equal(a.tokens[k], b.tokens[k], equal_nan=a.tokens[k].dtype.kind == "f") for k in a.tokens) \
        and all(a.get(k).tolist() == b.get(k).tolist() for k in a.records)
    if not same:
        raise ValueError(f"{jsonl}: its Parquet form does not read back as the same records; JSONL kept")


def _rename_trace(results: Path, jsonl: Path, parquet: Path) -> None:
    """Rewrite ``results`` so that its ``config.fsgen.traces`` names ``parquet`` where it named ``jsonl``
    (in the same form: a bare name stays a bare name), written beside it and renamed."""
    obj = read_json(results)
    traces = obj["config"]["fsgen"]["traces"]
    for i, name in enumerate(traces):  # found as files.load_run finds it: beside the results, then from here
        given = Path(name)
        candidates = [given] if given.is_absolute() else [results.parent / given, given]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is not None and hit.resolve() == jsonl.resolve():
            traces[i] = str(given.with_suffix(".parquet"))
    tmp = results.with_name(results.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(results)
