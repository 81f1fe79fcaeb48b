"""Every command in README.md and docs/*.md, run as written from a fresh copy of the repository.

The fenced ``bash`` blocks are the documented commands (a line ending in ``\\`` continues on the next). A
trailing comment marks the exceptions, or a first line ``# hub...`` marks a whole block:

- ``# hub``: needs models from the Hugging Face hub; not run offline;
- ``# ci``: ``.ci/run`` runs exactly this on a fresh clone (checked here: it must be there verbatim);
- ``# synopsis``: a command's form, with placeholders for the user's files (its runnable use is tested
  elsewhere, e.g. tests/test_learned_router.py); not run;
- ``# long``: minutes to hours (the whole study, training the zoo); run here with ``FSGEN_DRY_RUN=1``, which
  makes ``fsgen-eval sweep``, ``fsgen-eval zoo train`` and ``scripts/micro_study.sh`` check their arguments
  and print their plan without running it.

Everything else runs as written, one bash script per block (so an ``export`` carries to the next line), in a
copy of the repository's tracked files with ``../shared`` beside it, as in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SHARED, skip_or_fail

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
MARK = re.compile(r"\s#\s*(hub|ci|long|synopsis)\b")


@dataclass
class Command:
    doc: str
    text: str  # the command as written, continuation lines joined as the shell would read them
    mark: str | None  # hub, ci, long, synopsis or None


def documented_blocks() -> list[list[Command]]:
    blocks = []
    for doc in DOCS:
        for body in re.findall(r"^```bash\n(.*?)^```", (REPO / doc).read_text(), re.S | re.M):
            lines = body.replace("\\\n", " ").splitlines()
            block_mark = MARK.match(" " + lines[0]).group(1) if MARK.match(" " + lines[0]) else None
            commands = []
            for line in lines:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                found = MARK.search(line)
                commands.append(Command(doc, line, found.group(1) if found else block_mark))
            blocks.append(commands)
    return blocks


def _without_comment(text: str) -> str:
    return re.split(r"\s\s+#", text)[0].rstrip()


def test_every_documented_command_is_runnable_or_marked():
    commands = [c for block in documented_blocks() for c in block]
    assert len(commands) >= 15, [c.text for c in commands]
    ci_script = (REPO / ".ci" / "run").read_text()
    for cmd in commands:
        if cmd.mark == "ci":  # CI runs it verbatim on a fresh clone
            assert _without_comment(cmd.text) in ci_script, f"{cmd.doc}: .ci/run does not run {cmd.text!r}"
        elif cmd.mark is None:  # runnable as written: no placeholders or optional-argument brackets
            placeholder = re.search(r"\[--|/path/to|<\w+>|=\.\.\.", _without_comment(cmd.text))
            assert not placeholder, f"{cmd.doc}: not runnable as written: {cmd.text}"
    # the README's first two commands are what CI runs
    readme = [c for c in documented_blocks()[0]]
    assert [c.mark for c in readme[:2]] == ["ci", "ci"]


def _fresh_copy(tmp_path: Path) -> Path:
    """The repository's tracked files (their working-tree content) with ../shared beside them, as CI has it."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    copy = tmp_path / "repo"
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    (tmp_path / "shared").symlink_to(SHARED)
    return copy


def _script(block: list[Command]) -> str | None:
    lines = ["set -eo pipefail"]
    for cmd in block:
        if cmd.mark in ("hub", "ci", "synopsis"):
            continue
        lines += ["export FSGEN_DRY_RUN=1"] if cmd.mark == "long" else []
        lines.append(cmd.text)
        if _without_comment(cmd.text).endswith("&"):  # a background job: its exit status too
            lines.append("wait $!")
        lines += ["unset FSGEN_DRY_RUN"] if cmd.mark == "long" else []
    return "\n".join(lines) if len(lines) > 1 else None


@pytest.mark.slow
def test_documented_commands_run_as_written_from_a_fresh_copy(tmp_path):
    if not (SHARED / "hf-datasets").is_dir():
        skip_or_fail(f"offline datasets folder {SHARED / 'hf-datasets'} is absent")
    copy = _fresh_copy(tmp_path)
    committed = {p.relative_to(copy): p.read_bytes() for p in (copy / "reports").rglob("*")
                 if p.is_file() and p.relative_to(copy / "reports").parts[0] in ("micro", "arith")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSGEN_", "LIMIT", "OUT", "REPORT", "FORCE"))}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(copy),
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    ran = 0
    for block in documented_blocks():
        script = _script(block)
        if script is None:
            continue
        proc = subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True,
                              timeout=1200)
        assert proc.returncode == 0, f"{block[0].doc}:\n{script}\n--- stderr:\n{proc.stderr[-3000:]}"
        ran += 1
    assert ran >= 5
    # what they wrote went where they said: the committed studies and reports are untouched
    after = {p.relative_to(copy): p.read_bytes() for p in (copy / "reports").rglob("*")
                 if p.is_file() and p.relative_to(copy / "reports").parts[0] in ("micro", "arith")}
    assert after == committed
    assert (copy / "runs" / "toy" / "toy.yaml").is_file() and list((copy / "runs" / "demo-xs-m").rglob("results_*.json"))
