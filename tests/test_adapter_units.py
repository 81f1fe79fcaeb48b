"""Adapter pieces that need no model: model_args merging and naming, rank logic, trace files, summaries."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from fsgen_eval.lm_eval import args as margs
from fsgen_eval.core.schema import empty_trace, summarize
from fsgen_eval.lm_eval.traces import SummaryBook, TraceWriter, all_rank_paths, format_summary, make_record, trace_path

VALID = ["small", "large", "device", "batch_size", "max_batch_size", "method"]


def test_model_args_win_over_lm_evals_defaults():
    merged = margs.merge_args({"small": "s", "large": "l", "device": "cpu", "batch_size": 4},
                              {"device": "cuda:0", "batch_size": 1, "max_batch_size": None}, VALID)
    assert merged == {"small": "s", "large": "l", "device": "cpu", "batch_size": 4}


def test_unknown_model_args_are_refused_listing_the_valid_ones():
    with pytest.raises(margs.ModelArgsError, match=r"unknown model_args key\(s\) pretrained.*valid keys: small, large"):
        margs.merge_args({"small": "s", "pretrained": "x"}, {}, VALID)


def test_missing_large_is_one_clear_error():
    with pytest.raises(margs.ModelArgsError, match="needs large=PATH"):
        margs.require_pair("s", None)


def test_pair_name_of_local_paths_and_hub_ids(tmp_path):
    (tmp_path / "tiny-small").mkdir()
    (tmp_path / "tiny-large").mkdir()
    assert margs.pair_name(str(tmp_path / "tiny-small"), str(tmp_path / "tiny-large") + "/") == "tiny-small__tiny-large"
    assert margs.pair_name("Qwen/Qwen1.5-0.5B", "Qwen/Qwen1.5-7B") == "Qwen__Qwen1.5-0.5B__Qwen__Qwen1.5-7B"
    assert margs.pair_name_from_model_args("small=Qwen/a,large=Qwen/b,method=oracle") == "Qwen__a__Qwen__b"
    assert margs.pair_name_from_model_args({"small": "x"}) is None


def test_cuda_falls_back_to_cpu_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert margs.resolve_device("cuda:0", cuda_available=False) == "cpu"
    assert len([r for r in caplog.records if "CUDA is not available" in r.getMessage()]) == 1
    assert margs.resolve_device("cuda:0", cuda_available=True) == "cuda:0"
    assert margs.resolve_device("cpu", cuda_available=False) == "cpu"


@pytest.mark.parametrize("value, expected", [(None, None), (False, "false"), ("false", "false"), ("out/t.jsonl", "out/t.jsonl")])
def test_trace_argument(value, expected):
    assert margs.check_trace_arg(value) == expected


def test_trace_argument_rejects_numbers():
    with pytest.raises(margs.ModelArgsError):
        margs.check_trace_arg(3)


def test_each_rank_writes_its_own_file(tmp_path):
    assert trace_path(tmp_path, "T", 0, 1) == tmp_path / "traces_T.jsonl"
    assert [p.name for p in all_rank_paths(tmp_path, "T", 2)] == ["traces_T_rank0.jsonl", "traces_T_rank1.jsonl"]
    assert trace_path(tmp_path / "my.jsonl", "T", 1, 2) == tmp_path / "my_rank1.jsonl"


def test_data_parallel_padding_copies_are_not_traced():
    from fsgen_eval.lm_eval.model import padding_flags

    a, b = SimpleNamespace(repeats=1), SimpleNamespace(repeats=2)
    # lm-eval's cloning: [a], [b, b]; then padding of rank k repeats the last request: [b, b]
    assert padding_flags([a, b, b, b, b], world_size=2) == [False, False, False, True, True]
    assert padding_flags([a, a], world_size=1) == [False, False]


def _trace(handoff: list[bool], called: list[bool]) -> dict[str, np.ndarray]:
    t = empty_trace()
    n = len(handoff)
    t = {k: np.resize(v, n) if n else v for k, v in t.items()}
    t["token_id"] = np.arange(n)
    t["handoff"] = np.asarray(handoff)
    t["llm_called"] = np.asarray(called)
    t["s2_entropy"] = np.full(n, np.nan, dtype=np.float32)
    t["accepted"] = np.full(n, -1, dtype=np.int8)
    t["base_handoff"] = np.full(n, -1, dtype=np.int8)  # no base model (not proxy tuning)
    return t


def _records(rank: int) -> list[dict]:
    meta = {"task": "gsm8k" if rank == 0 else "mbpp", "doc_id": rank, "prompt_hash": "h", "rank": rank}
    return [make_record(meta, _trace([True, False, False], [True, True, False]),
                        {"drafted_tokens": 4, "accepted_tokens": 3, "verification_steps": 2}),
            make_record({**meta, "doc_id": 10 + rank}, _trace([False], [True]))]


def test_summary_of_all_ranks_from_their_files(tmp_path):
    paths = all_rank_paths(tmp_path, "T", 2)
    for rank, path in enumerate(paths):  # each rank writes its own file, batch by batch
        TraceWriter(path).write_batch(_records(rank))
    book = SummaryBook.from_files(paths)
    s = book.summary()
    # by hand: 8 tokens, 2 handoffs, 6 calls; drafted 8, accepted 6 over 4 verification steps, no token
    # replaced a rejected draft, no base model
    assert s["summary"] == {"generated_tokens": 8, "collaboration_rate": 0.25, "llm_call_rate": 0.75,
                            "acceptance_rate": 0.75, "mean_acceptance_length": 2.5,
                            "handoffs_per_call": 2 / 6, "rejections_per_round": 0.0, "base_collaboration_rate": None}
    assert s["per_task"]["mbpp"]["generated_tokens"] == 4
    assert set(s["per_task"]) == {"gsm8k", "mbpp"}
    assert s["summary"] == summarize([r for k in (0, 1) for r in _records(k)], [r for k in (0, 1) for r in _records(k)])


def test_each_batch_is_on_disk_before_the_next(tmp_path):
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    writer.write_batch(_records(0))
    # still open (a run killed now): the file already holds the finished batch, as valid JSON lines
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["handoff"] == [True, False, False]
    assert json.loads(lines[0])["s2_entropy"] == [None, None, None]  # NaN → null
    writer.write_batch(_records(1))
    writer.close()
    assert len(path.read_text().splitlines()) == 4


def test_a_torn_last_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "t.jsonl"
    TraceWriter(path).write_batch(_records(0))
    with open(path, "a") as fh:
        fh.write('{"task": "gsm8k", "hand')  # a writer killed mid-line
    with caplog.at_level(logging.WARNING):
        book = SummaryBook.from_files([path])
    assert book.summary()["summary"]["generated_tokens"] == 4
    assert any("torn final line" in r.getMessage() for r in caplog.records)


def test_printed_summary_has_overall_and_task_rows():
    info = {"small": "s", "large": "l", "method": "speculative", "router": "always", "threshold": None,
            "params": {"num_draft": 5}, **SummaryBook().summary()}
    book = SummaryBook()
    for r in _records(0) + _records(1):
        book.add_record(r)
    info.update(book.summary())
    text = format_summary(info)
    assert "method=speculative (num_draft=5)" in text
    assert "| all | 8 | 0.2500 | 0.7500 | 0.7500 | 2.5000 |" in text
    assert "| mbpp | 4 |" in text
