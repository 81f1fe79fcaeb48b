"""The one trace reader: a trace file (JSONL, or Parquet with the same columns) as one columnar table.

Every path that reads traces (analyze, report, check, router train/compare, the run summary) calls
:func:`read_trace_file`, which returns a :class:`TraceTable`: per-token fields as flat numpy arrays ``[N]``
(only the ``columns`` asked for; every field is still checked) and per-record fields ``[R]``, with
``offsets [R+1]`` saying which tokens belong to which record. A list of per-record dicts with numpy arrays,
as the readers built before, costs ~1 kB per record beside the data; a 10 M-token study did not fit in memory.

JSONL is read by pyarrow's streaming JSON reader with an explicit schema (C++, a block at a time), and each
block's values are checked in numpy by the rules of :func:`schema.check_record`. A file those vectorized rules
or the explicit schema cannot take (a bad record, a bool written as 0/1, a blank line) is read again record
by record by the exact path (:func:`schema.trace_from_json`), which raises naming the line and field, or
reads the file as the rules allow. A torn final line (a killed writer) is skipped with a warning by both
paths (:mod:`.jsonl`'s rule), so a killed run's file reads every finished batch.

Parquet traces (``*.parquet``, one row per record, the JSONL record's fields as columns, token fields as
lists; :func:`write_parquet`) are read as one, with the same checks.

Torch-free (numpy, pyarrow): the analysis layer reads traces without torch.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.core.jsonl import read_jsonl
from fsgen_eval.core.schema import (COUNTERS, FIELD_DTYPES, OPTIONAL_FIELDS, SCHEMA_VERSION, TOKEN_FIELDS,
                                    trace_from_json)

log = logging.getLogger("fsgen_eval")

# per-record fields the table keeps (a record's other keys, such as prompt_hash, are not read)
STRING_FIELDS: tuple[str, ...] = ("run_id", "task", "request_type")
RECORD_FIELDS: tuple[str, ...] = (*STRING_FIELDS, "doc_id", *COUNTERS)
# pyarrow's JSON block: bounds the reader's working memory (pyarrow's parse of an 8 MiB block of trace
# records peaked at ~200 MiB more than a 1 MiB block, for no measurable speed)
BLOCK_BYTES = 1 << 20
_EPS = 1e-5  # values are written rounded to 6 digits (schema._check_value's tolerance)
_PROB_FIELDS = ("s1_top1_prob", "s1_margin", "s2_top1_prob", "s2_margin")
_FLAG_FIELDS = ("llm_called", "handoff", "accepted", "base_handoff")


@dataclass
class TraceTable:
    """Trace records as columns. ``offsets`` [R+1]: record ``i`` holds tokens ``offsets[i]:offsets[i+1]``;
    ``tokens``: field -> [N] (dtypes of ``schema.FIELD_DTYPES``; the fields read); ``records``: field -> [R]
    (strings as object arrays, ``None`` where absent; counters as int64); ``line`` [R]: the record's 0-based
    line in its file (the top-K side file's ``record`` key); ``file`` [R]: index into ``files``."""

    offsets: np.ndarray
    tokens: dict[str, np.ndarray]
    records: dict[str, np.ndarray]
    line: np.ndarray
    file: np.ndarray
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        """[R] tokens per record."""
        return np.diff(self.offsets)

    def record_index(self) -> np.ndarray:
        """[N] the record of each token."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def position(self) -> np.ndarray:
        """[N] each token's index within its record (tokens generated before it)."""
        return np.arange(self.n_tokens, dtype=np.int64) - np.repeat(self.offsets[:-1], self.lengths)

    def per_record_sum(self, name: str, block_tokens: int = 1 << 16) -> np.ndarray:
        """[R] sum of token field ``name`` over each record. Integers and flags are summed a block of records
        (about ``block_tokens`` tokens) at a time: one [N] int64 running sum took 80 MB at 10 M tokens, twice
        over with its differences; floats keep the one running sum (a blockwise one would round differently)."""
        v = self.tokens[name]
        if v.dtype.kind not in "biu":
            c = np.concatenate([[0], np.cumsum(v, dtype=np.float64)])
            return c[self.offsets[1:]] - c[self.offsets[:-1]]
        out = np.empty(len(self), np.int64)
        starts = record_blocks(self.offsets, block_tokens)
        for a, b in zip(starts[:-1], starts[1:]):
            lo = self.offsets[a]
            c = np.concatenate([[0], np.cumsum(v[lo:self.offsets[b]], dtype=np.int64)])
            local = self.offsets[a:b + 1] - lo
            out[a:b] = c[local[1:]] - c[local[:-1]]
        return out

    def trace(self, i: int) -> dict[str, np.ndarray]:
        """Record ``i``'s per-token arrays (views, ``[T_i]``)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {k: v[a:b] for k, v in self.tokens.items()}

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Record ``i`` as the readers gave it before: its fields, its token fields, and ``trace`` (the token
        fields as a mapping)."""
        trace = self.trace(i)
        return {**{k: _item(v[i]) for k, v in self.records.items()}, **trace, "trace": trace}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def get(self, name: str) -> np.ndarray:
        """[R] per-record field ``name`` (``None`` everywhere when no record has it)."""
        return self.records.get(name, object_column(len(self), None))

    def select(self, keep: np.ndarray) -> "TraceTable":
        """The records where ``keep`` [R] (bool) is true, in order (this table itself when every record is:
        tables are not changed in place, and a 10 M-token copy costs ~150 MB)."""
        keep = np.asarray(keep, bool)
        if keep.all():
            return self
        lengths = self.lengths[keep]
        tok = np.repeat(keep, self.lengths)
        return TraceTable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                          {k: v[tok] for k, v in self.tokens.items()}, {k: v[keep] for k, v in self.records.items()},
                          self.line[keep], self.file[keep], self.files)

    def with_record_field(self, name: str, value: Any) -> "TraceTable":
        """A copy (arrays shared) whose every record has ``name`` = ``value``."""
        col = object_column(len(self), value)
        return TraceTable(self.offsets, self.tokens, {**self.records, name: col}, self.line, self.file, self.files)


def record_blocks(offsets: np.ndarray, chunk_tokens: int) -> list[int]:
    """Record indices cutting a table of ``offsets`` [R+1] into blocks of about ``chunk_tokens`` tokens (at least
    one record each): bounded working memory for per-token passes."""
    cuts = np.searchsorted(offsets, np.arange(chunk_tokens, int(offsets[-1]), chunk_tokens), side="right") - 1
    return sorted({0, len(offsets) - 1, *[int(c) for c in cuts if 0 < c < len(offsets) - 1]})


def object_column(n: int, value: Any) -> np.ndarray:
    """[n] object array whose every cell is ``value`` itself: ``np.full`` stores a new copy of a string per
    cell (a label on 2.5 M records took 300 MB)."""
    col = np.empty(n, dtype=object)
    col.fill(value)
    return col


def _item(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def concat(tables: Sequence[TraceTable], columns: Sequence[str] | None = None) -> TraceTable:
    """The records of several tables, in order (token fields: those every table holds, or ``columns``)."""
    if not tables:
        return empty_table(columns or TOKEN_FIELDS)
    if len(tables) == 1:
        return tables[0]
    names = [k for k in tables[0].tokens if all(k in t.tokens for t in tables)]
    rec_names = list(dict.fromkeys(k for t in tables for k in t.records))
    lengths = np.concatenate([t.lengths for t in tables])
    files: list[str] = []
    file_idx = []
    for t in tables:
        file_idx.append(t.file + len(files))
        files += t.files
    return TraceTable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                      {k: np.concatenate([t.tokens[k] for t in tables]) for k in names},
                      {k: np.concatenate([t.get(k) for t in tables]) for k in rec_names},
                      np.concatenate([t.line for t in tables]), np.concatenate(file_idx), files)


def empty_table(columns: Sequence[str] = TOKEN_FIELDS) -> TraceTable:
    """A table of no record."""
    return TraceTable(np.zeros(1, np.int64), {k: np.zeros(0, FIELD_DTYPES[k]) for k in columns}, {},
                      np.zeros(0, np.int64), np.zeros(0, np.int64), [])


def as_table(traces: TraceTable | Sequence[Mapping[str, Any]]) -> TraceTable:
    """``traces`` as a table: a table as it is; per-generation traces (field -> [T_i], as the engine and
    the tests build them) concatenated, the fields every one holds."""
    if isinstance(traces, TraceTable):
        return traces
    traces = list(traces)
    if not traces:
        return empty_table(())
    names = [k for k in traces[0] if k in FIELD_DTYPES and all(t.get(k) is not None for t in traces)]
    lengths = [len(t["handoff"]) for t in traces]
    toks = {k: np.concatenate([np.asarray(t[k]) for t in traces]).astype(FIELD_DTYPES[k]) for k in names}
    return TraceTable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), toks, {},
                      np.arange(len(traces), dtype=np.int64), np.zeros(len(traces), np.int64), [])


# ----------------------------------------------------------------------------------------------- reading


def read_trace_file(path: Path, columns: Sequence[str] | None = None) -> TraceTable:
    """One trace file as a table holding token fields ``columns`` (default: all of ``schema.TOKEN_FIELDS``).

    Every field of every record is checked whatever ``columns`` holds. Raises naming the file (and line and
    field) for a missing or empty file, a line that is not a JSON object, or a record
    :func:`schema.check_record` refuses; a torn final line is skipped with a warning."""
    path = Path(path)
    cols = tuple(TOKEN_FIELDS if columns is None else columns)
    unknown = [c for c in cols if c not in FIELD_DTYPES]
    if unknown:
        raise ValueError(f"unknown trace field(s) {', '.join(unknown)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        table = _read_parquet(path, cols)
    else:
        try:
            table = _read_jsonl_fast(path, cols)
        except _Fallback:  # the exact path names the line and field, or reads what the fast path could not
            table = _read_jsonl_exact(path, cols)
    check_table(path, table)
    return table


def check_table(path: Path, table: TraceTable) -> None:
    """Whole-file rules, after the per-record ones, whichever path read the file (the place for rules over
    several records, such as duplicates): ``ValueError`` naming the file."""
    if len(table) == 0:
        raise ValueError(f"{path}: trace file is empty")


class _Fallback(Exception):
    """The fast path cannot take this file; read it record by record."""


def _arrow_schema() -> Any:
    import pyarrow as pa

    kind = {np.int64: pa.int64(), np.int8: pa.int64(), np.bool_: pa.bool_(), np.float32: pa.float64()}
    token = [(k, pa.list_(pa.bool_() if k in _FLAG_FIELDS else kind[FIELD_DTYPES[k]])) for k in TOKEN_FIELDS]
    meta = [("schema_version", pa.int64())] + [(k, pa.string()) for k in STRING_FIELDS] + \
        [(k, pa.int64()) for k in ("doc_id", *COUNTERS)]
    return pa.schema(meta + token)


def _scan_lines(path: Path) -> tuple[int, int | None]:
    """(the number of records: lines, a torn final line left out; the byte length of the part before a torn
    final line, or ``None`` when there is none). Raises :class:`_Fallback` for a blank line, after which
    record numbers would no longer be line numbers."""
    size = path.stat().st_size
    newlines, last, prev = 0, b"", b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            newlines += chunk.count(b"\n")
            if b"\n\n" in chunk or (prev.endswith(b"\n") and chunk.startswith(b"\n")):
                raise _Fallback  # a blank line: pyarrow skips it, and record numbers would no longer be lines
            prev, last = chunk[-1:], chunk
    if size == 0:
        return 0, None
    if last.endswith(b"\n"):
        return newlines, None
    with open(path, "rb") as fh:  # the unterminated final line: a record, or what a kill left
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    cut = tail.rfind(b"\n")
    if cut < 0 and size > len(tail):
        raise _Fallback  # a final line over 1 MiB: let the exact path judge it
    try:
        json.loads(tail[cut + 1:])
        return newlines + 1, None
    except ValueError:
        log.warning("%s:%d: torn final line (the writer was killed mid-write?); skipped", path, newlines + 1)
        return newlines, size - len(tail) + cut + 1


class _Prefix:
    """The first ``limit`` bytes of a file, as a readable stream (the part before a torn final line)."""

    def __init__(self, path: Path, limit: int):
        self._fh, self._left = open(path, "rb"), limit
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._fh.read(n)
        self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._fh.close()
        self.closed = True


def _read_jsonl_fast(path: Path, cols: tuple[str, ...]) -> TraceTable:
    import pyarrow as pa
    import pyarrow.json as pj

    n_lines, limit = _scan_lines(path)
    if n_lines == 0:
        return empty_table(cols)
    source: Any = str(path) if limit is None else pa.PythonFile(_Prefix(path, limit), mode="r")
    opts = pj.ParseOptions(explicit_schema=_arrow_schema(), unexpected_field_behavior="ignore")
    parts = []
    try:
        reader = pj.open_json(source, read_options=pj.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
                              parse_options=opts)
        for batch in reader:
            parts.append(_from_arrow(batch, cols))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise _Fallback from None
    table = _concat_consuming(parts, cols)
    pa.default_memory_pool().release_unused()  # the parser's blocks: give them back before the analysis
    if len(table) != n_lines:
        raise _Fallback  # lines pyarrow skipped (blank ones): record numbers would not be lines
    table.line = np.arange(len(table), dtype=np.int64)
    table.file = np.zeros(len(table), np.int64)
    table.files = [str(path)]
    return table


def _concat_consuming(parts: list[TraceTable], cols: tuple[str, ...]) -> TraceTable:
    """:func:`concat` of one file's blocks, a column at a time, dropping each block's column once copied: the
    peak is the table and one column's blocks, not two tables."""
    if not parts:
        return empty_table(cols)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate([p.lengths for p in parts]))]).astype(np.int64)
    records = {}
    for k in dict.fromkeys(k for p in parts for k in p.records):  # a field at a time, each block's dropped
        records[k] = np.concatenate([p.records.pop(k) if k in p.records else p.get(k) for p in parts])
    tokens = {}
    for k in cols:
        tokens[k] = np.concatenate([p.tokens.pop(k) for p in parts])
    n = len(offsets) - 1
    return TraceTable(offsets, tokens, records, np.zeros(n, np.int64), np.zeros(n, np.int64), [])


def _read_parquet(path: Path, cols: tuple[str, ...]) -> TraceTable:
    """A Parquet trace file a column at a time, each row group's piece checked and copied into the column's
    final array (allocated once): the peak is the table and one row group's column, and no long-lived piece
    sits between freed ones (row-major batches kept every batch's pieces until a last concatenation, which
    left ~400 MB of freed-but-held heap at 10 M tokens)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        have = set(pq.read_schema(str(path)).names)
        # no pre-buffering: pyarrow otherwise holds every row group read so far until the file is closed
        # (the whole file's bytes: 141 MiB of a 144 MiB file at 4 M tokens); strings read as dictionaries
        pf = pq.ParquetFile(str(path), pre_buffer=False, buffer_size=1 << 20,
                            read_dictionary=[k for k in STRING_FIELDS if k in have])
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: not a readable Parquet trace file ({str(err).splitlines()[0]})") from None
    missing = [k for k in TOKEN_FIELDS if k not in have and k not in OPTIONAL_FIELDS]
    if missing:
        raise ValueError(f"{path}: trace file lacks column(s) {', '.join(missing)}")
    groups = _ParquetGroups(pf)
    try:
        table = _parquet_table(groups, cols, have)
    except _Fallback:
        raise ValueError(f"{path}: {_first_problem(pf, groups)}") from None
    finally:
        pf.close()
    pa.default_memory_pool().release_unused()
    table.files = [str(path)]
    return table


class _ParquetGroups:
    """The row groups of a Parquet trace file, read a column at a time; ``bad``: the group that failed a rule."""

    def __init__(self, pf: Any):
        self.pf = pf
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)  # [G+1] records
        self.bad: int | None = None

    def __len__(self) -> int:
        return len(self.starts) - 1

    def column(self, g: int, name: str) -> Any:
        """Column ``name`` of row group ``g`` as one Arrow array (``bad`` set to ``g`` until it is checked)."""
        self.bad = g
        return self.pf.read_row_group(g, columns=[name]).column(0).combine_chunks()


def _parquet_table(groups: _ParquetGroups, cols: tuple[str, ...], have: set[str]) -> TraceTable:
    """Every column of the file checked (row group by row group), the token fields ``cols`` and the record
    fields kept; raises :class:`_Fallback` at the first rule broken (``groups.bad`` says where)."""
    n = int(groups.starts[-1])
    if "schema_version" in have:
        for g in range(len(groups)):
            _check_version(groups.column(g, "schema_version"))
    lengths = np.empty(n, np.int64)  # tokens per record, from token_id; every other list column must match
    for g in range(len(groups)):
        col = groups.column(g, "token_id")
        if col.null_count:
            raise _Fallback
        lengths[groups.starts[g]:groups.starts[g + 1]] = _list_lengths(col)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = {}
    for k in TOKEN_FIELDS:
        out = np.empty(int(offsets[-1]), FIELD_DTYPES[k]) if k in cols else None
        for g in range(len(groups)):
            a, b = groups.starts[g], groups.starts[g + 1]
            col = groups.column(g, k) if k in have else None
            values = _token_column(k, col, lengths[a:b], int(offsets[b] - offsets[a]))
            if out is not None:
                out[offsets[a]:offsets[b]] = values
            del values, col
        if out is not None:
            tokens[k] = out
    records = {}
    for k in RECORD_FIELDS:
        if k not in have:
            if k in COUNTERS:
                records[k] = np.zeros(n, np.int64)
            continue
        pieces, held = [], False  # held: some record has the field (a string field none holds is left out)
        for g in range(len(groups)):
            col = groups.column(g, k)
            _check_record_field(k, col)
            pieces.append(_record_column(k, col))
            held |= col.null_count < len(col)
        if k in COUNTERS or held:
            records[k] = _join_record_pieces(pieces, n)
    groups.bad = None
    return TraceTable(offsets, tokens, records, np.arange(n, dtype=np.int64), np.zeros(n, np.int64), [])


def _join_record_pieces(pieces: list[np.ndarray], n: int) -> np.ndarray:
    """One per-record column [n] from its row groups' pieces (object when any piece is: a ``doc_id`` missing
    somewhere), written into one array allocated once."""
    dtype = object if any(p.dtype == object for p in pieces) else (pieces[0].dtype if pieces else np.int64)
    out = np.empty(n, dtype)
    at = 0
    for p in pieces:
        out[at:at + len(p)] = p  # into an object column: Python ints, as astype(object) gives
        at += len(p)
    return out


def _list_lengths(col: Any) -> np.ndarray:
    """[R] the lengths of an Arrow list array's lists (a slice's too)."""
    return np.diff(np.asarray(col.offsets, dtype=np.int64))


def _check_version(col: Any) -> None:
    import pyarrow.compute as pc

    if len(col) and pc.any(pc.not_equal(col, SCHEMA_VERSION)).as_py():
        raise _Fallback


def _token_column(k: str, col: Any, lengths: np.ndarray, n_tokens: int) -> np.ndarray:
    """Token field ``k``'s checked values [n_tokens] from list column ``col`` (``None``: the file has no such
    column) of the records of ``lengths`` [R]: the field's default where no record holds an optional field."""
    if col is None or col.null_count == len(col):
        if k not in OPTIONAL_FIELDS:
            if col is None or len(col):
                raise _Fallback  # a missing or null field
            return np.zeros(0, FIELD_DTYPES[k])
        return np.full(n_tokens, OPTIONAL_FIELDS[k], FIELD_DTYPES[k])
    if col.null_count or not np.array_equal(_list_lengths(col), lengths):
        raise _Fallback
    return _values(k, col.flatten())


def _check_record_field(k: str, col: Any) -> None:
    """check_record's request rules: ``doc_id`` and counters are integers >= 0 (the exact path names a bad one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if k in ("doc_id", *COUNTERS) and col.null_count < len(col) and (
            not pa.types.is_integer(col.type) or pc.min(col).as_py() < 0):
        raise _Fallback


def _first_problem(pf: Any, groups: _ParquetGroups) -> str:
    """What :func:`schema.check_record` says of the first bad record of the row group that failed a rule
    (numbered from 0 in the file)."""
    g = groups.bad if groups.bad is not None else 0
    first = int(groups.starts[g])
    for i, rec in enumerate(pf.read_row_group(g).to_pylist()):
        try:
            trace_from_json({k: v for k, v in rec.items() if v is not None or k not in OPTIONAL_FIELDS})
        except ValueError as err:
            return f"record {first + i}: {err}"
    return "a value out of its range"


def _from_arrow(batch: Any, cols: tuple[str, ...]) -> TraceTable:
    """Check one Arrow batch of records (the JSON reader's) by the rules of ``schema.check_record`` (all fields)
    and keep ``cols``; raises :class:`_Fallback` where a rule fails (the exact path then names it)."""
    names = batch.schema.names
    if "schema_version" in names:
        _check_version(batch.column("schema_version"))
    if batch.column("token_id").null_count if "token_id" in names else True:
        raise _Fallback
    lengths = _list_lengths(batch.column("token_id"))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = {}
    for k in TOKEN_FIELDS:
        values = _token_column(k, batch.column(k) if k in names else None, lengths, int(offsets[-1]))
        if k in cols:
            tokens[k] = values
    for k in ("doc_id", *COUNTERS):
        if k in names:
            _check_record_field(k, batch.column(k))
    records = {k: _record_column(k, batch.column(k) if k in names else None) for k in RECORD_FIELDS
               if k in COUNTERS or (k in names and batch.column(k).null_count < batch.num_rows)}
    n = len(lengths)
    return TraceTable(offsets, tokens, records, np.zeros(n, np.int64), np.zeros(n, np.int64), [])


def _values(k: str, flat: Any) -> np.ndarray:
    """One token field's flat Arrow values as its numpy dtype, after the range checks of ``check_record``."""
    nulls = np.asarray(flat.is_null(), bool) if flat.null_count else None
    if k in _FLAG_FIELDS:
        v = np.asarray(flat.fill_null(False), bool)
        if k == "llm_called" and nulls is not None:
            raise _Fallback
        if k in ("accepted", "base_handoff"):
            out = v.astype(np.int8)
            if nulls is not None:
                out[nulls] = -1
            return out
        return v
    if k in ("token_id", "source"):
        if nulls is not None:
            raise _Fallback
        v = np.asarray(flat, np.int64)
        if (k == "token_id" and ((v < 0) | (v >= 2**31)).any()) or (k == "source" and ((v != 1) & (v != 2)).any()):
            raise _Fallback
        return v.astype(FIELD_DTYPES[k])
    # in the column's own type (float32 in Parquet, float64 from JSON), bounds compared in float64
    v = flat.to_numpy(zero_copy_only=False) if nulls is None else np.asarray(flat.fill_null(math.nan))
    finite = np.isfinite(v)
    if not (finite | (nulls if nulls is not None else False)).all():
        raise _Fallback
    present = v if nulls is None else v[finite]
    if k in _PROB_FIELDS and ((present < np.float64(-_EPS)) | (present > np.float64(1 + _EPS))).any():
        raise _Fallback
    if k.endswith("_entropy") and (present < np.float64(-_EPS)).any():
        raise _Fallback
    return v.astype(np.float32, copy=False)


def _record_column(k: str, col: Any) -> np.ndarray:
    """A per-record field as numpy: strings as an object array sharing each distinct string."""
    if k in STRING_FIELDS:
        enc = col.dictionary_encode()  # a few distinct strings over many records: share them
        values = np.empty(len(enc.dictionary) + 1, dtype=object)
        values[:-1] = enc.dictionary.to_pylist()
        return values[np.asarray(enc.indices.fill_null(len(values) - 1), np.int64)]
    if k in COUNTERS:  # 0 where absent, as the summary counts them
        return np.zeros(len(col), np.int64) if col is None else np.asarray(col.fill_null(0), np.int64)
    if not col.null_count:  # doc_id: int64 when every record has one (a Python int each costs 36 bytes more)
        return np.asarray(col, np.int64)
    return np.asarray(col.to_pylist(), dtype=object)  # an int, None where absent


def _read_jsonl_exact(path: Path, cols: tuple[str, ...]) -> TraceTable:
    """Record by record (:func:`schema.trace_from_json`), a chunk of records at a time into columns."""
    chunks: list[TraceTable] = []
    buf: list[tuple[int, Mapping[str, Any], dict[str, np.ndarray]]] = []
    for n, obj in read_jsonl(path, strict=True):
        try:
            trace = trace_from_json(obj)
        except ValueError as err:
            raise ValueError(f"{path}:{n}: {err}") from None
        buf.append((n - 1, {k: obj[k] for k in RECORD_FIELDS if k in obj},
                    {"_len": len(trace["token_id"]), **{k: trace[k] for k in cols}}))
        if len(buf) >= 4096:
            chunks.append(_chunk(buf, cols))
            buf = []
    if buf:
        chunks.append(_chunk(buf, cols))
    table = concat(chunks, cols) if chunks else empty_table(cols)
    table.file = np.zeros(len(table), np.int64)
    table.files = [str(path)]
    return table


def _chunk(buf: list[tuple[int, Mapping[str, Any], dict[str, Any]]], cols: tuple[str, ...]) -> TraceTable:
    lengths = [t["_len"] for _, _, t in buf]
    records: dict[str, np.ndarray] = {}
    for k in RECORD_FIELDS:
        if k in COUNTERS:
            records[k] = np.array([int(meta.get(k) or 0) for _, meta, _ in buf], np.int64)
        elif any(meta.get(k) is not None for _, meta, _ in buf):
            col = np.empty(len(buf), dtype=object)
            col[:] = [meta.get(k) for _, meta, _ in buf]
            records[k] = col
    return TraceTable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                      {k: np.concatenate([t[k] for _, _, t in buf]) for k in cols}, records,
                      np.array([line for line, _, _ in buf], np.int64), np.zeros(len(buf), np.int64), [])


# ----------------------------------------------------------------------------------------------- Parquet


def to_arrow(table: TraceTable) -> Any:
    """A table as Arrow record rows (one per record; token fields as lists, NaN and -1 as null, as in JSON)."""
    import pyarrow as pa

    offsets = pa.array(table.offsets.astype(np.int32) if table.n_tokens < 2**31 else table.offsets)
    cols, names = [], []
    for k, v in table.tokens.items():
        if k in ("accepted", "base_handoff"):
            flat = pa.array(v == 1, mask=v < 0)
        elif FIELD_DTYPES[k] is np.float32:
            flat = pa.array(v, mask=np.isnan(v))
        else:
            flat = pa.array(v.astype(np.int64) if k == "source" else v)
        cols.append(pa.ListArray.from_arrays(offsets, flat) if offsets.type == pa.int32()
                    else pa.LargeListArray.from_arrays(offsets, flat))
        names.append(k)
    for k, v in table.records.items():
        cols.append(pa.array(v.tolist() if v.dtype == object else v))
        names.append(k)
    return pa.table(cols, names=names)


def write_parquet(table: TraceTable, out: Path, records_per_group: int = 1 << 16) -> Path:
    """Write a table as a Parquet trace file (one row per record, one row group per ``records_per_group``
    records), beside ``out`` first and renamed when complete, so a crash never leaves half a file."""
    import pyarrow.parquet as pq

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    arrow = to_arrow(table)
    with pq.ParquetWriter(str(tmp), arrow.schema, compression="zstd") as writer:
        for start in range(0, max(len(table), 1), records_per_group):
            writer.write_table(arrow.slice(start, records_per_group))
    tmp.replace(out)
    return out
