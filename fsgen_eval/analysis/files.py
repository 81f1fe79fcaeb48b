"""Reading what the lm-eval adapter writes (results and traces) and the fit's CSV input.

Traces are read by the one trace reader (:mod:`fsgen_eval.core.traces_io`) as columnar tables; the analysis
asks for the token fields it needs (:data:`ANALYSIS_COLUMNS`, :data:`RATE_COLUMNS`), so a study of millions
of tokens stays within a few hundred MB.

Every problem with a file raises ``FileNotFoundError`` or ``ValueError`` whose message names the file and
the problem in one line; the CLI prints that line and exits 2.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.analysis.consistency import check_summary, refuse_duplicate_records, refuse_duplicate_runs
from fsgen_eval.analysis.points import method_label
from fsgen_eval.core import traces_io
from fsgen_eval.core.jsonl import read_json  # noqa: F401 - re-exported (gate reads it here)
from fsgen_eval.core.registry import METHODS
from fsgen_eval.core.runs import recorded_trace, results_files
from fsgen_eval.core.schema import RunInfo, Trace, topk_path
from fsgen_eval.core.traces_io import TraceTable

# the token fields each analysis reads (every field of every record is still checked)
RATE_COLUMNS = ("handoff", "llm_called")  # rates and their intervals (check, the leaderboard)
ANALYSIS_COLUMNS = (*RATE_COLUMNS, "s1_entropy", "s1_top1_prob", "s1_margin")  # analyze, report's figures

# with no logging set up (the CLI), Python prints warnings bare to stderr
log = logging.getLogger("fsgen_eval.analysis")


@dataclass
class Run:
    """One lm-eval run of the ``fsgen`` model: a ``results_<ts>.json`` and its trace files.

    ``fsgen`` is ``config["fsgen"]``, the run record the adapter wrote (``core.schema.RunInfo``);
    ``results`` is lm-eval's ``results`` block (task -> metric -> value).
    """

    path: Path
    fsgen: RunInfo
    results: dict[str, dict[str, Any]]
    trace_files: list[Path] = field(default_factory=list)  # those config["fsgen"]["traces"] names
    missing_traces: list[Path] = field(default_factory=list)  # named but not found
    config: dict[str, Any] = field(default_factory=dict)  # lm-eval's ``config`` (model_args, batch_size, ...)
    n_shot: dict[str, Any] = field(default_factory=dict)  # lm-eval's ``n-shot``: task -> few-shot count
    n_samples: dict[str, Any] = field(default_factory=dict)  # lm-eval's ``n-samples``: task -> {effective, ...}
    code_tasks: list[str] = field(default_factory=list)  # tasks whose lm-eval config says unsafe_code: they run programs

    def settings(self, task: str) -> dict[str, Any]:
        """What makes this run's points comparable or not with another's (besides the pair): ``task``,
        ``method``, ``router``, ``threshold``, ``dtype`` (the dtype the models ran in), ``num_fewshot`` and
        ``batch_size`` — the last only in half precision, where the batch changes the numbers (in fp32 the
        engine's results do not depend on it)."""
        args = self.config.get("model_args") if isinstance(self.config.get("model_args"), dict) else {}
        dtype = self.config.get("model_dtype") or args.get("dtype")
        dtype = str(dtype).removeprefix("torch.") if dtype is not None else None
        half = dtype in ("float16", "bfloat16", "half", "auto")
        batch = self.config.get("batch_size")
        return {"task": task, "method": self.fsgen.method, "variant": self.variant, "router": self.fsgen.router,
                "threshold": self.fsgen.threshold, "dtype": dtype, "num_fewshot": self.n_shot.get(task),
                "batch_size": str(batch) if half and batch is not None else None}

    @property
    def variant(self) -> str | None:
        """The method's variant as the run recorded it (``contrastive_variant=fsgen``: ``fsgen``); ``None`` for a
        method without variants or a run that did not record one."""
        spec = METHODS.get(self.fsgen.method)
        return spec.variant_of(self.fsgen.params or {}) if spec is not None else None

    @property
    def label(self) -> str:
        """``method[variant]/router[@threshold]``: the collaborative configuration (the variant where the method
        has published variants, e.g. ``contrastive[fsgen]/always``)."""
        thr = self.fsgen.threshold
        return (f"{method_label(self.fsgen.method, self.variant)}/{self.fsgen.router}"
                + ("" if thr is None else f"@{thr}"))

    @property
    def pair(self) -> str:
        """``small -> large`` with each model's short name."""
        return f"{_short(self.fsgen.small)} -> {_short(self.fsgen.large)}"


def _short(model: Any) -> str:
    """A model named by an absolute local path is shown by its folder name (hub ids stay as they are)."""
    return Path(model).name if isinstance(model, str) and Path(model).is_absolute() else str(model)


# numbers lm-eval writes beside a task's metrics that are not metrics
NOT_METRICS = ("sample_len",)


def is_metric(name: str, value: Any) -> bool:
    """A metric value of lm-eval's ``results[task]`` (not its stderr, alias or sample count)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in name
            and name not in NOT_METRICS)


def load_run(path: Path) -> Run:
    """Read one ``results_<ts>.json`` written by lm-eval with ``--model fsgen``."""
    obj = read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("results"), dict):
        raise ValueError(f"{path}: not an lm-eval results file (no 'results' object)")
    fsgen = (obj.get("config") or {}).get("fsgen")
    if not isinstance(fsgen, dict):
        raise ValueError(f"{path}: results file lacks config['fsgen'] (was it run with --model fsgen?)")
    present, missing = _trace_files_for(Path(path), fsgen)
    run_info = RunInfo.from_json(fsgen, where=f"{path}: config['fsgen']")
    config = {k: v for k, v in (obj.get("config") or {}).items() if k != "fsgen"}
    n_shot = obj.get("n-shot") if isinstance(obj.get("n-shot"), dict) else {}
    n_samples = obj.get("n-samples") if isinstance(obj.get("n-samples"), dict) else {}
    configs = obj.get("configs") if isinstance(obj.get("configs"), dict) else {}
    code_tasks = sorted(t for t, c in configs.items() if isinstance(c, dict) and c.get("unsafe_code") is True)
    return Run(Path(path), run_info, obj["results"], present, missing, config, n_shot, n_samples, code_tasks)


def _trace_files_for(results_path: Path, fsgen: dict[str, Any]) -> tuple[list[Path], list[Path]]:
    """The trace files a results file names (``config.fsgen.traces``), as ``(present, missing)``.

    Only those: never matched by timestamp (results are stamped at the end of a run, traces at its start),
    never every trace of the folder (a killed run's traces beside a rerun's belong to no results file). Each is
    looked for by its name beside the results file first (``fsgen-eval run`` writes them there, and a folder
    may have moved since: a sweep cell's is renamed when it finishes), then as recorded (absolute, or relative
    to the results file's folder or to where the run started).
    """
    names = fsgen.get("traces", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{results_path}: config['fsgen']['traces'] must be a list of file names")
    present, missing = [], []
    for name in names:
        recorded, hit = recorded_trace(results_path, name)
        if hit is None:
            missing.append(recorded)
        elif hit not in present:
            present.append(hit)
    for path in missing:
        log.warning("%s: its trace file %s is missing; the run is analysed without it", results_path, path)
    return present, missing


def incomplete_traces(folders: list[Path], runs: list[Run]) -> list[Path]:
    """Trace files below ``folders`` that no results file names: a killed or unfinished run's."""
    claimed = {p.resolve() for r in runs for p in r.trace_files + r.missing_traces}
    found = [f for folder in map(Path, folders) if folder.is_dir() for f in sorted(folder.rglob("traces_*.jsonl"))
             if not any(part.endswith(".tmp") for part in f.parts)]
    return [f for f in found if f.resolve() not in claimed]


def warn_incomplete(folders: list[Path], runs: list[Run]) -> list[Path]:
    """Say, one line each, which traces below ``folders`` belong to no results file (they are left out)."""
    orphans = incomplete_traces(folders, runs)
    for path in orphans:
        log.warning("%s: incomplete run (no results file names this trace: killed or unfinished); left out", path)
    return orphans


def _lm_eval_system2(path: Path, folder: Path) -> bool:
    """Whether ``path`` is a sweep's System 2 run through lm-eval's own ``hf``/``vllm`` class (below a
    ``_system2`` folder, no ``config['fsgen']``: its replayed cells hold the traces). Said in one line, since
    such a run is left out of the folder's runs; anywhere else a results file without ``fsgen`` is refused."""
    if folder.is_file() or "_system2" not in path.relative_to(folder).parts[:-1]:
        return False
    obj = read_json(path)
    if isinstance(obj, dict) and isinstance((obj.get("config") or {}).get("fsgen"), dict):
        return False
    log.info("%s: System 2's run through lm-eval's own model class (no traces); its replayed cells are read", path)
    return True


def find_runs(folders: list[Path]) -> list[Run]:
    """All runs below the given folders (a folder may also be a results file itself)."""
    runs: list[Run] = []
    for folder in map(Path, folders):
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such file or folder")
        # a sweep's unfinished cells (``*.tmp`` folders) hold no trustworthy results
        files = results_files(folder)
        if not files:
            orphans = incomplete_traces([folder], [])
            what = (f": only an incomplete run's traces ({', '.join(map(str, orphans))}: killed or unfinished, "
                    "no results file names them)") if orphans else ""
            raise ValueError(f"{folder}: no results_*.json below this folder{what}")
        found = [load_run(f) for f in files if not _lm_eval_system2(f, folder)]
        if folder.is_dir():
            warn_incomplete([folder], found)
        runs.extend(found)
    refuse_duplicate_runs(runs)
    return runs


def read_trace_file(path: Path, columns: Sequence[str] | None = None) -> TraceTable:
    """One trace file as a :class:`~fsgen_eval.core.traces_io.TraceTable` (token fields ``columns``, default
    all; every field checked). Raises naming the file and line (and the field) for an empty file, a line that
    is not a JSON object, or a record :func:`schema.check_record` refuses; a torn final line (a killed writer)
    is skipped with a warning. The one trace reader: :func:`fsgen_eval.core.traces_io.read_trace_file`."""
    table = traces_io.read_trace_file(path, columns)
    refuse_duplicate_records(path, table)
    return table


def read_traces(paths: list[Path], columns: Sequence[str] | None = None) -> TraceTable:
    """Records of several trace sources (see :func:`read_trace_file`), as one table.

    A ``*.jsonl`` is read as given (every run in it: see :func:`by_run_id`). A ``results_*.json`` means its
    run's records in the traces it names (:func:`run_records`). A folder means the records of every finished
    run below it; a trace no results file names (a killed run) is reported and left out. Records read through
    a run carry ``run_label`` (``pair | method/router``), so the runs of a folder stay apart (:func:`by_run_id`).
    """
    tables: list[TraceTable] = []
    for p in map(Path, paths):
        if p.is_dir():
            tables += [_labelled(run, columns) for run in _runs_below(p)]
        elif p.name.startswith("results_") and p.suffix == ".json":
            run = load_run(p)
            if not run.trace_files:
                raise ValueError(f"{p}: this results file names no trace file that exists")
            tables.append(_labelled(run, columns))
        else:
            tables.append(read_trace_file(p, columns))
    return traces_io.concat(tables, columns)


def run_records(run: Run, columns: Sequence[str] | None = None) -> TraceTable:
    """The trace records of ``run``: those of its trace files that carry its ``run_id``.

    A file written with ``trace_append=true`` holds several runs; the others' records are left out, with a
    warning that counts them. A run recorded before run ids (``run_id`` unset) keeps every record.
    """
    records = traces_io.concat([read_trace_file(f, columns) for f in run.trace_files], columns)
    mine = records.get("run_id") == run.fsgen.run_id
    if run.fsgen.run_id is not None and not mine.all():
        log.warning("%s: %d of the %d records in its trace files belong to other runs (another run_id); "
                    "left out", run.path, int((~mine).sum()), len(records))
        records = records.select(mine)
    check_summary(run, records)  # the rates config['fsgen'] states against those of the traces it names
    return records


def _labelled(run: Run, columns: Sequence[str] | None = None) -> TraceTable:
    """:func:`run_records` of ``run``, each with ``run_label`` (``pair | method/router``, and the results file
    for a run written before run ids, whose records have no other key)."""
    label = f"{run.pair} | {run.label}" + ("" if run.fsgen.run_id else f" | {run.path}")
    return run_records(run, columns).with_record_field("run_label", label)


def by_run_id(records: TraceTable) -> dict[str | None, TraceTable]:
    """Records grouped by run — ``run_id``, or for a run written before run ids the ``run_label`` it was read
    with — in order of first appearance (``None``: neither is known)."""
    ids, labels = records.get("run_id"), records.get("run_label")
    keys = np.array([i if i else lab for i, lab in zip(ids.tolist(), labels.tolist())], dtype=object) \
        if len(records) else np.zeros(0, object)
    order = list(dict.fromkeys(keys.tolist()))
    return {k: records.select(keys == k) if k is not None else records.select(_is_none(keys)) for k in order}


def _is_none(values: np.ndarray) -> np.ndarray:
    return np.array([v is None for v in values.tolist()], bool)


def _runs_below(folder: Path) -> list[Run]:
    """Every finished run below ``folder`` (unfinished sweep cells, ``*.tmp``, are not); ``ValueError`` when
    there is none with traces, naming what is there instead."""
    results = results_files(folder)
    runs = [load_run(f) for f in results]
    refuse_duplicate_runs(runs)
    orphans = warn_incomplete([folder], runs)
    runs = [r for r in runs if r.trace_files]
    if not runs:
        what = f"only incomplete runs' traces ({', '.join(map(str, orphans))})" if orphans else "no trace files"
        raise ValueError(f"{folder}: no finished run's traces below this folder: {what}; pass a trace file "
                         "itself to analyze it anyway")
    return runs


def traces_of(records: TraceTable | list[dict[str, Any]]) -> TraceTable | list[Trace]:
    """The per-token traces of trace records: a table is its own (the analysis takes tables), a list of
    record dicts gives their ``trace`` mappings (fields ``[T_i]``), in order."""
    return records if isinstance(records, TraceTable) else [r["trace"] for r in records]


POINT_COLUMNS = ("large_params", "small_params", "collaboration_rate")
OPTIONAL_COLUMNS = ("task", "method", "small", "large")


def read_points_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a fit CSV: ``large_params``, ``small_params``, ``collaboration_rate`` (numbers) and optional
    ``task``, ``method``, ``small``, ``large``. Lines starting with ``#`` before the header are comments (where
    the points come from). Unknown or missing columns and non-numbers raise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="") as fh:
        lines = fh.readlines()
    skipped = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    reader = csv.DictReader(lines[skipped:])  # error messages below name the file's own line numbers
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
    rows = [_numeric_row(path, n, row) for n, row in enumerate(reader, start=skipped + 2)]
    if not rows:
        raise ValueError(f"{path}: CSV file has a header but no rows")
    return rows


def _numeric_row(path: Path, line: int, row: dict[str, str]) -> dict[str, Any]:
    """One data row (``line`` of the file): numbers, finite, parameter counts > 0, the rate in [0, 1]."""
    out: dict[str, Any] = dict(row)
    for c in POINT_COLUMNS:
        try:
            v = float(row[c])
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: column {c!r} is not a number: {row[c]!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"{path}:{line}: column {c!r} is not a finite number: {row[c]!r}")
        if c.endswith("_params") and v <= 0:
            raise ValueError(f"{path}:{line}: column {c!r} must be a parameter count > 0, got {row[c]!r}")
        if c == "collaboration_rate" and not 0 <= v <= 1:
            raise ValueError(f"{path}:{line}: column {c!r} must be a rate in [0, 1], got {row[c]!r}")
        out[c] = v
    return out


def read_topk(jsonl: Path, field: str = "s1_topk_probs") -> dict[int, np.ndarray]:
    """One top-K column of a trace file's Parquet side file, per record: ``{JSONL line: [T, K] array}``.

    System 2's lists are null where it was not evaluated; those rows become NaN (probabilities) or -1 (ids).
    Raises naming the side file when it is missing, unreadable (e.g. a killed run left no footer) or lacks
    the column.
    """
    import pyarrow.parquet as pq

    side = topk_path(jsonl)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: no top-K side file (record the traces with trace_topk=K)")
    try:
        table = pq.read_table(side, columns=["record", "token", field])
    except Exception as err:  # pyarrow raises several types for a torn or foreign file
        raise ValueError(f"{side}: not a readable top-K side file ({str(err).splitlines()[0]})") from None
    rec = table.column("record").to_numpy()
    tok = table.column("token").to_numpy()
    values = table.column(field).to_pylist()
    k = max((len(v) for v in values if v is not None), default=0)
    fill = np.nan if field.endswith("probs") else -1
    arr = np.asarray([v if v is not None else [fill] * k for v in values],
                     dtype=np.float32 if field.endswith("probs") else np.int32).reshape(len(values), k)
    out: dict[int, np.ndarray] = {}
    for r in np.unique(rec):
        rows = np.flatnonzero(rec == r)
        rows = rows[np.argsort(tok[rows])]
        if not np.array_equal(tok[rows], np.arange(len(rows))):
            raise ValueError(f"{side}: record {int(r)} has token indices other than 0..{len(rows) - 1}")
        out[int(r)] = arr[rows]
    return out
