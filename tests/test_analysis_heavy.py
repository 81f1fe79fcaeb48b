"""Analysis under load (issue 24, item 5): the whole-file checks every reader runs are computed column by
column, and give the verdicts the record-by-record rules gave."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from analysis_helpers import random_traces
from fsgen_eval.analysis import consistency as C
from fsgen_eval.core import traces_io as T
from fsgen_eval.core.schema import COUNTERS, summarize


def _table(seed: int, n: int = 60, tasks: tuple[str, ...] = ("a", "b")) -> T.TraceTable:
    """``n`` records of 0..6 tokens over ``tasks`` with counters; doc ids repeat across tasks."""
    rng = np.random.default_rng(seed)
    traces = [t for t in random_traces(n, 6, seed=seed)]
    for t in traces:  # ragged, some empty
        cut = int(rng.integers(0, 7))
        for k in list(t):
            t[k] = t[k][:cut]
    table = T.as_table(traces)
    table.records = {"task": np.array([tasks[i % len(tasks)] for i in range(n)], dtype=object),
                     "run_id": np.full(n, "r", dtype=object),
                     "doc_id": np.array([i // len(tasks) for i in range(n)], dtype=object),
                     **{k: rng.integers(0, 5, n) for k in COUNTERS}}
    return table


def _first_duplicate_record_by_record(table: T.TraceTable) -> tuple[int, int] | None:
    """The rule as it was: a dict of every record's key, in order (1-based record numbers)."""
    seen: dict[tuple, int] = {}
    for i in range(len(table)):
        first = seen.setdefault(C.record_key(table, i), i + 1)
        if first != i + 1:
            return i + 1, first
    return None


@pytest.mark.parametrize("seed", range(6))
def test_duplicates_found_by_fingerprint_are_those_found_record_by_record(seed):
    rng = np.random.default_rng(seed)
    base = _table(seed)
    copies = rng.integers(0, len(base), size=seed % 3)  # 0, 1 or 2 records copied to the end
    keep = np.concatenate([np.arange(len(base)), copies])
    table = T.concat([base.select(np.isin(np.arange(len(base)), [i])) for i in keep.tolist()])
    expected = _first_duplicate_record_by_record(table)
    if expected is None:
        C.refuse_duplicate_records("f", table)
    else:
        with pytest.raises(ValueError, match=rf"record {expected[0]} duplicates record {expected[1]} "):
            C.refuse_duplicate_records("f", table)


def test_records_that_differ_only_in_token_order_or_one_bit_are_not_duplicates():
    one = {"handoff": np.array([True, False, False]), "llm_called": np.ones(3, bool),
           "s1_entropy": np.array([0.5, 0.25, 0.125], np.float32)}
    swapped = {k: v[[1, 0, 2]] for k, v in one.items()}
    nudged = {**one, "s1_entropy": np.nextafter(one["s1_entropy"], np.float32(1))}
    empty = {k: v[:0] for k, v in one.items()}
    table = T.as_table([one, swapped, nudged, empty, empty])
    table.records = {"task": np.full(5, "t", dtype=object), "doc_id": np.array([1, 1, 1, 1, 2], dtype=object)}
    C.refuse_duplicate_records("f", table)  # two empty records of different documents are not copies either
    again = T.concat([table, table.select(np.arange(5) == 2)])
    with pytest.raises(ValueError, match="record 6 duplicates record 3 "):
        C.refuse_duplicate_records("f", again)


def test_fingerprints_do_not_depend_on_the_block_size():
    table = _table(7, n=200)
    whole = C.record_fingerprints(table, chunk_tokens=1 << 30)
    assert len(np.unique(whole)) == len(table)  # every record of this table differs from every other
    for chunk in (1, 5, 64):  # a block of one record at a time, ragged blocks
        np.testing.assert_array_equal(C.record_fingerprints(table, chunk_tokens=chunk), whole)


def _run(table: T.TraceTable, stated: dict[str, dict]) -> SimpleNamespace:
    return SimpleNamespace(missing_traces=[], results={k: {} for k in stated}, path="results_X.json",
                           fsgen=SimpleNamespace(per_task=stated, summary=None))


def _verdict(run: SimpleNamespace, table: T.TraceTable) -> str | None:
    try:
        C.check_summary(run, table)
    except ValueError as err:
        return str(err)
    return None


@pytest.mark.parametrize("seed", range(4))
def test_check_summary_by_columns_gives_the_record_by_record_verdicts(seed):
    table = _table(seed)
    truth = {}
    for task in ("a", "b"):  # the summary as it was computed: record by record, each record's trace
        idx = [i for i in range(len(table)) if table.get("task")[i] == task]
        truth[task] = summarize([table.trace(i) for i in idx],
                                [{k: int(table.get(k)[i]) for k in COUNTERS} for i in idx])
    assert _verdict(_run(table, truth), table) is None
    for task in ("a", "b"):
        for key in C.SUMMARY_CHECKED:
            wrong = {t: dict(s) for t, s in truth.items()}
            wrong[task][key] = wrong[task][key] + (1 if key == "generated_tokens" else 1e-6)
            msg = _verdict(_run(table, wrong), table)
            assert msg is not None and f"says {task} {key} {wrong[task][key]}" in msg
            assert f"give {truth[task][key]} ({truth[task]['generated_tokens']} tokens in 30 records)" in msg


def test_a_fingerprint_collision_never_refuses_a_file(monkeypatch):
    """Records are compared exactly where fingerprints agree: every fingerprint equal refuses only true copies."""
    table = _table(3)
    monkeypatch.setattr(C, "record_fingerprints", lambda t: np.zeros(len(t), np.uint64))
    C.refuse_duplicate_records("f", table)
    with pytest.raises(ValueError, match=f"record {len(table) + 1} duplicates record 5 "):
        C.refuse_duplicate_records("f", T.concat([table, table.select(np.arange(len(table)) == 4)]))


def test_auroc_counted_in_blocks_equals_the_rank_statistic():
    from scipy.stats import mannwhitneyu

    from fsgen_eval.analysis.signals import auroc

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=5000), 1)  # many ties, within and across the classes
    labels = rng.random(5000) < 1 / (1 + np.exp(-2 * scores))
    expected = mannwhitneyu(scores[labels], scores[~labels]).statistic / (labels.sum() * (~labels).sum())
    for block in (1, 7, 1 << 20):
        assert auroc(scores, labels, block=block) == pytest.approx(expected, abs=1e-12)


def test_a_long_curve_is_thinned_and_exact_on_its_grid():
    from fsgen_eval.analysis.whatif import tradeoff_curve

    rng = np.random.default_rng(1)
    scores = rng.normal(size=20_000)
    handoff = rng.random(20_000) < 1 / (1 + np.exp(-scores))
    full = tradeoff_curve("s1_entropy", scores, handoff, max_points=10**9)
    thin = tradeoff_curve("s1_entropy", scores, handoff, max_points=101)
    assert len(full.thresholds) == 20_001 and len(thin.thresholds) <= 102
    assert thin.thresholds[0] == np.inf and thin.thresholds[-1] == full.thresholds[-1]
    assert set(thin.thresholds.tolist()) <= set(full.thresholds.tolist())
    for target in np.linspace(0, 1, 101):  # on the grid: the point the whole curve picks
        assert thin.at_target(target) == full.at_target(target)
    for target in rng.uniform(0, 1, 50):  # between: at most one grid step below
        a, b = thin.at_target(target), full.at_target(target)
        assert b["call_rate"] - 0.01 - 1e-12 <= a["call_rate"] <= b["call_rate"]
    short = tradeoff_curve("s", scores[:50], handoff[:50], max_points=101)
    assert len(short.thresholds) == 51  # short curves keep every threshold


def test_a_converted_study_reads_as_its_jsonl_did(tmp_path, capsys):
    import json

    from analysis_helpers import write_run
    from fsgen_eval.cli import main

    runs = tmp_path / "runs"
    write_run(runs, "s", "l", traces={"gsm8k": random_traces(30, 9, seed=1), "arc": random_traces(12, 4, seed=2)},
              ts="A")
    write_run(runs, "s", "m", traces={"gsm8k": random_traces(20, 5, seed=3)}, ts="B")
    before = {}
    for cmd in ("analyze", "check"):
        argv = [cmd, str(runs), "--json"] if cmd == "analyze" else \
            [cmd, str(runs), "--baseline", str(tmp_path / "b.json"), "--update-baseline"]
        assert main(argv) == 0
        before[cmd] = capsys.readouterr().out
    assert main(["traces", "convert", str(runs)]) == 0
    assert "2 results file" not in capsys.readouterr().out  # each JSONL is named by its own run
    assert sorted(p.name for p in runs.rglob("traces_*")) == [
        "traces_A.jsonl.converted", "traces_A.parquet", "traces_B.jsonl.converted", "traces_B.parquet"]
    for res in runs.rglob("results_*.json"):
        assert json.loads(res.read_text())["config"]["fsgen"]["traces"][0].endswith(".parquet")
    assert main(["analyze", str(runs), "--json"]) == 0
    assert capsys.readouterr().out == before["analyze"]
    assert main(["check", str(runs), "--baseline", str(tmp_path / "b.json")]) == 0  # the baseline of the JSONL
    assert main(["traces", "convert", str(runs)]) == 0  # nothing left to convert
    assert "no JSONL trace file" in capsys.readouterr().out


def test_convert_refuses_to_overwrite_a_parquet_file(tmp_path, capsys):
    from analysis_helpers import one_line_error, write_run

    folder = write_run(tmp_path / "runs", "s", "l", traces={"gsm8k": random_traces(3, 4, seed=1)}, ts="A")
    (folder / "traces_A.parquet").write_bytes(b"mine")
    one_line_error(capsys, ["traces", "convert", str(folder)], "traces_A.parquet: exists already")
    assert (folder / "traces_A.jsonl").exists() and (folder / "traces_A.parquet").read_bytes() == b"mine"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_points_are_the_points_thin_keeps_of_the_full_curve(seed):
    from fsgen_eval.analysis.whatif import thin, tradeoff_curve

    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=3000), 2) * np.where(rng.random(3000) < 0.5, 1.0, -1.0)  # ties, signed zeros
    handoff = rng.random(3000) < 0.3
    full = tradeoff_curve("-s1_margin", scores, handoff, max_points=10**9)
    for max_points in (2, 3, 17, 101):
        keep = thin(full.call_rate, max_points)
        thinned = tradeoff_curve("-s1_margin", scores, handoff, max_points=max_points)
        for name in ("thresholds", "call_rate", "caught"):  # bit for bit, zeros' signs included
            assert getattr(thinned, name).tobytes() == getattr(full, name)[keep].tobytes(), (max_points, name)


def test_per_record_sums_in_blocks_equal_one_running_sum():
    from fsgen_eval.core.traces_io import TraceTable

    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 6, 500)  # empty records too
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    handoff = rng.random(int(offsets[-1])) < 0.4
    table = TraceTable(offsets, {"handoff": handoff}, {}, np.arange(500), np.zeros(500, np.int64))
    expected = [int(handoff[a:b].sum()) for a, b in zip(offsets[:-1], offsets[1:])]
    for block in (1, 7, 64, 10**6):
        assert table.per_record_sum("handoff", block_tokens=block).tolist() == expected
