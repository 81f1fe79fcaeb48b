"""CI regression gate: compare a results folder with a baseline JSON.

Per (pair, configuration, task) the gate compares the collaboration rate, the large-model call rate and each
accuracy metric lm-eval reports. A value *fails* when it moved by more than its absolute tolerance and, where
a confidence interval is available, the baseline lies outside the current run's 95% interval too — so that a
small ``--limit`` run does not fail on sampling noise its own data can measure. Intervals come from the
per-request rates in the traces (a cluster-robust interval of a ratio of sums) and, for accuracy, from
lm-eval's ``<metric>_stderr``. A baseline entry missing from the results fails; a new entry is reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.analysis.files import RATE_COLUMNS, Run, is_metric, read_json, run_records

RATES = ("collaboration_rate", "llm_call_rate")
DEFAULT_TOLERANCES = {"collaboration_rate": 0.02, "llm_call_rate": 0.02, "accuracy": 0.02}
Z95 = 1.959964


def entry_key(run: Run, task: str) -> str:
    """The baseline key of one (run, task): ``pair | method/router[@threshold] | task``."""
    return f"{run.pair} | {run.label} | {task}"


def ratio_ci(num: np.ndarray, den: np.ndarray, z: float = Z95) -> tuple[float, float] | None:
    """Interval for sum(num)/sum(den) over m requests (num, den: [m]), treating requests as clusters
    (delta method); ``None`` with fewer than two requests or no tokens."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    m, total = len(den), den.sum()
    if m < 2 or total == 0:
        return None
    r = num.sum() / total
    se = math.sqrt(np.sum((num - r * den) ** 2) / (m * (m - 1))) * m / total
    return (r - z * se, r + z * se)


def _stderr(task_results: dict[str, Any], metric: str) -> float | None:
    name, _, filt = metric.partition(",")
    se = task_results.get(f"{name}_stderr,{filt}" if filt else f"{name}_stderr")
    return float(se) if isinstance(se, (int, float)) and math.isfinite(se) else None


def run_entries(run: Run) -> dict[str, dict[str, Any]]:
    """Baseline-shaped entries of one run: key -> {rates, ``metrics``, ``ci`` (value -> [lo, hi])}."""
    records = run_records(run, RATE_COLUMNS)
    tasks = records.get("task")
    out = {}
    for task, res in run.results.items():
        summary = run.fsgen.task_summary(task)
        entry: dict[str, Any] = {k: summary.get(k) for k in RATES}
        entry["metrics"] = {m: float(v) for m, v in res.items() if is_metric(m, v)}
        ci: dict[str, list[float]] = {}
        for m in entry["metrics"]:
            se = _stderr(res, m)
            if se is not None:
                ci[m] = [entry["metrics"][m] - Z95 * se, entry["metrics"][m] + Z95 * se]
        mine = records.select(tasks == task)
        n = mine.lengths.astype(float)
        for rate, field in (("collaboration_rate", "handoff"), ("llm_call_rate", "llm_called")):
            interval = ratio_ci(mine.per_record_sum(field).astype(float), n) if len(mine) else None
            if interval:
                ci[rate] = list(interval)
        entry["ci"] = ci
        out[entry_key(run, task)] = entry
    return out


def collect(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Every run's gate entries (rates, accuracies and their intervals), keyed by :func:`entry_key`; two runs
    with one key (they differ only where the key does not look: dtype, few-shot count) are refused, naming
    both, since one would silently stand for the other."""
    out: dict[str, dict[str, Any]] = {}
    owner: dict[str, Path] = {}
    for run in runs:
        for key, entry in run_entries(run).items():
            if key in owner:
                raise ValueError(f"{run.path}: its gate entry {key!r} is also {owner[key]}'s; check them "
                                 "one at a time")
            out[key], owner[key] = entry, run.path
    return out


def write_baseline(path: Path, entries: dict[str, dict[str, Any]], tolerances: dict[str, float],
                   intervals: bool = True) -> None:
    """``intervals=False`` records that this baseline is judged by the tolerances alone (see :func:`compare`).

    Missing parent folders are created (``--baseline ci/fsgen-baseline.json`` in a fresh clone); the file is
    written beside itself and renamed, so a crash never leaves half a baseline.
    """
    clean = {k: {kk: vv for kk, vv in v.items() if kk != "ci"} for k, v in entries.items()}
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--baseline {path} is a folder; name a .json file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"fsgen_baseline": 1, "tolerances": tolerances, "intervals": intervals,
                               "entries": clean}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_baseline(path: Path) -> dict[str, Any]:
    """A baseline JSON (``entries``, ``tolerances``, ``intervals``); ``ValueError`` naming the file if it is not one."""
    if not Path(path).exists():
        raise FileNotFoundError(f"baseline {path}: no such file; record one with --update-baseline")
    obj = read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("entries"), dict):
        raise ValueError(f"{path}: not a baseline file (no 'entries' object; write one with --update-baseline)")
    return obj


@dataclass
class Check:
    """One compared value: ``status`` is ``ok``, ``noise`` (beyond tolerance, baseline inside the current
    interval), ``FAIL``, ``missing`` (in the baseline, not in the results) or ``new``."""

    key: str
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    ci: tuple[float, float] | None
    status: str

    @property
    def delta(self) -> float | None:
        """Current minus baseline value, ``None`` where either is missing."""
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def failed(self) -> bool:
        """A regression or an entry missing from the current results."""
        return self.status in ("FAIL", "missing")


def _judge(key: str, metric: str, base: float | None, cur: float | None, tol: float, ci: Any) -> Check:
    interval = tuple(ci) if ci else None  # None: no interval, so a move beyond tolerance fails
    if base is None and cur is None:
        return Check(key, metric, base, cur, tol, interval, "ok")
    if base is None or cur is None:
        return Check(key, metric, base, cur, tol, interval, "missing" if cur is None else "new")
    if abs(cur - base) <= tol + 1e-12:
        return Check(key, metric, base, cur, tol, interval, "ok")
    inside = interval is not None and interval[0] <= base <= interval[1]
    return Check(key, metric, base, cur, tol, interval, "noise" if inside else "FAIL")


def compare(baseline: dict[str, Any], current: dict[str, dict[str, Any]],
            tolerances: dict[str, float], intervals: bool = True) -> list[Check]:
    """Every value of every baseline entry against the current entries (and the current-only entries).

    ``intervals=False`` judges by the tolerances alone: when the documents are fixed and decoding is
    deterministic (greedy, fp32), a rerun differs only by float noise, so the run's sampling interval (about
    +-0.1 on the collaboration rate of 20 GSM8K problems) would excuse real changes of the decoding."""
    checks: list[Check] = []
    for key, base in baseline["entries"].items():
        cur = current.get(key)
        if cur is None:
            checks.append(Check(key, "*", None, None, 0.0, None, "missing"))
            continue
        ci = cur["ci"] if intervals else {}
        for rate in RATES:
            checks.append(_judge(key, rate, base.get(rate), cur.get(rate), tolerances[rate], ci.get(rate)))
        for m in sorted(set(base.get("metrics", {})) | set(cur["metrics"])):
            checks.append(_judge(key, m, base.get("metrics", {}).get(m), cur["metrics"].get(m),
                                 tolerances["accuracy"], ci.get(m)))
    checks += [Check(k, "*", None, None, 0.0, None, "new") for k in current if k not in baseline["entries"]]
    return checks


def format_table(checks: list[Check]) -> str:
    """The values that moved or failed, as an aligned text table, then a one-line verdict."""
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    rows = [c for c in checks if c.status != "ok" or (c.delta or 0) != 0]
    lines = [f"{'status':8} {'metric':24} {'baseline':>9} {'current':>9} {'delta':>9} {'tol':>6} {'95% CI':>19}  entry"]
    for c in rows:
        ci = "-" if c.ci is None else f"[{c.ci[0]:.4f}, {c.ci[1]:.4f}]"
        lines.append(f"{c.status:8} {c.metric:24} {fmt(c.baseline):>9} {fmt(c.current):>9} {fmt(c.delta):>9} "
                     f"{c.tolerance:6.3f} {ci:>19}  {c.key}")
    n_fail = sum(c.failed for c in checks)
    lines.append(f"{len(checks)} values compared, {len(rows)} moved, {n_fail} failed: "
                 + ("FAIL" if n_fail else "PASS"))
    return "\n".join(lines)
