"""The one trace reader (core/traces_io.py): its fast columnar path, its exact record-by-record path and the
Parquet form give the same table; a killed writer's file reads its finished batches; the SVM router's
chunked decision function equals the one-block evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis_helpers import random_traces, write_run
from fsgen_eval.cli import main
from fsgen_eval.core import learned as L
from fsgen_eval.core import traces_io as T
from fsgen_eval.lm_eval.traces import TraceWriter, make_record


def _assert_same(a: T.TraceTable, b: T.TraceTable) -> None:
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.line, b.line)
    assert list(a.tokens) == list(b.tokens)
    for k in a.tokens:
        assert a.tokens[k].dtype == b.tokens[k].dtype, k
        np.testing.assert_array_equal(a.tokens[k], b.tokens[k], err_msg=k)
    assert set(a.records) == set(b.records)
    for k in a.records:
        assert a.get(k).tolist() == b.get(k).tolist(), k


@pytest.fixture
def trace_file(tmp_path):
    traces = {"gsm8k": random_traces(40, 9, seed=1), "arc": random_traces(15, 4, seed=2, router="threshold")}
    folder = write_run(tmp_path / "runs", "s", "l", traces=traces, ts="A")
    return folder / "traces_A.jsonl"


def test_fast_exact_and_parquet_readers_give_one_table(trace_file, tmp_path):
    fast = T._read_jsonl_fast(trace_file, T.TOKEN_FIELDS)
    exact = T._read_jsonl_exact(trace_file, T.TOKEN_FIELDS)
    _assert_same(fast, exact)
    assert len(fast) == 55 and fast.n_tokens == 40 * 9 + 15 * 4
    assert set(fast.get("task").tolist()) == {"gsm8k", "arc"}
    pq = T.write_parquet(fast, tmp_path / "traces_A.parquet")
    _assert_same(T.read_trace_file(pq), exact)
    # a projection reads the same values of the fields asked for
    part = T.read_trace_file(trace_file, ("handoff", "s1_entropy"))
    assert list(part.tokens) == ["handoff", "s1_entropy"]
    np.testing.assert_array_equal(part.tokens["s1_entropy"], exact.tokens["s1_entropy"])


def test_analyze_reads_jsonl_and_parquet_alike(trace_file, tmp_path, capsys):
    pq = T.write_parquet(T.read_trace_file(trace_file), tmp_path / "traces_A.parquet")
    assert main(["analyze", str(trace_file), "--json"]) == 0
    from_jsonl = json.loads(capsys.readouterr().out)
    assert main(["analyze", str(pq), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_jsonl


def test_a_file_the_fast_path_cannot_take_is_read_exactly(trace_file):
    lines = trace_file.read_text().splitlines()
    rec = json.loads(lines[3])
    rec["handoff"] = [int(h) for h in rec["handoff"]]  # 0/1 for booleans: valid, but not pyarrow's bool
    lines[3] = json.dumps(rec)
    trace_file.write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")  # and a blank line
    with pytest.raises(T._Fallback):
        T._read_jsonl_fast(trace_file, T.TOKEN_FIELDS)
    table = T.read_trace_file(trace_file)
    assert len(table) == 55 and table.line[5] == 6  # the record after the blank line keeps its line number
    assert table[3]["trace"]["handoff"].dtype == bool


@pytest.mark.parametrize("torn", ['{"task": "t", "hand', '{"task": "t", "doc_id": 1, "token_id": [1, 2], "so'])
def test_a_killed_writer_s_file_reads_its_finished_batches(tmp_path, caplog, torn):
    path = tmp_path / "traces_K.jsonl"
    writer = TraceWriter(path)
    for b, seed in enumerate((3, 4)):  # two finished batches
        writer.write_batch([make_record({"task": "t", "doc_id": 10 * b + i, "run_id": "r"}, t)
                            for i, t in enumerate(random_traces(3, 5, seed=seed))])
    with open(path, "a") as fh:
        fh.write(torn)  # killed mid-way through the third batch's first line
    table = T.read_trace_file(path)
    assert len(table) == 6 and table.n_tokens == 30
    assert table.get("doc_id").tolist() == [0, 1, 2, 10, 11, 12]
    assert "torn final line" in caplog.text
    _assert_same(table, T._read_jsonl_exact(path, T.TOKEN_FIELDS))


def test_svm_decision_in_chunks_equals_one_block():
    rng = np.random.default_rng(0)
    sv = rng.normal(size=(37, 4))
    router = L.LearnedRouter("scalar", 0, "svm", rng.normal(size=4), rng.uniform(0.5, 2, 4), 0.3, 0.0,
                             support_vectors=sv, dual_coef=rng.normal(size=37), gamma=0.4)
    x = rng.normal(size=(1001, 4))
    whole = L.decision(router, x, block=10**9)
    for block in (1, 37, 37 * 5 + 3):  # one row at a time, exactly one row, five rows and a ragged end
        np.testing.assert_allclose(L.decision(router, x, block=block), whole, rtol=1e-12, atol=1e-12)
    # the one-block value is the kernel sum written out
    z = (x - router.mean) / router.scale
    k = np.exp(-0.4 * ((z[:, None, :] - sv[None]) ** 2).sum(-1))
    np.testing.assert_allclose(whole, k @ router.dual_coef + 0.3, rtol=1e-10, atol=1e-10)


def test_a_bad_value_in_a_later_parquet_row_group_is_named_by_its_record(trace_file, tmp_path):
    table = T.read_trace_file(trace_file)
    table.tokens["s1_entropy"][table.offsets[23] + 1] = -2.0  # record 23, in the third row group of 10
    pq = T.write_parquet(table, tmp_path / "traces_A.parquet", records_per_group=10)
    with pytest.raises(ValueError, match=r"traces_A.parquet: record 23: .*s1_entropy"):
        T.read_trace_file(pq)
    # the other row groups' columns are read the same whatever the group size
    good = T.read_trace_file(trace_file)
    _assert_same(T.read_trace_file(T.write_parquet(good, tmp_path / "traces_B.parquet", records_per_group=7)), good)
