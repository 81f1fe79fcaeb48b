"""A finished replaying sweep replayed again with this tree's code: the same System 2 runs, every cell compared.

Copies ``SOURCE/_system2`` (System 2's lm-eval runs, not regenerated: the sweep reuses finished ones) into a
fresh ``--out`` folder and runs the same sweep there (every micro pair, oracle/``always``, the tasks' whole
test sets unless ``--limit``, fp32, batch 8, draft lengths 1..8, ``--jobs`` cells at once, one thread each), so
only the replays run, on this tree (the copied runs' model paths are pointed at this checkout's ``models/`` where
the files are the same bytes, so the large model's statistics come from System 2's trace as in the source).
Then, per (small, large, task) cell, the two sweeps' per-task summaries
(collaboration rate, tokens, handoffs, speculative counters, ...: every field but times) must be equal, and
the replays' seconds (System 1's scoring and the large model's tails and statistics) are set side by side.

A check that a change to the replay (e.g. its tails moving into the engine's loop) leaves every cell of a whole
study as it was, and what it did to the replays' time. The two sweeps ran at different times: their seconds
are comparable only under the same load (the file records both start times).

Usage: python benchmarks/bench_replay_again.py SOURCE --out runs/replay-again [--limit N] [--models a,b,...]
       [--tasks gsm8k,mbpp] [--jobs 2] [--write benchmarks/results/replay_again.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for k, v in {"HF_ALLOW_CODE_EVAL": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[k] = v

from bench_replay_sweep import summaries  # noqa: E402  (this folder's scripts: run as a script, it is on the path)
from bench_vllm import replay_seconds  # noqa: E402
from fsgen_eval.cli import main as cli  # noqa: E402
from fsgen_eval.lm_eval.offline import build_offline_cache, default_source  # noqa: E402

TIMES = ("seconds",)  # summary fields that measure time, not outcome


def cells(folder: Path) -> dict[tuple[str, str, str], dict]:
    """(small, large, task) -> the cell's per-task summary without time fields (bench_replay_sweep's
    :func:`summaries`)."""
    return {k: {f: v for f, v in s.items() if not any(t in f for t in TIMES)} for k, s in summaries(folder).items()}


def same_files(a: Path, b: Path) -> bool:
    """Whether folders ``a`` and ``b`` hold the same files, byte for byte (a model in two checkouts)."""
    def digest(d: Path) -> dict[str, str]:
        return {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.rglob("*"))
                if f.is_file()}
    return a.is_dir() and b.is_dir() and digest(a) == digest(b)


def rebase_models(folder: Path) -> list[str]:
    """Point the copied System 2 runs' model paths (``<checkout>/models/...``) at this checkout's ``models/``
    where both folders hold the same bytes, so the replay recognises the large model as System 2's own and
    takes its statistics from System 2's trace, as the source sweep did (a path of another checkout is
    another model to it). Returns the models rebased."""
    pattern = re.compile(r'"(/[^"]+?)/models/([^"]+)"')
    rebased: set[str] = set()

    def swap(m: re.Match) -> str:
        src, here = Path(m.group(1)) / "models" / m.group(2), REPO / "models" / m.group(2)
        if src != here and same_files(src, here):
            rebased.add(m.group(2))
            return json.dumps(str(here))
        return m.group(0)

    for p in folder.rglob("results_*.json"):
        p.write_text(pattern.sub(swap, p.read_text()))
    return sorted(rebased)


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a finished replaying sweep's folder (with its _system2/)")
    ap.add_argument("--out", type=Path, required=True, help="a new folder (refused if it exists)")
    ap.add_argument("--limit", help="the source sweep's --limit (default: none, the whole test sets)")
    ap.add_argument("--tasks", default="gsm8k,mbpp")
    ap.add_argument("--models", help="the source sweep's --models (default: every micro model)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--write", type=Path, help="write the comparison and both times to this JSON file")
    a = ap.parse_args()
    if not (a.source / "_system2").is_dir():
        raise SystemExit(f"{a.source}: no _system2/ folder (not a finished replaying sweep)")
    if a.out.exists():
        raise SystemExit(f"--out {a.out} exists: give a new folder")
    before = cells(a.source)
    if not before:
        raise SystemExit(f"{a.source}: no finished cells")
    shutil.copytree(a.source / "_system2", a.out / "_system2")
    rebased = rebase_models(a.out / "_system2")
    argv = ["sweep", "--family", "micro", "--methods", "oracle", "--routers", "always", "--tasks", a.tasks,
            "--jobs", str(a.jobs), "--output-path", str(a.out), "--model-args-extra", "dtype=float32,batch_size=8",
            "--lm-eval-args=--num_fewshot 3 --confirm_run_unsafe_code", "--draft-lengths", "1,2,3,4,5,6,7,8",
            *(["--limit", a.limit] if a.limit else []), *(["--models", a.models] if a.models else [])]
    build_offline_cache(default_source())  # lm-eval's gsm8k/mbpp offline: datasets' and evaluate's own caches
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    code = commit()  # the tree that runs the replays (taken before they run)
    t0 = time.perf_counter()
    if cli(argv) != 0:
        raise SystemExit(f"the sweep into {a.out} failed")
    wall = time.perf_counter() - t0
    after = cells(a.out)
    if before.keys() != after.keys():
        raise SystemExit(f"different cells: {sorted(set(before) ^ set(after))}")
    differ = {"/".join(k): [f for f in before[k] if before[k][f] != after[k].get(f)] for k in sorted(before)}
    differ = {k: v for k, v in differ.items() if v}
    s0, s1 = replay_seconds(a.source), replay_seconds(a.out)
    record = {"source": str(a.source), "commit": code, "started": started, "sweep_wall_s": wall,
              "models_rebased": rebased, "cells": len(before), "cells_differing": differ,
              "tokens": sum(c["generated_tokens"] for c in after.values()),
              "replay_seconds": {"source": s0, "again": s1},
              "again_over_source": (s1["small"] + s1["large"]) / (s0["small"] + s0["large"]),
              "large_again_over_source": s1["large"] / s0["large"]}
    print(f"{len(before)} cells, {len(differ)} differing ({differ or 'none'}); replays' seconds: source "
          f"{s0['small'] + s0['large']:.1f} s, again {s1['small'] + s1['large']:.1f} s "
          f"({record['again_over_source']:.3f}x; the large model's part {record['large_again_over_source']:.3f}x)")
    if a.write:
        a.write.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {a.write}")
    if differ:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
