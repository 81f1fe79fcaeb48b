"""End to end (slow): the cells of a pair and task run in one process write the files a process per cell writes,
and lm-eval's own record (config.batch_size, its header line) says the batch size the run used."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fsgen_eval.cli import main

pytestmark = pytest.mark.slow

ROUTERS = "always,entropy@1"
VOLATILE = ("date", "git_hash", "total_evaluation_time_seconds", "start_time", "end_time")  # when it ran, not what it did
VOLATILE_FSGEN = ("run_id", "tokens_per_second", "traces")  # a fresh id; time; file names stamped with the time


def _sweep(out: Path, *extra: str) -> None:
    assert main(["sweep", "--family", "arith", "--models", "arith-xxs,arith-xs", "--methods", "oracle",
                 "--routers", ROUTERS, "--tasks", "fsgen_arith_level1", "--limit", "2", "--no-replay",
                 "--output-path", str(out), "--model-args-extra", "dtype=float32,batch_size=4",
                 "--lm-eval-args=--include_path tasks/", *extra]) == 0


def _cell_files(out: Path) -> dict[str, object]:
    """Every cell's results (volatile fields dropped) and trace records (run id dropped), by cell folder."""
    files: dict[str, object] = {}
    for results in sorted(out.glob("*__*/*/*/*/results_*.json")):
        cell = str(results.parent.parent.relative_to(out))
        # a task function's repr holds its address in that process (two processes per cell differ there too);
        # the trace location fsgen-eval run passes (trace=OUT/<pair>) holds the sweep's own output folder
        text = re.sub(r" at 0x[0-9a-f]+", " at 0x?", results.read_text()).replace(str(out), "OUT")
        data = json.loads(text)
        for k in VOLATILE:
            data.pop(k, None)
        for k in VOLATILE_FSGEN:
            data["config"]["fsgen"].pop(k)
        files[cell + "/results"] = data
        (trace,) = results.parent.glob("traces_*.jsonl")
        rows = [json.loads(line) for line in trace.read_text().splitlines()]
        files[cell + "/traces"] = [{k: v for k, v in r.items() if k != "run_id"} for r in rows]
    return files


def test_in_process_cells_write_the_files_of_a_process_per_cell(tmp_path):
    _sweep(tmp_path / "per_process", "--per-process")
    _sweep(tmp_path / "in_process")
    a, b = _cell_files(tmp_path / "per_process"), _cell_files(tmp_path / "in_process")
    assert len(a) == 4 and a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    for out in (tmp_path / "per_process", tmp_path / "in_process"):
        for results in out.glob("*__*/*/*/*/results_*.json"):
            config = json.loads(results.read_text())["config"]
            # lm-eval's own record says the batch size the model used (it said 1 before: its --batch_size default)
            # (lm-eval keeps its --batch_size as the string given: it may be "auto")
            assert config["batch_size"] == "4" and config["batch_sizes"] == [4] and config["fsgen"]["batch_size"] == 4
            log = (results.parent.parent / "lm_eval.log").read_text()
            assert "batch_size: 4 (4)" in log
            assert "fsgen: " in log and "collaboration_rate" in log  # the fsgen summary, in the cell's own log
    assert not (tmp_path / "in_process" / "_cells" / "arith-xxs__arith-xs__fsgen_arith_level1.tmp").exists()
