"""``fsgen-eval demo``: end to end on a few fsgen_arith problems (real lm-eval runs of the arith pair),
resumption, and one-line errors for bad input before anything runs."""

from __future__ import annotations

import re
import shutil

import pytest

from fsgen_eval.experiments import demo
from fsgen_eval.cli import main
from _lm_eval_helpers import offline_env

CONFIG_LABELS = {"system1": "oracle/never", "system2": "oracle/never", "oracle": "oracle/always",
                 "speculative": "speculative[bild]/always",  # a method with variants is named with the one it ran
                 "contrastive": "contrastive[obrien]/always", "oracle-entropy": "oracle/entropy@"}


def _table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The first leaderboard's rows (the report's first table) keyed by ``pair configuration``
    (``method/router[@threshold]``); a header loses its ``↓``/``↑``, a cell keeps its first number (the
    value before its interval and best mark)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = [line for line in lines[start:start + next(i for i, line in enumerate(lines[start:]) if not line.startswith("|"))]
             if line.startswith("| ")]
    header = [c.strip().rstrip(" ↓↑") for c in table[0].strip("|").split("|")]
    first = lambda c: (m.group(0) if (m := re.search(r"-?\d+(\.\d+)?", c.replace("*", ""))) else c.strip())  # noqa: E731
    rows = [dict(zip(header, (c.strip() if h in ("configuration", "pair", "role") else first(c)
                              for h, c in zip(header, line.strip("|").split("|"))), strict=True)) for line in table[1:]]
    return {f"{row['pair']} {row['configuration']}": row for row in rows}


@pytest.mark.slow
def test_demo_end_to_end_then_resumes(tmp_path, capsys):
    import subprocess

    offline_env()
    out = tmp_path / "demo"
    argv = ["demo", "--limit", "2", "--max-gen-toks", "48", "--target-call-rate", "0.3", "--out", str(out)]
    n = len(demo.configs((0.3,)))
    status = ["git", "status", "--porcelain", "--untracked-files=all"]
    before = subprocess.run(status, cwd=demo.REPO, capture_output=True, text=True).stdout
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"demo: wall time \d+ s", printed) and f"report written to {out / 'report.md'}" in printed
    # progress on the screen as it happens: each configuration's start, its log, lm-eval's bar, its time
    assert re.search(rf"\[3/{n}\] running oracle .*lm_eval\.log", printed) and "generate_until requests" in printed
    assert re.search(rf"demo: \[{n}/{n}\] oracle-entropy ran in \d+ s", printed)
    assert subprocess.run(status, cwd=demo.REPO, capture_output=True, text=True).stdout == before
    md = (out / "report.md").read_text()
    rows = _table_rows(md)
    assert len(rows) == n
    for name, label in CONFIG_LABELS.items():
        assert any(k.split(" ")[-1].startswith(label) for k in rows), f"{name} ({label}) missing from the report table"
    rate = {k: float(r["collaboration rate"]) for k, r in rows.items()}
    call = {k: float(r["LLM call rate"]) for k, r in rows.items()}
    by_config = lambda label: [k for k in rows if k.split(" ")[-1].startswith(label)]  # noqa: E731
    (entropy,) = by_config("oracle/entropy@")
    (oracle,) = by_config("oracle/always")
    (speculative,) = by_config(CONFIG_LABELS["speculative"])
    # System 1 alone and System 2 alone never ask System 2; the oracle does at every token and is overruled at
    # some of them; greedy speculative emits the large model's tokens, so it hands off exactly where the oracle does
    assert len(by_config("oracle/never")) == 2
    assert all(rate[k] == 0.0 and call[k] == 0.0 for k in by_config("oracle/never"))
    assert 0.0 < rate[oracle] < 1.0 and call[oracle] == 1.0
    assert rate[speculative] == rate[oracle]
    assert 0.0 < call[entropy] < 1.0 and rate[by_config(CONFIG_LABELS["contrastive"])[0]] > 0.0
    html = (out / "report.html").read_text()
    assert html.count("<tr>") >= n + 1 and "data:image/png;base64," in html

    # rerun: every configuration is complete, nothing runs; a lost one is rerun alone
    shutil.rmtree(out / "runs" / "contrastive")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("already complete:") == n - 1  # the closing summary names each skipped folder once
    assert "running contrastive" in printed and "running oracle" not in printed
    assert len(_table_rows((out / "report.md").read_text())) == n


def test_the_arith_demo_needs_no_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("FSGEN_DATASETS_DIR", str(tmp_path / "nowhere"))
    assert demo.DEMO.dataset is None and demo.datasets_dir() is None  # fsgen_arith generates its problems


def test_a_demo_task_with_a_dataset_checks_it_in_one_line(tmp_path, monkeypatch, capsys):
    from dataclasses import replace
    from pathlib import Path

    monkeypatch.setattr(demo, "DEMO", replace(demo.DEMO, task="gsm8k", dataset=Path("openai") / "gsm8k"))
    monkeypatch.setenv("FSGEN_DATASETS_DIR", str(tmp_path / "nowhere"))
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no offline datasets" in err and "nowhere" in err
    assert not (tmp_path / "out").exists()  # nothing started
    monkeypatch.delenv("FSGEN_DATASETS_DIR", raising=False)
    import fsgen_eval.lm_eval.offline as offline  # the one default-folder rule (offline-cache's and the demo's)

    monkeypatch.setattr(offline, "CHECKOUT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="shared/hf-datasets.*default beside the repository"):
        demo.datasets_dir()


@pytest.mark.parametrize("flag,value,message", [
    ("--small", "micro-zz", "neither a family model"),
    ("--large", "micro-zz", "neither a family model"),
    ("--limit", "1", "--limit must be at least 2"),
    ("--target-call-rate", "1.5", "strictly between 0 and 1"),
])
def test_bad_arguments_are_one_line(tmp_path, monkeypatch, capsys, flag, value, message):
    monkeypatch.setenv("FSGEN_DATASETS_DIR", str(tmp_path))
    (tmp_path / "openai" / "gsm8k").mkdir(parents=True)  # datasets found: the argument is the problem
    assert main(["demo", flag, value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_same_model_twice_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FSGEN_DATASETS_DIR", str(tmp_path))
    (tmp_path / "openai" / "gsm8k").mkdir(parents=True)
    assert main(["demo", "--small", "micro-xl", "--large", "micro-xl", "--out", str(tmp_path / "o")]) == 2
    assert "same model" in capsys.readouterr().err


def test_a_committed_run_without_its_traces_is_rerun_without_a_warning(tmp_path, caplog):
    import json
    import logging

    from fsgen_eval.experiments.demo import completed

    cell = tmp_path / "oracle" / "a__b"
    cell.mkdir(parents=True)
    (cell / "results_T.json").write_text(json.dumps({"results": {}, "config": {"fsgen": {"traces": ["traces_T.jsonl"]}}}))
    with caplog.at_level(logging.WARNING):
        assert not completed(tmp_path / "oracle")  # a fresh clone: traces are not committed
    assert caplog.text == ""
    (cell / "traces_T.jsonl").write_text("{}\n")
    assert completed(tmp_path / "oracle")


REPO = demo.REPO


def test_default_output_is_outside_the_committed_files(monkeypatch, tmp_path, capsys):
    """A plain ``fsgen-eval demo`` writes to a git-ignored folder; the committed report needs a flag."""
    import subprocess

    monkeypatch.chdir(REPO)
    assert demo.DEFAULT_OUT != demo.COMMITTED_OUT and not demo.holds_committed_files(demo.DEFAULT_OUT)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(demo.DEFAULT_OUT / "report.md")], cwd=REPO)
    assert ignored.returncode == 0  # git status never shows it
    assert demo.holds_committed_files(demo.COMMITTED_OUT)
    monkeypatch.setenv("FSGEN_DATASETS_DIR", str(tmp_path))
    (tmp_path / "openai" / "gsm8k").mkdir(parents=True)
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    assert main(["demo", "--out", str(demo.COMMITTED_OUT), "--limit", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds committed files" in err and "--update-committed" in err
    assert subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout == before


def test_two_call_rates_give_two_routed_configurations():
    names = [c[0] for c in demo.configs((0.3, 0.6))]
    assert names == ["system1", "system2", "oracle", "speculative", "contrastive", "oracle-entropy-0.3",
                     "oracle-entropy-0.6"]
    assert [c[3] for c in demo.configs((0.3, 0.6)) if c[2] == "entropy"] == [0.3, 0.6]
    assert [c[0] for c in demo.configs((0.3,))][-1] == "oracle-entropy"  # one rate: no rate in the folder name


def test_progress_reaches_the_screen_and_everything_the_log(tmp_path, capsys):
    """lm-eval's progress bars (tqdm's carriage-return redraws) are echoed; the log keeps every byte."""
    import sys

    from fsgen_eval.experiments.sweep import subprocess_runner

    script = ("import sys, time\nprint('INFO lm-eval says hello', flush=True)\n"
              "for i in range(3):\n    sys.stderr.write(f'\\rRunning generate_until requests: {i*50}%|##| {i}/2')\n"
              "    sys.stderr.flush(); time.sleep(0.05)\nsys.stderr.write('\\n')\n")
    seen: list[str] = []
    assert subprocess_runner([sys.executable, "-c", script], tmp_path / "o", echo=seen.append) == 0
    assert seen[0] == "INFO lm-eval says hello" and seen[1:] == [f"Running generate_until requests: {i*50}%|##| {i}/2"
                                                                  for i in range(3)]
    log = (tmp_path / "o" / "lm_eval.log").read_bytes()
    assert b"hello" in log and log.count(b"\r") == 3
    progress = demo.Progress("oracle")
    for line in seen:
        progress(line)
    demo.Progress.end_line()
    shown = capsys.readouterr().out
    assert "oracle: Running generate_until requests: 0%" in shown and "hello" not in shown
    assert "100%|##| 2/2" not in shown or shown.endswith("\n")
