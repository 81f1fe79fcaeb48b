"""A sweep killed with SIGKILL takes its lm-eval child (and that child's children) with it; two sweeps on one
folder never run one cell twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from _proc_helpers import pids_with

# a slow stand-in for lm-eval: starts a child of its own, waits for a release file, writes a results file
FAKE_LM_EVAL = textwrap.dedent("""
    import json, pathlib, subprocess, sys, time
    out, marker, release = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
    subprocess.Popen(["sleep", marker])
    deadline = time.time() + 90
    while not release.exists() and time.time() < deadline:
        time.sleep(0.05)
    (out / "fsgen").mkdir(parents=True, exist_ok=True)
    (out / "fsgen" / f"results_{time.time_ns()}.json").write_text(json.dumps({"results": {}, "config": {}}))
""")

SWEEP = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fsgen_eval.experiments import sweep
    from fsgen_eval.analysis.params import ParamCount
    out, marker, release, fake = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    models = [ParamCount("m-big", "org/m-big", 9000), ParamCount("m-small", "org/m-small", 100)]
    cells = sweep.build_grid(models, ["oracle"], ["always"], ["gsm8k"])
    runner = lambda argv, output: sweep.subprocess_runner([sys.executable, "-c", fake, str(output), marker, release],
                                                          output)
    res = sweep.run_sweep(cells, out, runner, progress=False)
    print(json.dumps({"ran": len(res.ran), "skipped": len(res.skipped), "failed": [e for _, e in res.failed]}))
""")



def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _start_sweep(out: Path, marker: str, release: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SWEEP, str(out), marker, str(release), FAKE_LM_EVAL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cleanup(marker: str) -> None:
    for pid in pids_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_kill_9_of_a_sweep_kills_its_lm_eval_and_that_ones_children(tmp_path):
    marker = f"{time.time() % 1000 + 3000:.6f}"
    release = tmp_path / "never"
    sweep = _start_sweep(tmp_path / "out", marker, release)
    try:
        # the fake lm-eval and its sleep are both running
        assert _wait_for(lambda: len(pids_with(marker)) >= 4, 60), "the cell never started"
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        assert _wait_for(lambda: pids_with(marker) == [], 10), f"outlived the sweep: {pids_with(marker)}"
    finally:
        _cleanup(marker)
        sweep.kill()


def test_two_sweeps_on_one_folder_never_run_one_cell_twice(tmp_path):
    marker = f"{time.time() % 1000 + 4000:.6f}"
    release = tmp_path / "release"
    out = tmp_path / "out"
    first = _start_sweep(out, marker, release)
    second = None
    try:
        assert _wait_for(lambda: len(pids_with(marker)) >= 4, 60), "the first sweep's cell never started"
        running = len(pids_with(marker))
        second = _start_sweep(out, marker, release)
        # the second sweep either gives up on the cell at once, or (without a lock) starts it a second time
        _wait_for(lambda: second.poll() is not None or len(pids_with(marker)) > running + 1, 60)
        release.write_text("go")
        first_out, _ = first.communicate(timeout=60)
        second_out, second_err = second.communicate(timeout=60)
        results = sorted((out).rglob("results_*.json"))
        assert len(results) == 1, results
        assert json.loads(first_out.strip().splitlines()[-1])["ran"] == 1
        refused = json.loads(second_out.strip().splitlines()[-1])
        assert refused["ran"] == 0 and len(refused["failed"]) == 1, (refused, second_err[-500:])
        message = refused["failed"][0]
        assert "another sweep" in message and "\n" not in message
    finally:
        release.write_text("go")
        _cleanup(marker)
        for proc in (first, second):
            if proc is not None:
                proc.kill()


def test_a_finished_cell_is_rerun_only_when_asked(tmp_path):
    from fsgen_eval.analysis.params import ParamCount
    from fsgen_eval.experiments import sweep

    (cell,) = sweep.build_grid([ParamCount("b", "org/b", 9), ParamCount("s", "org/s", 1)], ["oracle"], ["always"],
                               ["gsm8k"])
    calls = []

    def runner(argv, output):
        calls.append(output)
        (output / "fsgen").mkdir(parents=True)
        (output / "fsgen" / f"results_{len(calls)}.json").write_text("{}")
        return 0

    assert sweep.run_cell(cell, tmp_path, runner) is None
    # the sweep picked it as unfinished, then found it finished: another sweep did it meanwhile
    assert sweep.run_cell(cell, tmp_path, runner, unfinished_only=True) == sweep.DONE_ELSEWHERE and len(calls) == 1
    assert sweep.run_cell(cell, tmp_path, runner) is None and len(calls) == 2  # the demo's rerun replaces it
    assert [p.name for p in (tmp_path / cell.relpath).rglob("results_*.json")] == ["results_2.json"]
