"""The micro study through the replaying sweep against the lockstep one, side by side in one run.

Both sweeps run the same cells (every micro pair, oracle/always, GSM8K and MBPP, ``--limit LIMIT``, fp32,
batch 8, one thread per job, ``--jobs`` cells at a time) into fresh folders, replay first, then lockstep, then
replay again and lockstep again when ``--repeats 2``; prints each wall time, the ratio replay / lockstep
(goal <= 0.4x) and the largest difference of any cell's collaboration rate (goal <= 1e-6). Under CPU
contention only the ratio of runs interleaved like this means something.

The replaying sweep runs as the study does (``--draft-lengths 1,...,8``: speculative counters included).
``--modes lockstep`` / ``--modes replay`` run one half; each half's wall time is kept in ``OUT/times.json``, and
the ratio is printed once both are there (say so when the halves ran at different times: only the ratio of
halves run under the same load means something).

Usage: python benchmarks/bench_replay_sweep.py [--limit 20] [--jobs 2] [--repeats 1] [--out runs/bench-replay]
       [--tasks gsm8k,mbpp] [--models m1,m2,...] [--modes replay,lockstep] [--write record.json]
       [--reference reports-or-sweep-folder]  (also compares every rate with another sweep's, e.g. LIMIT=all)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for k, v in {"HF_ALLOW_CODE_EVAL": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[k] = v

from fsgen_eval.analysis.files import find_runs  # noqa: E402
from fsgen_eval.cli import main as cli  # noqa: E402
from fsgen_eval.lm_eval.offline import build_offline_cache, default_source  # noqa: E402


def sweep(out: Path, limit: str, jobs: int, replay: bool, tasks: str = "gsm8k,mbpp", models: str | None = None
          ) -> float:
    if out.exists():
        shutil.rmtree(out)
    argv = ["sweep", "--family", "micro", "--methods", "oracle", "--routers", "always", "--tasks", tasks,
            "--jobs", str(jobs), "--output-path", str(out), "--model-args-extra", "dtype=float32,batch_size=8",
            "--lm-eval-args=--num_fewshot 3 --confirm_run_unsafe_code"]
    if limit != "all":
        argv += ["--limit", limit]
    if models:
        argv += ["--models", models]
    argv += ["--draft-lengths", "1,2,3,4,5,6,7,8"] if replay else ["--no-replay"]
    start = time.perf_counter()
    rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"sweep into {out} failed ({rc})")
    return time.perf_counter() - start


def summaries(folder: Path) -> dict[tuple[str, str, str], dict]:
    """(small, large, task) -> that cell's per-task summary, over every cell below ``folder`` (System 2 runs
    left out)."""
    out = {}
    for run in find_runs([folder]):
        if "_system2" in run.path.parts or run.fsgen.router != "always":
            continue
        for task, s in run.fsgen.per_task.items():
            out[(Path(run.fsgen.small).name, Path(run.fsgen.large).name, task)] = s
    return out


def rates(folder: Path) -> dict[tuple[str, str, str], float]:
    """(small, large, task) -> collaboration rate (unrounded), as :func:`summaries`."""
    return {k: s["collaboration_rate"] for k, s in summaries(folder).items()}


def write_record(path: Path, out: Path, saved: dict) -> None:
    """Both halves' times and every cell's unrounded rate and token count from each, as JSON."""
    rep, lock = summaries(out / "replay"), summaries(out / "lockstep")
    cells = [{"small": k[0], "large": k[1], "task": k[2], "generated_tokens": {"replay": rep[k]["generated_tokens"],
              "lockstep": lock[k]["generated_tokens"]}, "collaboration_rate": {
              "replay": rep[k]["collaboration_rate"], "lockstep": lock[k]["collaboration_rate"]}} for k in sorted(rep)]
    path.write_text(json.dumps({"halves": saved, "ratio": saved["replay"]["seconds"] / saved["lockstep"]["seconds"],
                                "largest_rate_difference": compare(rates(out / "replay"), rates(out / "lockstep"))[1],
                                "cells": cells}, indent=1) + "\n")


def compare(a: dict, b: dict) -> tuple[int, float]:
    if a.keys() != b.keys():
        raise SystemExit(f"different cells: {sorted(set(a) ^ set(b))}")
    return len(a), max(abs(a[k] - b[k]) for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", default="20")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-replay")
    ap.add_argument("--reference", type=Path, help="another sweep folder to compare every rate with")
    ap.add_argument("--tasks", default="gsm8k,mbpp", help="a part of the study: e.g. gsm8k")
    ap.add_argument("--models", help="a part of the family (the sweep's --models; default: every micro model)")
    ap.add_argument("--write", type=Path, help="also write both halves' times and every cell's unrounded rates "
                    "to this JSON file (e.g. reports/micro/replay_vs_lockstep.json)")
    ap.add_argument("--modes", default="replay,lockstep", help="which halves to run now (the other's time is "
                    "read from OUT/times.json)")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"replay", "lockstep"}:
        raise SystemExit(f"--modes: replay and/or lockstep, got {args.modes!r}")
    build_offline_cache(default_source())  # lm-eval's gsm8k/mbpp offline: datasets' and evaluate's own caches
    record = args.out / "times.json"
    times: dict[str, list[float]] = {"replay": [], "lockstep": []}
    saved = json.loads(record.read_text()) if record.is_file() else {}
    for _ in range(args.repeats):
        for mode in modes:
            t = sweep(args.out / mode, args.limit, args.jobs, mode == "replay", args.tasks, args.models)
            times[mode].append(t)
            print(f"{mode}: {t:.1f} s", flush=True)
            saved[mode] = {"seconds": min(times[mode]), "limit": args.limit, "jobs": args.jobs, "tasks": args.tasks,
                           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            args.out.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(saved, indent=1))
    if not all(m in saved for m in ("replay", "lockstep")):
        return
    r, l = saved["replay"]["seconds"], saved["lockstep"]["seconds"]
    if len(modes) < 2:
        print(f"(the halves ran separately: lockstep finished {saved['lockstep']['finished']}, replay "
              f"{saved['replay']['finished']})")
    n, diff = compare(rates(args.out / "replay"), rates(args.out / "lockstep"))
    print(f"LIMIT={args.limit}, tasks {args.tasks}, {n} (pair, task) rates, jobs={args.jobs}: replay {r:.1f} s "
          f"vs lockstep {l:.1f} s -> {r / l:.3f}x (goal <= 0.4x); largest rate difference {diff:.2e} (goal <= 1e-6)")
    if args.write:
        write_record(args.write, args.out, saved)
        print(f"wrote {args.write}")
    if args.reference:
        n, diff = compare(rates(args.out / "replay"), rates(args.reference))
        print(f"vs {args.reference}: {n} rates, largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
