"""Sweeps with a fake lm-eval runner: the grid, resuming after a kill, skipping finished cells, dry run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from fsgen_eval.experiments import sweep
from fsgen_eval.analysis.files import find_runs
from fsgen_eval.analysis.params import ParamCount
from fsgen_eval.cli import main

MODELS = [ParamCount("m-big", "org/m-big", 9000), ParamCount("m-small", "org/m-small", 100),
          ParamCount("m-mid", "org/m-mid", 1000)]


class FakeRunner:
    """Writes a results file where lm-eval would; fails (like a killed run) on the call numbered ``fail_at``."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, argv: list[str], output: Path) -> int:
        self.calls.append(argv)
        assert argv[argv.index("--output_path") + 1] == str(output)
        if len(self.calls) == self.fail_at:
            (output / "partial.txt").write_text("killed half-way")
            return 137
        model_args = dict(kv.split("=", 1) for kv in argv[argv.index("--model_args") + 1].split(","))
        sub = output / "fsgen"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "results_2026.json").write_text(json.dumps({"results": {}, "config": {"fsgen": model_args}}))
        return 0


def test_grid_pairs_large_over_small():
    cells = sweep.build_grid(MODELS, ["oracle", "speculative"], ["always", "entropy@1.5"], ["gsm8k"])
    assert len(cells) == 3 * 2 * 2 * 1
    sizes = {m.hub_id: m.total for m in MODELS}
    assert all(sizes[c.large] > sizes[c.small] for c in cells)
    assert {(c.small, c.large) for c in cells} == {("org/m-small", "org/m-mid"), ("org/m-small", "org/m-big"),
                                                    ("org/m-mid", "org/m-big")}
    ent = next(c for c in cells if c.router == "entropy")
    assert ent.threshold == 1.5 and "threshold=1.5" in ent.model_args()


def test_command_line():
    cell = sweep.Cell("org/s", "org/l", "oracle", "always", None, "gsm8k")
    cmd = cell.command(Path("/out/c"), limit=5)
    assert cmd[1:6] == ["-m", "fsgen_eval.cli", "run", "--model", "fsgen"]
    assert cmd[cmd.index("--model_args") + 1] == "small=org/s,large=org/l,method=oracle,router=always,trace=true"
    assert cmd[cmd.index("--tasks") + 1] == "gsm8k" and cmd[-2:] == ["--limit", "5"]


@pytest.mark.parametrize("spec, message", [("entropy", "needs a threshold"), ("always@2", "takes no threshold"),
                                           ("margin@x", "not a number")])
def test_router_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_router(spec)


def test_resume_after_a_kill(tmp_path):
    cells = sweep.build_grid(MODELS, ["oracle"], ["always"], ["gsm8k", "arc_easy"])  # 6 cells
    killed = FakeRunner(fail_at=3)
    out = sweep.run_sweep(cells, tmp_path, killed, progress=False)
    assert len(out.ran) == 5 and len(out.failed) == 1  # the runner fails the 3rd cell only
    bad = out.failed[0][0]
    assert not sweep.is_done(tmp_path / bad.relpath)
    (tmp_path / bad.relpath).with_name(bad.relpath.name + ".tmp").joinpath("results_x.json").write_text("{}")
    assert len(find_runs([tmp_path])) == 5  # the killed cell's temp folder is not read
    assert (tmp_path / bad.relpath).with_name(bad.relpath.name + ".tmp").exists()
    again = FakeRunner()
    out2 = sweep.run_sweep(cells, tmp_path, again, progress=False)
    assert len(again.calls) == 1 and out2.ran == [bad] and len(out2.skipped) == 5
    assert all(sweep.is_done(tmp_path / c.relpath) for c in cells)
    assert not list(tmp_path.rglob("*.tmp"))
    # a third run has nothing left to do
    third = FakeRunner()
    assert len(sweep.run_sweep(cells, tmp_path, third, progress=False).skipped) == 6 and third.calls == []


def test_limit_reaches_lm_eval(tmp_path):
    runner = FakeRunner()
    cells = sweep.build_grid(MODELS[:2], ["oracle"], ["never"], ["gsm8k"])
    sweep.run_sweep(cells, tmp_path, runner, progress=False, limit=7)
    assert runner.calls[0][-2:] == ["--limit", "7"]


def test_cli_dry_run_prints_grid_and_runs_nothing(tmp_path, capsys, monkeypatch):
    def boom(argv, output):
        raise AssertionError("dry run must not run lm-eval")

    monkeypatch.setattr(sweep, "subprocess_runner", boom)
    assert main(["sweep", "--family", "pythia", "--models", "pythia-70m,pythia-160m,pythia-410m",
                 "--routers", "always,never", "--tasks", "lambada_openai", "--output-path", str(tmp_path),
                 "--limit", "10", "--dry-run", "--no-replay"]) == 0  # replay's dry run: test_sweep_replay.py
    out = capsys.readouterr().out
    assert out.startswith("6 cells") and out.count("[todo]") == 6 and "--limit 10" in out
    assert "EleutherAI__pythia-70m__EleutherAI__pythia-410m" in out
    assert not any(tmp_path.iterdir())


def test_cli_sweep_runs_with_injected_runner(tmp_path, capsys, monkeypatch):
    runner = FakeRunner()
    monkeypatch.setattr(sweep, "subprocess_runner", runner)
    args = ["sweep", "--family", "qwen2.5", "--models", "Qwen2.5-0.5B,Qwen2.5-1.5B", "--tasks", "gsm8k",
            "--output-path", str(tmp_path), "--no-replay"]  # the replaying sweep: test_sweep_replay.py
    assert main(args) == 0 and len(runner.calls) == 1
    assert main(args) == 0 and len(runner.calls) == 1  # resumed: nothing left
    assert "1 already done" in capsys.readouterr().out


def test_subprocess_runner_logs_and_returns_the_exit_code(tmp_path):
    import sys

    out = tmp_path / "cell"
    rc = sweep.subprocess_runner([sys.executable, "-c", "print('hello from lm-eval'); raise SystemExit(3)"], out)
    assert rc == 3 and "hello from lm-eval" in (out / "lm_eval.log").read_text()


def test_cell_that_exits_0_without_results_is_not_done(tmp_path):
    cell = sweep.Cell("org/s", "org/l", "oracle", "always", None, "gsm8k")
    err = sweep.run_cell(cell, tmp_path, lambda argv, output: 0)
    assert "wrote no results_*.json" in err and not sweep.is_done(tmp_path / cell.relpath)


class ConcurrentRunner(FakeRunner):
    """A FakeRunner that holds each cell briefly and records which devices run at the same time."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.running: list[str | None] = []
        self.overlaps: list[list[str | None]] = []

    def __call__(self, argv: list[str], output: Path) -> int:
        model_args = dict(kv.split("=", 1) for kv in argv[argv.index("--model_args") + 1].split(","))
        with self.lock:
            self.running.append(model_args.get("device"))
            self.overlaps.append(list(self.running))
        time.sleep(0.05)
        with self.lock:
            rc = super().__call__(argv, output)
            self.running.remove(model_args.get("device"))
        return rc


def test_jobs_run_cells_side_by_side_one_per_device(tmp_path):
    cells = sweep.build_grid(MODELS, ["oracle"], ["always", "never"], ["gsm8k"])  # 6 cells
    runner = ConcurrentRunner()
    out = sweep.run_sweep(cells, tmp_path, runner, progress=False, jobs=2, devices=["cuda:0", "cuda:1"],
                          model_args_extra="dtype=bfloat16")
    assert out.ran == cells and not out.failed  # reported in grid order whatever finished first
    assert all(sweep.is_done(tmp_path / c.relpath) for c in cells)
    assert max(len(o) for o in runner.overlaps) == 2  # two cells did run at once ...
    assert all(len(set(o)) == len(o) for o in runner.overlaps)  # ... never two on one device
    assert {d for o in runner.overlaps for d in o} == {"cuda:0", "cuda:1"}
    assert all("dtype=bfloat16" in " ".join(c) for c in runner.calls)


def test_jobs_resume_like_one_job(tmp_path):
    cells = sweep.build_grid(MODELS, ["oracle"], ["always"], ["gsm8k", "arc_easy"])
    out = sweep.run_sweep(cells, tmp_path, FakeRunner(fail_at=2), progress=False, jobs=3)
    assert len(out.ran) == 5 and len(out.failed) == 1
    again = FakeRunner()
    out2 = sweep.run_sweep(cells, tmp_path, again, progress=False, jobs=3)
    assert out2.ran == [out.failed[0][0]] and len(out2.skipped) == 5 and len(again.calls) == 1


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "3", "--devices", "cuda:0,cuda:1"], "names 2 devices but --jobs is 3"),
    (["--devices", "cuda:0", "--model-args-extra", "device=cpu"], "either in --model-args-extra or with --devices"),
])
def test_cli_bad_jobs_refused_before_any_cell(tmp_path, capsys, monkeypatch, argv, message):
    def boom(argv, output):
        raise AssertionError("a bad sweep must not run lm-eval")

    monkeypatch.setattr(sweep, "subprocess_runner", boom)
    assert main(["sweep", "--family", "pythia", "--models", "pythia-70m,pythia-160m", "--tasks", "gsm8k",
                 "--output-path", str(tmp_path), *argv]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_runner_exception_stops_the_sweep(tmp_path, jobs):
    cells = sweep.build_grid(MODELS, ["oracle"], ["always", "never"], ["gsm8k"])  # 6 cells
    calls = []

    def crash(argv, output):
        calls.append(argv)
        raise RuntimeError("scheduler unreachable")

    with pytest.raises(RuntimeError, match="scheduler unreachable"):
        sweep.run_sweep(cells, tmp_path, crash, progress=False, jobs=jobs)
    assert len(calls) <= jobs  # the cells already started, none after the failure
