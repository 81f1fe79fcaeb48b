"""In-process cells (issue 25): the cells of a pair and task run in one worker process, each with its own
folder, lock and resume; lm-eval's record of the batch size is the one the run used."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from fsgen_eval.analysis.params import ParamCount
from fsgen_eval.experiments import cells as cells_mod
from fsgen_eval.experiments import sweep

MODELS = [ParamCount("m-big", "org/m-big", 9000), ParamCount("m-small", "org/m-small", 100)]
ROUTERS = ["always", "never", "entropy@1", "entropy@2"]

# the worker with a stand-in for lm-eval: writes each cell's results file where lm-eval would, and kills its own
# process (SIGKILL, as a killed sweep's worker dies) when it reaches the cell numbered KILL_AT
WORKER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from fsgen_eval.experiments import cells
    spec, kill_at, log = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    def fake(argv, output):
        with log.open("a") as fh:
            fh.write(argv[argv.index("--model_args") + 1] + "\\n")
        if sum(1 for _ in log.open()) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        (output / "fsgen").mkdir(parents=True, exist_ok=True)
        (output / "fsgen" / "results_1.json").write_text(json.dumps({"results": {}, "config": {}}))
        return 0
    sys.exit(cells.run_worker(spec, fake))
""")


def _grid() -> list[sweep.Cell]:
    return sweep.build_grid(MODELS, ["oracle"], ROUTERS, ["gsm8k"])


def _worker_runner(kill_at: int, log: Path):
    """The sweep's runner for a group: the worker above in a process of its own (through the supervisor)."""
    def run(argv: list[str], output: Path) -> int:
        assert argv[1:3] == ["-m", "fsgen_eval.experiments.cells"]
        return sweep.subprocess_runner([sys.executable, "-c", WORKER, argv[3], str(kill_at), str(log)], output)
    return run


def test_cells_of_a_pair_and_task_share_one_worker(tmp_path):
    grid = _grid() + sweep.build_grid(MODELS, ["oracle"], ["always"], ["mbpp"])  # mbpp: a group of one
    calls = []

    def runner(argv, output):
        calls.append(argv)
        if argv[1:3] == ["-m", "fsgen_eval.experiments.cells"]:
            return _worker_runner(0, tmp_path / "log.txt")(argv, output)
        (output / "fsgen").mkdir(parents=True)
        (output / "fsgen" / "results_1.json").write_text("{}")
        return 0

    out = sweep.run_sweep(grid, tmp_path / "sweep", runner, progress=False, in_process=True)
    assert len(out.ran) == 5 and not out.failed
    assert [a[2] for a in calls] == ["fsgen_eval.experiments.cells", "fsgen_eval.cli"]  # one worker, one lone cell
    assert all(sweep.is_done(tmp_path / "sweep" / c.relpath) for c in grid)
    assert not Path(calls[0][3]).exists()  # the worker's folder is removed once every cell of the group finished
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 4  # each cell's own lm-eval argv, once


def test_a_killed_group_keeps_its_finished_cells_and_resumes_the_rest(tmp_path):
    out_dir, log = tmp_path / "sweep", tmp_path / "log.txt"
    first = sweep.run_sweep(_grid(), out_dir, _worker_runner(3, log), progress=False, in_process=True)
    assert len(first.ran) == 2 and len(first.failed) == 2  # killed at the third cell
    assert all("cell group exited" in err for _, err in first.failed)
    done = [c for c in _grid() if sweep.is_done(out_dir / c.relpath)]
    assert [c.router for c in done] == ["always", "never"]
    assert not any((out_dir / c.relpath).exists() for c in _grid()[2:])  # no half-finished cell folder
    log.unlink()
    second = sweep.run_sweep(_grid(), out_dir, _worker_runner(0, log), progress=False, in_process=True)
    assert len(second.ran) == 2 and len(second.skipped) == 2 and not second.failed
    ran = log.read_text().splitlines()
    assert len(ran) == 2 and all("router=entropy" in a for a in ran)  # only the unfinished cells ran again
    assert all(sweep.is_done(out_dir / c.relpath) for c in _grid())
    assert not (out_dir / "_cells" / "m-small__m-big__gsm8k.tmp").exists()


def test_a_group_holds_every_cells_lock(tmp_path):
    out_dir = tmp_path / "sweep"
    grid = _grid()
    held = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from fsgen_eval.experiments import sweep
        with sweep.cell_lock(Path({str(out_dir / grid[1].relpath)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        out = sweep.run_sweep(grid, out_dir, _worker_runner(0, tmp_path / "log.txt"), progress=False,
                              in_process=True)
    finally:
        os.kill(held.pid, signal.SIGKILL)
        held.wait()
    assert len(out.ran) == 3 and [c for c, _ in out.failed] == [grid[1]]
    assert "another sweep" in out.failed[0][1]
    assert len((tmp_path / "log.txt").read_text().splitlines()) == 3  # the locked cell was left out


def test_per_process_is_still_one_lm_eval_per_cell(tmp_path):
    calls = []

    def runner(argv, output):
        calls.append(argv)
        (output / "fsgen").mkdir(parents=True)
        (output / "fsgen" / "results_1.json").write_text("{}")
        return 0

    assert len(sweep.run_sweep(_grid(), tmp_path, runner, progress=False).ran) == 4
    assert [a[2] for a in calls] == ["fsgen_eval.cli"] * 4


# ------------------------------------------------------------------------------ lm-eval's batch size
def test_cell_commands_give_lm_eval_the_batch_size_the_model_uses(tmp_path):
    cell = _grid()[0]
    cmd = cell.command(tmp_path, model_args_extra="dtype=float32,batch_size=8")
    assert cmd[cmd.index("--batch_size") + 1] == "8"  # lm-eval records config.batch_size from its own flag
    cmd = cell.command(tmp_path, model_args_extra="batch_size=8", lm_eval_args=["--batch_size", "8"])
    assert cmd.count("--batch_size") == 1  # given by the user: not twice
    assert "--batch_size" not in cell.command(tmp_path)  # none given: lm-eval's default and the model's agree


def test_system2_runs_give_lm_eval_the_batch_size(tmp_path):
    job = sweep.System2Job("org/m-big", "gsm8k")
    fsgen = job.command(tmp_path, "fsgen", model_args_extra="batch_size=4")
    assert fsgen[fsgen.index("--batch_size") + 1] == "4" and "batch_size=4" in fsgen[fsgen.index("--model_args") + 1]
    hf = job.command(tmp_path, "hf", model_args_extra="dtype=float32,batch_size=4")
    # lm-eval's hf class takes it only as --batch_size (both: "multiple values for keyword argument")
    assert hf[hf.index("--batch_size") + 1] == "4" and "batch_size" not in hf[hf.index("--model_args") + 1]


def test_cell_groups_leave_lone_cells_alone():
    grid = _grid() + sweep.build_grid(MODELS, ["oracle"], ["always"], ["mbpp"])
    groups = cells_mod.cell_groups(grid)
    assert list(groups) == [cells_mod.CellGroup("org/m-small", "org/m-big", "gsm8k")]
    assert groups[next(iter(groups))] == grid[:4]


def test_readme_cells_per_hour_are_the_committed_benchmarks():
    """README's figures are the committed record's, rounded once."""
    repo = Path(__file__).resolve().parents[1]
    rec = json.loads((repo / "benchmarks" / "results" / "cells.json").read_text())
    readme = (repo / "README.md").read_text()
    ratio = rec["ratio_in_process_over_per_process"]
    assert abs(ratio - rec["best_seconds"]["in_process"] / rec["best_seconds"]["per_process"]) < 1e-12
    for figure in (f"**{rec['best_seconds']['per_process']:.1f} s**", f"**{rec['best_seconds']['in_process']:.1f} s**",
                   f"**{rec['cells_per_hour']['per_process']:.1f}** cells per hour",
                   f"**{rec['cells_per_hour']['in_process']:.1f}** cells per hour",
                   f"**{ratio:.3f}×** the time", f"**{1 / ratio:.2f}×** the cells per hour",
                   f"load average {rec['load_average_1min_at_start'][0]:.1f}",
                   f"{rec['load_average_1min_at_start'][1]:.1f} at"):
        assert figure in readme, figure
    assert rec["metrics_and_summaries_equal"] is True


def test_readme_demo_times_are_the_committed_timings():
    """Every demo wall time the committed timing file records is the one README and docs/demo.md give."""
    repo = Path(__file__).resolve().parents[1]
    timing = (repo / "reports" / "demo" / "timing.txt").read_text()
    walls = re.findall(r"^demo: wall time (\d+) s$", timing, flags=re.M)
    assert walls
    readme, demo_doc = (repo / "README.md").read_text(), (repo / "docs" / "demo.md").read_text()
    for wall in walls:
        assert f"{wall} s" in readme and f"{wall} s" in demo_doc, wall
    assert "about 2 minutes" not in readme and "133 s" not in demo_doc  # the figures the issue found stale
