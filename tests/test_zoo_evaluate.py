"""The family evaluation behind a task family's model card: hand-checkable rows, repetition, intervals."""

from __future__ import annotations

import pytest

from fsgen_eval.experiments.zoo.evaluate import REPEAT_N, repetitive, sample_rows, summarise, wilson


def test_repetition_needs_one_n_gram_twice_in_the_window():
    assert not repetitive(list(range(64)))
    loop = list(range(20)) * 4  # period 20: every 12-gram recurs
    assert repetitive(loop)
    # a repeat that lies before the last 64 tokens does not count
    assert not repetitive(list(range(REPEAT_N)) * 2 + list(range(100, 164)))
    assert repetitive([7] * (REPEAT_N + 1))


def test_wilson_interval_stays_in_the_unit_interval():
    assert wilson(0, 10)[1] == 0.0 and wilson(10, 10)[2] == pytest.approx(1.0)
    point, lo, hi = wilson(3, 10)
    assert point == 0.3 and 0 < lo < 0.3 < hi < 1
    assert lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)  # Wilson's formula by hand


class _Tok:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def _sample(doc_id, level, filt, text, em):
    return {"doc_id": doc_id, "doc": {"level": level}, "filter": filt, "resps": [[text]], "exact_match": em}


def test_rows_join_the_two_filters_and_summary_counts_by_level():
    samples = {"lvl1": [_sample(0, 1, "strict-match", "a b c", 1.0), _sample(0, 1, "flexible-extract", "a b c", 1.0),
                        _sample(1, 1, "strict-match", "x " * 250, 0.0), _sample(1, 1, "flexible-extract", "x", 1.0)],
               "lvl2": [_sample(0, 2, "strict-match", "d e", 0.0), _sample(0, 2, "flexible-extract", "d e", 0.0)]}
    rows = sample_rows(samples, _Tok(), max_gen_toks=256)
    assert [(r["task"], r["doc_id"], r["correct"], r["correct_flexible"], r["tokens"], r["ended"], r["repetitive"])
            for r in rows] == [("lvl1", 0, 1, 1, 3, 1, 0), ("lvl1", 1, 0, 1, 250, 0, 1), ("lvl2", 0, 0, 0, 2, 1, 0)]
    s = summarise(rows, 256)
    assert (s["strict"]["level1"]["correct"], s["strict"]["level1"]["n"]) == (1, 2)
    assert s["strict"]["all"]["accuracy"] == pytest.approx(1 / 3) and s["flexible"]["all"]["accuracy"] == pytest.approx(2 / 3)
    assert s["ended_share"] == pytest.approx(2 / 3) and s["repetitive_share"] == pytest.approx(1 / 3)
    assert s["tokens"]["max"] == 250 and s["tokens"]["p50"] == 3
