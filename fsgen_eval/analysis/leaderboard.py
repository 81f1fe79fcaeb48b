"""The leaderboard: per task, the runs ranked by one column, every column with its 95 % interval and its best
value marked.

A row is one run on one task (a pair and a configuration). Its columns: lm-eval's metrics (a proportion —
a value in [0, 1] with lm-eval's sample count — gets a Wilson interval, which stays in [0, 1]; any other
metric ± 1.96 stderr), ``collaboration_rate`` and ``llm_call_rate`` (intervals with requests as clusters, from
the traces: :func:`fsgen_eval.analysis.gate.ratio_ci`, clipped to [0, 1]), in a table with a proxy-tuning run also
``base_collaboration_rate`` (FS-GEN's proxy count, against the untuned base's greedy token, the same way), ``acceptance_rate`` (accepted /
drafted, the same way, for speculative runs), ``mean_acceptance_length`` and ``tokens_per_second`` (no
interval: one number per run). With fewer than :data:`MIN_REQUESTS` requests a cell says so instead of
printing an interval.

Each column knows which way is better, but a best mark (★) is only given where "best" means something — a
task metric, the acceptance rate and length — and only to a strict best: never to a tie or a constant column.
A lower collaboration or call rate is not a quality ranking, and tokens/s of runs on different machines or
batch sizes do not compare, so those columns are ranked on request but never starred. System 1 alone never
calls System 2, so its zero rates are not ranked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fsgen_eval.analysis.gate import Z95, ratio_ci
from fsgen_eval.core.traces_io import TraceTable

Interval = tuple[float, float] | None
MIN_REQUESTS = 5  # fewer requests than this: no interval (a 3-request clustered interval is noise or zero-width)


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion p over n trials: stays in [0, 1], never zero-width for 0 < n."""
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(max(0.0, mid - half)), float(min(1.0, mid + half))


@dataclass(frozen=True)
class Column:
    """A numeric leaderboard column: ``key`` in a row (``metric:<name>`` for lm-eval metrics), its header,
    ``better`` ("low" / "high") and the digits it is shown with."""

    key: str
    title: str
    better: str
    digits: int = 4
    starred: bool = True  # whether a strict best in this column means something and is marked

    def value(self, row: dict[str, Any]) -> tuple[float | None, Interval]:
        """(value, 95 % interval or None) of this column in ``row``: a metric in [0, 1] with a sample count
        of at least :data:`MIN_REQUESTS` gets a Wilson interval, another metric ± 1.96 stderr."""
        if self.key.startswith("metric:"):
            v = row["metrics"].get(self.key[7:])
            if v is None:
                return None, None
            value, se = v
            n = row.get("n_requests")
            if n is not None and n < MIN_REQUESTS:
                return value, None
            if n is not None and 0.0 <= value <= 1.0:
                return value, wilson(value, n)
            return value, None if se is None else (value - Z95 * se, value + Z95 * se)
        v = row.get(self.key)
        return (None if v is None else float(v)), row.get("ci", {}).get(self.key)

    def no_interval_note(self, row: dict[str, Any]) -> str | None:
        """Why a value has no interval: too few requests (``None`` when it has one or needs none)."""
        n = row.get("n_requests")
        if n is not None and n < MIN_REQUESTS and (self.key.startswith("metric:") or self.key in INTERVAL_RATES):
            return f"n={n}: too few requests for an interval"
        return None

    def ranks(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` takes part in this column's ranking and best mark (System 1 alone's rates do not)."""
        return not (self.key in NO_SYSTEM2_COLUMNS and str(row.get("role")).startswith("System 1 alone"))


RATE_COLUMNS = (
    Column("collaboration_rate", "collaboration rate ↓", "low", starred=False),
    # proxy tuning's rate as FS-GEN defines it: handoffs against the untuned base's greedy token; shown only in a
    # table with a proxy row (every other method has none), beside collaboration_rate (against System 1's)
    Column("base_collaboration_rate", "base collaboration rate (FS-GEN's proxy count) ↓", "low", starred=False),
    Column("llm_call_rate", "LLM call rate ↓", "low", starred=False),
    Column("acceptance_rate", "acceptance rate ↑", "high"),
    Column("mean_acceptance_length", "acceptance length ↑", "high", 2),
    Column("tokens_per_second", "tokens/s ↑", "high", 1, starred=False),
)
INTERVAL_RATES = ("collaboration_rate", "base_collaboration_rate", "llm_call_rate", "acceptance_rate")
NO_SYSTEM2_COLUMNS = ("collaboration_rate", "base_collaboration_rate", "llm_call_rate")
OPTIONAL_COLUMNS = ("base_collaboration_rate",)  # a column only where some row of the table has a value
RANK_CHOICES = ("collaboration_rate", "base_collaboration_rate", "llm_call_rate", "acceptance_rate", "accuracy",
                "tokens_per_second")


@dataclass
class Table:
    """One task's leaderboard. ``rows`` are in rank order (ranked rows first); each row carries ``rank``
    (1-based, ``None`` when not ranked); ``best``: column key -> indices of the rows holding its best value."""

    task: str
    metrics: list[str]
    rows: list[dict[str, Any]]
    rank_by: str = "collaboration_rate"
    best: dict[str, list[int]] = field(default_factory=dict)

    @property
    def columns(self) -> list[Column]:
        """One column per metric (higher is better), then the rate columns (an :data:`OPTIONAL_COLUMNS` one only
        where a row has a value: ``base_collaboration_rate`` in a table with a proxy run)."""
        rates = [c for c in RATE_COLUMNS if c.key not in OPTIONAL_COLUMNS
                 or any(r.get(c.key) is not None for r in self.rows)]
        return [Column(f"metric:{m}", f"{m} ↑", "high") for m in self.metrics] + rates

    def column(self, key: str) -> Column:
        """The column keyed ``key`` (``metric:<name>`` or a rate); ``KeyError`` if there is none."""
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(key)


def rank_column(table_metrics: list[str], rank_by: str) -> str:
    """The column key ranking a task: a rate column, ``accuracy`` (the task's first metric) or a metric name
    (``exact_match,strict-match``). Raises naming the choices when the task has no such column."""
    if rank_by in RANK_CHOICES and rank_by != "accuracy":  # a rate column, ranked by its own key
        return rank_by
    if rank_by == "accuracy":
        if not table_metrics:
            raise ValueError("rank by accuracy: the task reports no metric")
        return f"metric:{table_metrics[0]}"
    if rank_by in table_metrics:
        return f"metric:{rank_by}"
    raise ValueError(f"cannot rank by {rank_by!r}: choose one of {', '.join(RANK_CHOICES)} or a metric "
                     f"({', '.join(table_metrics) or 'none reported'})")


def rank_table(table: Table, rank_by: str) -> Table:
    """Sort ``table.rows`` by ``rank_by`` (best first; rows without a value or not ranked last, unranked)
    and mark each column's best rows (ties: all of them)."""
    key = rank_column(table.metrics, rank_by)
    col = table.column(key)
    sign = 1.0 if col.better == "low" else -1.0

    def order(row: dict[str, Any]) -> tuple[int, float, str, str]:
        v, _ = col.value(row)
        ranked = v is not None and np.isfinite(v) and col.ranks(row)
        return (0, sign * v, row["pair"], row["config"]) if ranked else (1, 0.0, row["pair"], row["config"])

    rows = sorted(table.rows, key=order)
    for i, row in enumerate(rows):
        row["rank"] = i + 1 if order(row)[0] == 0 else None
    table.rows, table.rank_by = rows, key
    table.best = {c.key: best_rows(rows, c) for c in table.columns}
    return table


def best_rows(rows: list[dict[str, Any]], col: Column) -> list[int]:
    """The index of the row holding the column's strict best value (rounded as shown, so that a tie shown is a
    tie), as a list of one; empty for a column where best means nothing (``starred`` False), a tie, or fewer
    than two rows with a value."""
    vals = [(i, round(v, col.digits)) for i, r in enumerate(rows) if col.ranks(r)
            for v in [col.value(r)[0]] if v is not None and np.isfinite(v)]
    if not col.starred or len(vals) < 2:
        return []
    pick = min if col.better == "low" else max
    target = pick(v for _, v in vals)
    best = [i for i, v in vals if v == target]
    return best if len(best) == 1 else []


def trace_intervals(records: TraceTable) -> dict[str, Interval]:
    """95 % intervals of a run's rates on one task from its trace records (requests as clusters):
    ``collaboration_rate``, ``llm_call_rate`` and, where tokens were drafted, ``acceptance_rate``."""
    out: dict[str, Interval] = {}
    if len(records) < MIN_REQUESTS:
        return out
    n = records.lengths.astype(float)
    for key, fld in (("collaboration_rate", "handoff"), ("llm_call_rate", "llm_called")):
        out[key] = _clip01(ratio_ci(records.per_record_sum(fld).astype(float), n))
    if "base_handoff" in records.tokens and (records.tokens["base_handoff"] >= 0).any():
        # proxy tuning (FS-GEN's count against the untuned base): -1 marks a token without a base model
        out["base_collaboration_rate"] = _clip01(ratio_ci(_per_record_count(records, "base_handoff"), n))
    drafted = _counter(records, "drafted_tokens")
    if drafted.sum() > 0:
        out["acceptance_rate"] = _clip01(ratio_ci(_counter(records, "accepted_tokens"), drafted))
    return out


def _per_record_count(records: TraceTable, name: str) -> np.ndarray:
    """[R] per record, the tokens whose int8 flag ``name`` is 1 (-1, "not applicable", counts as 0)."""
    c = np.concatenate([[0], np.cumsum(records.tokens[name] == 1, dtype=np.int64)])
    return (c[records.offsets[1:]] - c[records.offsets[:-1]]).astype(float)


def _counter(records: TraceTable, name: str) -> np.ndarray:
    """[R] a speculative counter per record as floats (0 where absent)."""
    values = records.get(name)
    if values.dtype != object:  # the reader's int64 column: no Python number per record
        return values.astype(float)
    return np.array([float(v or 0) for v in values.tolist()])


def _clip01(ci: Interval) -> Interval:
    """A rate's interval cut to [0, 1], where a rate lives (the delta method's normal interval can leave it)."""
    return None if ci is None else (max(0.0, ci[0]), min(1.0, ci[1]))


def cell_text(col: Column, row: dict[str, Any]) -> str:
    """``0.1394 [0.1336, 0.1452]`` (value and interval, the column's digits), ``–`` when absent."""
    v, ci = col.value(row)
    if v is None:
        return "–"
    text = f"{v:.{col.digits}f}"
    note = col.no_interval_note(row)
    if note is not None:
        text += f" ({note})"
    elif ci is not None and all(np.isfinite(ci)):
        text += f" [{ci[0]:.{col.digits}f}, {ci[1]:.{col.digits}f}]"
    return text


def format_rows(table: Table, mark: Callable[[str], str]) -> list[list[tuple[str, float | str | None, bool]]]:
    """Per row, per displayed column: (text, sort value, is best); ``mark`` decorates a best cell's text."""
    out = []
    for i, row in enumerate(table.rows):
        cells: list[tuple[str, float | str | None, bool]] = [
            ("–" if row["rank"] is None else str(row["rank"]), row["rank"], False),
            (row["role"], row["role"], False), (row["pair"], row["pair"], False), (row["config"], row["config"], False)]
        for col in table.columns:
            best = i in table.best.get(col.key, [])
            text = cell_text(col, row)
            cells.append((mark(text) if best else text, col.value(row)[0], best))
        out.append(cells)
    return out


def header(table: Table) -> list[str]:
    """The column titles of a task's leaderboard, the rank column first."""
    rank_title = table.column(table.rank_by).title.rstrip(" ↓↑")
    return [f"rank ({rank_title})", "role", "pair", "configuration", *(c.title for c in table.columns)]
