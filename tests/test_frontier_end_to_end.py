"""The frontier end to end on a real (tiny, committed) pair and task: its end points are exactly what lm-eval's
own router ``never`` and router ``always`` runs of the pair give, over a group task's documents; its calibrated
threshold calls the target share of the calibration tokens; the report draws it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsgen_eval.analysis import frontier as F
from fsgen_eval.analysis import files
from fsgen_eval.experiments import frontier as X

REPO = Path(__file__).resolve().parents[1]
SMALL, LARGE = str(REPO / "models/arith/arith-xxs"), str(REPO / "models/arith/arith-xs")
TASK, LIMIT = "fsgen_arith", 2  # a group: 2 documents of each of its 4 levels
METRIC = "exact_match,strict-match"

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _lm_eval(router: str, out: Path, method: str = "method=oracle") -> Path:
    """lm-eval itself, not the sweep: one lockstep run of the pair with ``router``; its results file."""
    cmd = [sys.executable, "-m", "fsgen_eval.cli", "run", "--model", "fsgen", "--model_args",
           f"small={SMALL},large={LARGE},{method},router={router},trace=true,dtype=float32",
           "--tasks", TASK, "--include_path", str(REPO / "tasks"), "--limit", str(LIMIT), "--log_samples",
           "--output_path", str(out)]
    subprocess.run(cmd, cwd=REPO, env=_env(), check=True, capture_output=True)
    (results,) = sorted(out.rglob("results_*.json"))
    return results


def _tokens(results: Path) -> dict[str, list[int]]:
    run = files.load_run(results)
    return {X.doc_key(r["task"], int(r["doc_id"])): list(map(int, r["trace"]["token_id"]))
            for r in files.run_records(run)}


@pytest.fixture(scope="module")
def frontier_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("frontier")
    plan = X.Plan(SMALL, LARGE, TASK, ["entropy"], [0.3], LIMIT, calibration_task="fsgen_arith_validation",
                  calibration_limit=LIMIT, speculative_fsgen=["entropy"], num_draft=3)
    with pytest.MonkeyPatch.context() as mp:  # the sweep's lm-eval processes import this tree, one thread each
        for k in ("PYTHONPATH", "OMP_NUM_THREADS"):
            mp.setenv(k, _env()[k])
        result = X.run_frontier(plan, out, model_args_extra="dtype=float32",
                                lm_eval_args=["--include_path", str(REPO / "tasks")], n_boot=50, progress=False,
                                in_process=True)  # the CLI's default: the points share one process
    return out, result


def test_end_points_equal_lm_eval_runs_of_never_and_always(frontier_run, tmp_path):
    out, result = frontier_run
    by_router = {p["router"]: p for p in result["points"]}
    for router in ("never", "always"):
        results = _lm_eval(router, tmp_path / router)
        run = files.load_run(results)
        point = by_router[router]
        # lm-eval's own aggregate over the group's 8 documents, and fsgen's own summary, exactly
        assert point["n_docs"] == 4 * LIMIT
        assert point["accuracy"] == run.results[TASK][METRIC]
        assert point["llm_call_rate"] == run.fsgen.summary["llm_call_rate"]
        assert point["collaboration_rate"] == run.fsgen.summary["collaboration_rate"]
        assert point["generated_tokens"] == run.fsgen.summary["generated_tokens"]
        # ... and the same tokens, document by document (System 2 alone was replayed in the frontier)
        cell = X.Cell(SMALL, LARGE, "oracle", router, None, TASK)
        (mine,) = sorted((out / cell.relpath).rglob("results_*.json"))
        if router == "always":  # out is absolute, so is the replay's reference to System 2's run
            mine = Path(files.load_run(mine).fsgen.replay["system2_results"])
        assert _tokens(mine) == _tokens(results)
    assert by_router["never"]["llm_call_rate"] == 0.0 and by_router["always"]["llm_call_rate"] == 1.0


def test_calibrated_threshold_calls_target_share_of_calibration_tokens(frontier_run):
    out, result = frontier_run
    (entropy,) = [p for p in result["points"] if p["router"] == "entropy"]
    traces = X.calibration_statistics(out / X.CALIBRATION / X.Plan(
        SMALL, LARGE, TASK, ["entropy"], [0.3], LIMIT, calibration_task="fsgen_arith_validation").calibration_cell().relpath)
    values = np.concatenate([np.asarray(t["s1_entropy"], float) for t in traces])
    realised = F.realised_rate(values, "above", entropy["threshold"])
    assert realised == entropy["calibration_call_rate"]
    assert abs(realised - 0.3) <= 1 / len(values)
    assert result["calibration_tokens"] == len(values)


def test_outputs_and_report_draw_the_frontier(frontier_run, tmp_path):
    from fsgen_eval.cli import main

    out, result = frontier_run
    assert json.loads((out / "frontier.json").read_text())["points"] == json.loads(json.dumps(result["points"]))
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG" and "| System 1 alone |" in (out / "frontier.md").read_text()
    assert main(["report", str(out), "-o", str(tmp_path / "rep"), "--n-boot", "5"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Accuracy frontier arith-xxs -> arith-xs on fsgen_arith" in md
    never = next(p for p in result["points"] if p["router"] == "never")
    assert f"| System 1 alone | – | {never['accuracy']:.3f} |" in md


def test_fsgen_speculative_point_is_lm_evals_lossy_speculative_run_at_the_routers_threshold(frontier_run, tmp_path):
    out, result = frontier_run
    (entropy,) = [p for p in result["points"] if p["router"] == "entropy"]
    (spec,) = [p for p in result["points"] if p["router"] == X.SPEC_SERIES + "entropy"]
    assert spec["label"] == "fsgen-spec:entropy@0.3" and spec["threshold"] == entropy["threshold"]
    results = _lm_eval(f"entropy,threshold={spec['threshold']:g}", tmp_path / "spec",
                       "method=speculative,speculative_variant=fsgen,num_draft=3")
    run = files.load_run(results)
    assert spec["accuracy"] == run.results[TASK][METRIC]
    assert spec["llm_call_rate"] == run.fsgen.summary["llm_call_rate"]
    assert spec["mean_acceptance_length"] == run.fsgen.summary["mean_acceptance_length"]
    assert spec["s2_passes_per_token"] == pytest.approx(spec["llm_call_rate"] / spec["mean_acceptance_length"])
    cell = X.Cell(SMALL, LARGE, "speculative", "entropy", spec["threshold"], TASK,
                  method_params=(("num_draft", 3), ("speculative_variant", "fsgen")))
    (mine,) = sorted((out / cell.relpath).rglob("results_*.json"))
    assert _tokens(mine) == _tokens(results)
    assert spec["router"] in result["gap_recovery"]  # its own series, beside the oracle routers
    md = (out / "frontier.md").read_text()
    assert "| fsgen-spec:entropy@0.3 |" in md and "System 2 passes per token" in md
