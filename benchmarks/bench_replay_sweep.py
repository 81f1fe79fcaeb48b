"""The micro study through the replaying sweep against the lockstep one, side by side in one run.

Both sweeps run the same cells (every micro pair, oracle/always, GSM8K and MBPP, ``--limit LIMIT``, fp32,
batch 8, one thread per job, ``--jobs`` cells at a time) into fresh folders, replay first, then lockstep, then
replay again and lockstep again when ``--repeats 2``; prints each wall time, the ratio replay / lockstep
(goal <= 0.4x) and the largest difference of any cell's collaboration rate (goal <= 1e-6). Under CPU
contention only the ratio of runs interleaved like this means something.

Usage: python benchmarks/bench_replay_sweep.py [--limit 20] [--jobs 2] [--repeats 1] [--out runs/bench-replay]
       [--tasks gsm8k,mbpp] [--models m1,m2,...] [--reference reports-or-sweep-folder]  (also compares every rate with another sweep's, e.g. LIMIT=all)
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("FSGEN_DATASETS_DIR", str(REPO.parent / "shared" / "hf-datasets"))
for k, v in {"HF_ALLOW_CODE_EVAL": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[k] = v

from fsgen_eval.analysis.files import find_runs  # noqa: E402
from fsgen_eval.cli import main as cli  # noqa: E402


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
    if not replay:
        argv.append("--no-replay")
    start = time.perf_counter()
    rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"sweep into {out} failed ({rc})")
    return time.perf_counter() - start


def rates(folder: Path) -> dict[tuple[str, str, str], float]:
    """(small, large, task) -> collaboration rate, over every cell below ``folder`` (System 2 runs left out)."""
    out = {}
    for run in find_runs([folder]):
        if "_system2" in run.path.parts or run.fsgen.router != "always":
            continue
        for task, s in run.fsgen.per_task.items():
            out[(Path(run.fsgen.small).name, Path(run.fsgen.large).name, task)] = s["collaboration_rate"]
    return out


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
    args = ap.parse_args()
    times: dict[str, list[float]] = {"replay": [], "lockstep": []}
    for _ in range(args.repeats):
        for mode in ("replay", "lockstep"):
            t = sweep(args.out / mode, args.limit, args.jobs, mode == "replay", args.tasks, args.models)
            times[mode].append(t)
            print(f"{mode}: {t:.1f} s", flush=True)
    r, l = min(times["replay"]), min(times["lockstep"])
    n, diff = compare(rates(args.out / "replay"), rates(args.out / "lockstep"))
    print(f"LIMIT={args.limit}, tasks {args.tasks}, {n} (pair, task) rates, jobs={args.jobs}: replay {r:.1f} s vs lockstep {l:.1f} s "
          f"-> {r / l:.3f}x (goal <= 0.4x); largest rate difference {diff:.2e} (goal <= 1e-6)")
    if args.reference:
        n, diff = compare(rates(args.out / "replay"), rates(args.reference))
        print(f"vs {args.reference}: {n} rates, largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
