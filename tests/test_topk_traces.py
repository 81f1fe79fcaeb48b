"""Top-K traces (``trace_topk=K``): gathered by the engine, written to the Parquet side file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from fsgen_eval import generate, loglikelihood
from fsgen_eval.core import schema
from fsgen_eval.engine.config import make_config
from fsgen_eval.lm_eval.args import ModelArgsError, check_trace_topk
from fsgen_eval.lm_eval.traces import SummaryBook, TraceWriter, make_record

PROMPTS = ["Question: What is 3 + 4? Answer:", "def add(a, b):", "A."]
N = 16
K = 5


@pytest.fixture(scope="module")
def routed(pair):
    """Oracle with an entropy router at System 1's median entropy: System 2 called at some tokens only."""
    free = generate(pair, PROMPTS, max_new_tokens=N)
    thr = float(np.median(np.concatenate([t["s1_entropy"] for t in free.traces])))
    out = generate(pair, PROMPTS, router="entropy", threshold=thr, max_new_tokens=N, trace_topk=K)
    out.threshold = thr  # the test below reruns without top-K
    return out


def test_topk_fields_match_the_scalar_fields(routed):
    for t, ids in zip(routed.traces, routed.token_ids):
        n, called = len(ids), t["llm_called"]
        assert 0 < called.sum() < n, "the router must call System 2 at some tokens and not at others"
        assert t["s1_topk_ids"].shape == t["s1_topk_probs"].shape == (n, K)
        assert t["s1_topk_ids"].dtype == np.int32 and t["s1_topk_probs"].dtype == np.float32
        p1 = t["s1_topk_probs"]
        assert (np.diff(p1, axis=1) <= 0).all(), "probabilities descend"
        np.testing.assert_allclose(p1[:, 0], t["s1_top1_prob"], rtol=1e-5)
        np.testing.assert_allclose(p1[:, 0] - p1[:, 1], t["s1_margin"], rtol=1e-4, atol=1e-6)
        # greedy: System 1's token is its top-1 where it emitted, System 2's top-1 where System 2 did
        src1 = t["source"] == 1
        assert (t["token_id"][src1] == t["s1_topk_ids"][src1, 0]).all()
        assert (t["token_id"][~src1] == t["s2_topk_ids"][~src1, 0]).all()
        assert (t["s2_topk_ids"][~called] == -1).all() and np.isnan(t["s2_topk_probs"][~called]).all()
        np.testing.assert_allclose(t["s2_topk_probs"][called, 0], t["s2_top1_prob"][called], rtol=1e-5)


def test_topk_changes_no_token_and_is_absent_by_default(pair, routed):
    plain = generate(pair, PROMPTS, router="entropy", threshold=routed.threshold, max_new_tokens=N)
    assert plain.token_ids == routed.token_ids and plain.summary == routed.summary
    assert not set(schema.TOPK_FIELDS) & set(plain.traces[0])


def test_topk_in_speculative_and_loglikelihood(pair):
    spec = generate(pair, PROMPTS[:2], method="speculative", max_new_tokens=N, trace_topk=3)
    for t in spec.traces:
        assert t["s2_topk_ids"].shape == (len(t["token_id"]), 3) and (t["s2_topk_ids"] >= 0).all()
    ll = loglikelihood(pair, [("Question: What is 3 + 4? Answer:", " 7"), ("A.", " 0\nB. 1")], trace_topk=4)
    for t in ll.traces:
        n = len(t["token_id"])
        assert t["s1_topk_probs"].shape == (n, 4) and t["s2_topk_probs"].shape == (n, 4)
        np.testing.assert_allclose(t["s1_topk_probs"][:, 0], t["s1_top1_prob"], rtol=1e-5)


def test_topk_rows_of_a_ragged_speculative_batch_are_each_rows_own(pair):
    # rows accept different numbers of drafts per round (Recorder.stacked orders each row's entries): a row's
    # top-K lists in a batch are those it gets alone, and line up with its own tokens and scalar fields
    prompts = PROMPTS + ["Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes.", "x"]
    kw = dict(method="speculative", num_draft=4, max_new_tokens=24, trace_topk=K)
    alone = generate(pair, prompts, batch_size=1, **kw)
    batch = generate(pair, prompts, batch_size=len(prompts), **kw)
    rates = {c["accepted_tokens"] / c["verification_steps"] for c in alone.counters}
    assert len(rates) > 1, "rows must accept drafts at different rates for the batch to be ragged"
    assert batch.token_ids == alone.token_ids
    for got, want, ids in zip(batch.traces, alone.traces, alone.token_ids):
        for f in schema.TOPK_FIELDS:
            assert got[f].shape == (len(ids), K), f
            if f.endswith("ids"):
                assert np.array_equal(got[f], want[f]), f
            else:
                np.testing.assert_allclose(got[f], want[f], rtol=1e-4, atol=1e-6, err_msg=f)
        np.testing.assert_allclose(got["s1_topk_probs"][:, 0], got["s1_top1_prob"], rtol=1e-5)
        # greedy speculative emits the large model's greedy token at every position
        assert (got["token_id"] == got["s2_topk_ids"][:, 0]).all()


def test_bad_trace_topk_is_refused_before_work(pair):
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="trace_topk"):
            make_config(trace_topk=bad)
    with pytest.raises(ValueError, match="exceeds the vocabulary"):
        generate(pair, PROMPTS[:1], max_new_tokens=2, trace_topk=pair.vocab_size + 1)
    with pytest.raises(ModelArgsError, match="trace=false"):
        check_trace_topk(5, "false")
    with pytest.raises(ModelArgsError, match="integer"):
        check_trace_topk("many", None)


def _records(out, start_doc: int = 0) -> list[dict]:
    return [make_record({"task": "t", "doc_id": start_doc + i}, tr, c)
            for i, (tr, c) in enumerate(zip(out.traces, out.counters))]


def test_side_file_rows_columns_and_row_groups(tmp_path, routed):
    path = tmp_path / "traces.jsonl"
    writer = TraceWriter(path)
    recs = _records(routed)
    writer.write_batch(recs[:2])
    writer.write_batch(recs[2:])
    writer.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3 and not set(schema.TOPK_FIELDS) & set(lines[0]), "top-K stays out of the JSONL"
    side = schema.topk_path(path)
    assert side.name == "traces.topk.parquet"
    f = pq.ParquetFile(side)
    assert f.metadata.num_row_groups == 2, "one row group per batch"
    tab = f.read()
    assert tab.column_names == list(schema.TOPK_COLUMNS)
    assert str(tab.schema.field("record").type) == "int64" and str(tab.schema.field("token").type) == "int32"
    assert str(tab.schema.field("s1_topk_ids").type) == "list<element: int32>"
    assert str(tab.schema.field("s2_topk_probs").type) == "list<element: float>"
    rows = tab.to_pylist()
    assert len(rows) == sum(len(r["token_id"]) for r in lines)
    for row in rows:
        rec, tr = lines[row["record"]], routed.traces[row["record"]]
        j = row["token"]
        assert row["doc_id"] == rec["doc_id"] and row["task"] == "t"
        assert row["s1_topk_ids"] == tr["s1_topk_ids"][j].tolist()
        assert np.allclose(row["s1_topk_probs"], tr["s1_topk_probs"][j])
        if rec["llm_called"][j]:
            assert row["s2_topk_ids"] == tr["s2_topk_ids"][j].tolist()
        else:
            assert row["s2_topk_ids"] is None and row["s2_topk_probs"] is None
    # the summary reads the JSONL alone, unchanged by the side file
    assert SummaryBook.from_files([path]).summary()["summary"] == schema.summarize(routed.traces, routed.counters)


def test_appending_continues_record_numbers_and_refuses_an_existing_side_file(tmp_path, routed):
    path = tmp_path / "t.jsonl"
    path.write_text('{"old": 1}\n{"old": 2}\n')  # two lines from before, no side file
    with pytest.raises(FileExistsError, match="trace_append=true"):  # without append: refused
        TraceWriter(path).write_batch(_records(routed)[:1])
    assert path.read_text() == '{"old": 1}\n{"old": 2}\n' and not schema.topk_path(path).exists()
    w = TraceWriter(path, append=True)
    w.write_batch(_records(routed)[:1])
    w.close()
    tab = pq.read_table(schema.topk_path(path))
    assert set(tab.column("record").to_pylist()) == {2}
    with pytest.raises(ModelArgsError, match="exists already"):
        check_trace_topk(5, str(path))
    with pytest.raises(FileExistsError, match="exists already"):
        w2 = TraceWriter(path, append=True)
        w2.write_batch(_records(routed)[:1])


def test_analysis_reads_the_side_file_per_record(tmp_path, routed):
    from fsgen_eval.analysis.files import read_topk

    path = tmp_path / "t.jsonl"
    w = TraceWriter(path)
    w.write_batch(_records(routed))
    w.close()
    s1 = read_topk(path)
    s2 = read_topk(path, "s2_topk_ids")
    for r, t in enumerate(routed.traces):
        np.testing.assert_array_equal(s1[r], t["s1_topk_probs"])
        np.testing.assert_array_equal(s2[r], t["s2_topk_ids"])  # -1 where System 2 was not evaluated
    torn = tmp_path / "torn.jsonl"
    torn.write_text("")
    schema.topk_path(torn).write_bytes(schema.topk_path(path).read_bytes()[:-100])  # a killed run: no footer
    with pytest.raises(ValueError, match="not a readable top-K side file"):
        read_topk(torn)
    with pytest.raises(FileNotFoundError, match="trace_topk"):
        read_topk(tmp_path / "none.jsonl")


def test_lm_eval_adapter_writes_the_side_file_for_generations_and_scores(llama_pair, tmp_path):
    from lm_eval.api.instance import Instance

    from fsgen_eval.lm_eval.model import FSGenLM

    large, small = llama_pair
    trace = tmp_path / "t.jsonl"
    lm = FSGenLM.create_from_arg_string(f"small={small},large={large},device=cpu,batch_size=2,trace={trace},"
                                        "router=margin,threshold=0.5,trace_topk=5")
    gen = [Instance("generate_until", {}, (f"Question: {i} + {i} =", {"until": ["\n"], "max_gen_toks": 6}),
                    idx=0, metadata=("gen_task", i, 1)) for i in range(3)]
    lm.generate_until(gen)
    ll = [Instance("loglikelihood", {}, ("Question: What is 3 + 4? Answer:", c), idx=i, metadata=("ll_task", 0, 1))
          for i, c in enumerate([" 7 and 8", " B"])]
    lm.loglikelihood(ll)
    info = lm.get_model_info()["fsgen"]  # closes the writers, as lm-eval's evaluator does
    assert info["trace_topk"] == 5 and "handoffs_per_call" in info["summary"]
    assert any("(p1 - p2)/2" in line for line in info["conventions"])
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    tab = pq.read_table(schema.topk_path(trace)).to_pylist()
    assert {r["task"] for r in lines} == {"gen_task", "ll_task"}
    for i, rec in enumerate(lines):
        rows = [r for r in tab if r["record"] == i]
        assert [r["token"] for r in rows] == list(range(len(rec["token_id"])))
        assert all(r["doc_id"] == rec["doc_id"] and r["task"] == rec["task"] for r in rows)
        for r, called, p1 in zip(rows, rec["llm_called"], rec["s1_top1_prob"]):
            assert len(r["s1_topk_ids"]) == 5 and r["s1_topk_probs"][0] == pytest.approx(p1, abs=1e-6)
            assert (r["s2_topk_ids"] is None) == (not called)
