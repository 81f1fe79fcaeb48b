"""Reading what the lm-eval adapter writes (results and traces) and the fit's CSV input.

Every problem with a file raises ``FileNotFoundError`` or ``ValueError`` whose message names the file and
the problem in one line; the CLI prints that line and exits 2.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsgen_eval.core.schema import Trace, trace_from_json

_TS = re.compile(r"^(?:results|traces)_(.+?)(?:_rank\d+)?\.jsonl?$")


@dataclass
class Run:
    """One lm-eval run of the ``fsgen`` model: a ``results_<ts>.json`` and its trace files.

    ``fsgen`` is ``config["fsgen"]`` (small, large, method, router, threshold, summary, per_task, ...);
    ``results`` is lm-eval's ``results`` block (task -> metric -> value).
    """

    path: Path
    fsgen: dict[str, Any]
    results: dict[str, dict[str, Any]]
    trace_files: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``method/router[@threshold]``: the collaborative configuration."""
        thr = self.fsgen.get("threshold")
        return f"{self.fsgen.get('method')}/{self.fsgen.get('router')}" + ("" if thr is None else f"@{thr}")

    @property
    def pair(self) -> str:
        """``small -> large`` with each model's short name."""
        return f"{_short(self.fsgen.get('small'))} -> {_short(self.fsgen.get('large'))}"


def _short(model: Any) -> str:
    """A model named by an absolute local path is shown by its folder name (hub ids stay as they are)."""
    return Path(model).name if isinstance(model, str) and Path(model).is_absolute() else str(model)


# numbers lm-eval writes beside a task's metrics that are not metrics
NOT_METRICS = ("sample_len",)


def is_metric(name: str, value: Any) -> bool:
    """A metric value of lm-eval's ``results[task]`` (not its stderr, alias or sample count)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in name
            and name not in NOT_METRICS)


def read_json(path: Path) -> Any:
    """Parse a JSON file; raises naming the file when it is missing, empty or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text()
    if not text.strip():
        raise ValueError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def load_run(path: Path) -> Run:
    """Read one ``results_<ts>.json`` written by lm-eval with ``--model fsgen``."""
    obj = read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("results"), dict):
        raise ValueError(f"{path}: not an lm-eval results file (no 'results' object)")
    fsgen = (obj.get("config") or {}).get("fsgen")
    if not isinstance(fsgen, dict):
        raise ValueError(f"{path}: results file lacks config['fsgen'] (was it run with --model fsgen?)")
    for key in ("small", "large", "method", "router"):
        if key not in fsgen:
            raise ValueError(f"{path}: config['fsgen'] lacks {key!r}")
    return Run(Path(path), fsgen, obj["results"], _trace_files_for(Path(path)))


def _trace_files_for(results_path: Path) -> list[Path]:
    """The trace files of a results file: same folder and timestamp, else all of the folder's when it holds
    a single results file (the adapter's timestamp may differ from lm-eval's)."""
    folder = results_path.parent
    ts = _TS.match(results_path.name)
    traces = sorted(folder.glob("traces_*.jsonl"))
    same = [t for t in traces if ts and (m := _TS.match(t.name)) and m.group(1) == ts.group(1)]
    if same:
        return same
    return traces if len(list(folder.glob("results_*.json"))) == 1 else []


def find_runs(folders: list[Path]) -> list[Run]:
    """All runs below the given folders (a folder may also be a results file itself)."""
    runs: list[Run] = []
    for folder in map(Path, folders):
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such file or folder")
        # a sweep's unfinished cells (``*.tmp`` folders) hold no trustworthy results
        files = [folder] if folder.is_file() else sorted(
            f for f in folder.rglob("results_*.json") if not any(p.endswith(".tmp") for p in f.parts))
        if not files:
            raise ValueError(f"{folder}: no results_*.json below this folder")
        runs.extend(load_run(f) for f in files)
    return runs


def read_trace_file(path: Path) -> list[dict[str, Any]]:
    """Records of one trace JSONL file, each with ``trace`` (per-token arrays, :data:`schema.Trace`) added.

    Raises naming the file and line for an empty file, a line that is not JSON, or a record lacking a field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{n}: a trace record must be a JSON object")
        try:
            obj["trace"] = trace_from_json(obj)
        except ValueError as err:
            raise ValueError(f"{path}:{n}: {err}") from None
        records.append(obj)
    if not records:
        raise ValueError(f"{path}: trace file is empty")
    return records


def read_traces(paths: list[Path]) -> list[dict[str, Any]]:
    """Records of several trace files (see :func:`read_trace_file`); a folder means its ``traces_*.jsonl``."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("traces_*.jsonl"))
            if not found:
                raise ValueError(f"{p}: no traces_*.jsonl below this folder")
            files.extend(found)
        else:
            files.append(p)
    return [r for f in files for r in read_trace_file(f)]


def traces_of(records: list[dict[str, Any]]) -> list[Trace]:
    """The per-token traces (fields ``[T_i]``) of trace records, in order."""
    return [r["trace"] for r in records]


POINT_COLUMNS = ("large_params", "small_params", "collaboration_rate")
OPTIONAL_COLUMNS = ("task", "method", "small", "large")


def read_points_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a fit CSV: ``large_params``, ``small_params``, ``collaboration_rate`` (numbers) and optional
    ``task``, ``method``, ``small``, ``large``. Unknown or missing columns and non-numbers raise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        if not cols:
            raise ValueError(f"{path}: CSV file is empty")
        unknown = [c for c in cols if c not in POINT_COLUMNS + OPTIONAL_COLUMNS]
        if unknown:
            raise ValueError(f"{path}: unknown column(s) {', '.join(unknown)} (known: "
                             f"{', '.join(POINT_COLUMNS + OPTIONAL_COLUMNS)})")
        missing = [c for c in POINT_COLUMNS if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = [_numeric_row(path, n, row) for n, row in enumerate(reader, start=2)]
    if not rows:
        raise ValueError(f"{path}: CSV file has a header but no rows")
    return rows


def _numeric_row(path: Path, line: int, row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(row)
    for c in POINT_COLUMNS:
        try:
            out[c] = float(row[c])
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: column {c!r} is not a number: {row[c]!r}") from None
    return out
