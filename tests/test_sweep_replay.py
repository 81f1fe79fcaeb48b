"""The sweep's replay mode with a fake runner: System 2 once per (large, task), one replay per group,
resume after a killed replay, lockstep for the rest, vLLM's arguments forwarded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsgen_eval.analysis.params import ParamCount
from fsgen_eval.cli import main
from fsgen_eval.experiments import sweep
from fsgen_eval.lm_eval.args import pair_name

MODELS = [ParamCount("m-big", "org/m-big", 9000), ParamCount("m-small", "org/m-small", 100),
          ParamCount("m-mid", "org/m-mid", 1000)]


class FakeRunner:
    """lm-eval writes a results file; replay writes one ``<small>__<large>`` folder per small model, and
    fails (like a killed replay) on the call numbered ``fail_at``."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, argv: list[str], output: Path) -> int:
        self.calls.append(argv)
        if len(self.calls) == self.fail_at:
            return 137
        if "replay" in argv:
            large = argv[argv.index("--large") + 1]
            for small in argv[argv.index("--small") + 1].split(","):
                sub = output / pair_name(small, large)
                sub.mkdir(parents=True)
                (sub / "results_1.json").write_text(json.dumps({"config": {"fsgen": {"small": small}}}))
            return 0
        sub = output / "model"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "results_1.json").write_text("{}")
        return 0


def kinds(calls):
    return ["replay" if "replay" in c else c[c.index("--model") + 1] for c in calls]


def test_system2_once_per_large_and_task_then_one_replay(tmp_path):
    cells = sweep.build_grid(MODELS, ["oracle", "contrastive"], ["always"], ["gsm8k"])  # 3 pairs x 2 methods
    runner = FakeRunner()
    out = sweep.run_sweep(cells, tmp_path, runner, progress=False, replay=True, system2_model="hf",
                          model_args_extra="dtype=float32,batch_size=4", draft_lengths=[1, 2])
    assert not out.failed and len(out.ran) == 6
    # two larges (m-mid, m-big): System 2 + replay each; three contrastive cells lockstep
    assert sorted(kinds(runner.calls)) == sorted(["hf", "replay", "hf", "replay", "fsgen", "fsgen", "fsgen"])
    s2 = [c for c in runner.calls if "hf" in c]
    assert all("--log_samples" in c for c in s2)
    replay = next(c for c in runner.calls if "replay" in c and "org/m-big" in c)
    assert replay[replay.index("--small") + 1] == "org/m-small,org/m-mid"
    assert replay[replay.index("--batch-size") + 1] == "4" and replay[replay.index("--draft-lengths") + 1] == "1,2"
    for c in cells:
        assert sweep.is_done(tmp_path / c.relpath)
    assert not list(tmp_path.rglob("*.tmp"))
    again = FakeRunner()
    assert len(sweep.run_sweep(cells, tmp_path, again, progress=False, replay=True).skipped) == 6 and not again.calls


def test_killed_replay_is_redone_and_system2_reused(tmp_path):
    cells = sweep.build_grid(MODELS, ["oracle"], ["always"], ["gsm8k"])
    killed = FakeRunner(fail_at=2)  # System 2 of the first group, then its replay dies
    out = sweep.run_sweep(cells, tmp_path, killed, progress=False, replay=True)
    assert out.failed and all("replay exited 137" in e for _, e in out.failed)
    again = FakeRunner()
    out2 = sweep.run_sweep(cells, tmp_path, again, progress=False, replay=True)
    assert not out2.failed
    # only the killed group's replay runs again; its finished System 2 run is reused
    assert kinds(again.calls) == ["replay"]
    assert all(sweep.is_done(tmp_path / c.relpath) for c in cells)


def test_system2_commands_per_model_class():
    job = sweep.System2Job("org/l", "gsm8k")
    fs = job.command(Path("/o"), "fsgen", model_args_extra="dtype=float32")
    assert fs[fs.index("--model_args") + 1] == "small=org/l,large=org/l,method=oracle,router=never,trace=true,dtype=float32"
    vl = job.command(Path("/o"), "vllm", vllm_args={"tensor_parallel_size": "2", "gpu_memory_utilization": "0.8"})
    assert vl[vl.index("--model") + 1] == "vllm"
    assert vl[vl.index("--model_args") + 1] == "pretrained=org/l,tensor_parallel_size=2,gpu_memory_utilization=0.8"
    with pytest.raises(ValueError, match="unknown --system2-model"):
        job.command(Path("/o"), "sglang")
    # batch_size/device: lm-eval's own flags for its classes (in their model_args they were given twice)
    for cls in ("vllm", "hf"):
        cmd = job.command(Path("/o"), cls, model_args_extra="dtype=float32,batch_size=8,device=cpu")
        assert cmd[cmd.index("--model_args") + 1] == "pretrained=org/l,dtype=float32"
        assert cmd[cmd.index("--batch_size") + 1] == "8" and cmd[cmd.index("--device") + 1] == "cpu"
    fs = job.command(Path("/o"), "fsgen", model_args_extra="batch_size=8")
    # fsgen keeps it in its model_args, and lm-eval is told too, so that its own record (config.batch_size) is true
    assert fs[fs.index("--model_args") + 1].endswith(",batch_size=8") and fs[fs.index("--batch_size") + 1] == "8"


def test_cli_refuses_vllm_args_without_vllm(tmp_path, capsys):
    assert main(["sweep", "--family", "micro", "--tasks", "gsm8k", "--output-path", str(tmp_path),
                 "--data-parallel-size", "2", "--dry-run"]) == 2
    assert "needs --system2-model vllm" in capsys.readouterr().err


def test_cli_system2_vllm_args_reach_lm_eval_and_bad_ones_are_one_line(tmp_path, capsys, monkeypatch):
    """--system2-vllm-args join --tensor-parallel-size in System 2's vllm model args (the dry run prints the
    command); without --system2-model vllm, or naming a key a flag already gives, they are refused in one line."""
    from fsgen_eval.engine.backends import vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    base = ["sweep", "--family", "micro", "--models", "micro-s,micro-l", "--tasks", "gsm8k", "--output-path",
            str(tmp_path / "s"), "--dry-run", "--system2-vllm-args", "enforce_eager=True,max_model_len=2048"]
    assert main([*base, "--system2-model", "vllm", "--tensor-parallel-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "micro-l,tensor_parallel_size=2,enforce_eager=True,max_model_len=2048 --tasks gsm8k" in out
    assert main(base) == 2
    assert capsys.readouterr().err.strip() == \
        "fsgen-eval sweep: error: --system2-vllm-args are lm-eval's vllm model args: they need --system2-model vllm"
    assert main([*base[:-1], "tensor_parallel_size=1", "--system2-model", "vllm", "--tensor-parallel-size", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tensor_parallel_size given twice" in err and len(err.splitlines()) == 1


def test_cli_refuses_system2_on_vllm_where_vllm_is_not_installed(tmp_path, capsys, monkeypatch):
    """One line naming the extra, before any cell (nothing written under the output folder)."""
    from fsgen_eval.engine.backends import vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    out = tmp_path / "sweep"
    assert main(["sweep", "--family", "micro", "--tasks", "gsm8k", "--output-path", str(out),
                 "--system2-model", "vllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "fsgen-eval[vllm]" in err and "docs/vllm.md" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_scoring_vllm_goes_to_every_replay_and_bad_scoring_input_is_one_line(tmp_path, capsys, monkeypatch):
    """--scoring vllm (with its top-K and engine arguments) is appended to each group's replay command; the
    scoring options without it, with --no-replay, or a max_logprobs below the vocabulary an exact scoring
    needs are refused in one line before any cell (nothing written)."""
    from fsgen_eval.engine.backends import vllm_backend

    base = ["sweep", "--family", "micro", "--models", "micro-xs,micro-s", "--tasks", "gsm8k"]
    assert main([*base, "--output-path", str(tmp_path), "--dry-run", "--scoring", "vllm",
                 "--scoring-vllm-args", "max_model_len=2048,tensor_parallel_size=1"]) == 0
    replays = [line for line in capsys.readouterr().out.splitlines() if " replay " in line]
    assert replays and all(line.endswith("--scoring vllm --scoring-topk 0 --vllm-args "
                                         "max_model_len=2048,tensor_parallel_size=1") for line in replays)
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    out = tmp_path / "sweep"
    for extra, words in ((["--scoring-topk", "20"], "are for --scoring vllm"),
                         (["--scoring", "vllm", "--no-replay"], "cannot go with --no-replay"),
                         (["--scoring", "vllm", "--scoring-vllm-args", "max_logprobs=20"],
                          "max_logprobs=20 is below the whole vocabulary (2048)")):
        assert main([*base, "--output-path", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_cli_dry_run_shows_replay_groups(tmp_path, capsys):
    assert main(["sweep", "--family", "micro", "--tasks", "gsm8k", "--output-path", str(tmp_path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("System 2 once") == 4 and text.count("(replayed)") == 10
    assert main(["sweep", "--family", "micro", "--tasks", "gsm8k", "--output-path", str(tmp_path), "--dry-run",
                 "--no-replay"]) == 0
    assert "replayed" not in capsys.readouterr().out


def test_replay_group_takes_the_job_and_cell_locks(tmp_path):
    """A cell another sweep holds is refused and left out of the replay; a held group is refused whole."""
    cells = sweep.build_grid(MODELS, ["oracle"], ["always"], ["gsm8k"])
    groups = sweep.replay_groups(cells)
    (big_job, big_cells), (mid_job, mid_cells) = sorted(groups.items(), key=lambda g: len(g[1]), reverse=True)
    held_cell = big_cells[0]
    runner = FakeRunner()
    with sweep.cell_lock(tmp_path / held_cell.relpath), sweep.cell_lock(tmp_path / mid_job.relpath):
        out = sweep.run_sweep(cells, tmp_path, runner, progress=False, replay=True)
    failed = dict(out.failed)
    assert set(failed) == {held_cell, *mid_cells} and all("another sweep" in e for e in failed.values())
    assert out.ran == [c for c in big_cells if c != held_cell]
    (replay,) = [c for c in runner.calls if "replay" in c]  # the held group ran nothing, not even System 2
    assert replay[replay.index("--small") + 1] == ",".join(c.small for c in out.ran)
    assert kinds(runner.calls) == ["fsgen", "replay"]


def test_replay_model_args_from_the_registry():
    assert sweep.replay_model_args("dtype=float32, batch_size=4") == {"dtype": "float32", "batch_size": "4"}
    with pytest.raises(ValueError, match="num_draft, a method's or router's parameter"):
        sweep.replay_model_args("dtype=float32,num_draft=3")
    with pytest.raises(ValueError, match="key=value"):
        sweep.replay_model_args("dtype")
    with pytest.raises(ValueError, match="threshold"):  # refused before any cell starts
        sweep.run_sweep(sweep.build_grid(MODELS, ["oracle"], ["always"], ["gsm8k"]), Path("/nonexistent"),
                        FakeRunner(), progress=False, replay=True, model_args_extra="threshold=1")


def test_groups_with_the_most_cells_start_first(tmp_path):
    """In a family sweep the large model of the most pairs is the biggest: its group runs first."""
    cells = sweep.build_grid(MODELS, ["oracle"], ["always"], ["gsm8k", "mbpp"])
    runner = FakeRunner()
    assert not sweep.run_sweep(cells, tmp_path, runner, progress=False, replay=True, system2_model="hf").failed
    s2 = [c for c in runner.calls if "replay" not in c]
    firsts = [c[c.index("--model_args") + 1] for c in s2]
    assert len(firsts) == 4 and all("org/m-big" in a for a in firsts[:2]) and all("org/m-mid" in a for a in firsts[2:])
