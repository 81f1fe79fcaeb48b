"""Cells per hour: a sweep's cells one lm-eval process each, against the cells of a pair and task in one process.

Both sweeps run the same grid (arith-s -> arith-l, oracle with routers always, never and entropy at two
thresholds, one arith level, ``--limit LIMIT``, fp32, batch 8, lockstep, one job, one torch thread) into fresh
folders, per-process first, then in-process (then again with ``--repeats 2``); prints each wall time, cells per
hour and the ratio, and checks that every cell's metric and fsgen summary are equal in both. Under CPU
contention only the ratio of runs interleaved like this means something; say how loaded the machine was.

Usage: python benchmarks/bench_cells.py [--limit 3] [--routers always,never,entropy@1,entropy@2]
       [--repeats 1] [--out runs/bench-cells] [--write benchmarks/results/cells.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[k] = v

from fsgen_eval.analysis.files import find_runs  # noqa: E402
from fsgen_eval.cli import main as cli  # noqa: E402

MODES = {"per_process": ["--per-process"], "in_process": []}


def sweep(out: Path, limit: str, routers: str, task: str, mode: str) -> float:
    if out.exists():
        shutil.rmtree(out)
    argv = ["sweep", "--family", "arith", "--models", "arith-s,arith-l", "--methods", "oracle", "--routers", routers,
            "--tasks", task, "--output-path", str(out), "--limit", limit, "--no-replay",
            "--model-args-extra", "dtype=float32,batch_size=8", "--lm-eval-args=--include_path tasks/",
            *MODES[mode]]
    start = time.perf_counter()
    if cli(argv) != 0:
        raise SystemExit(f"sweep into {out} failed")
    return time.perf_counter() - start


def outcomes(folder: Path) -> dict[str, dict]:
    """cell (router, threshold) -> its results' metrics and fsgen summary, unrounded."""
    out = {}
    for run in find_runs([folder]):
        out[f"{run.fsgen.router}@{run.fsgen.threshold}"] = {"results": run.results, "summary": run.fsgen.summary}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", default="3")
    ap.add_argument("--routers", default="always,never,entropy@1,entropy@2")
    ap.add_argument("--task", default="fsgen_arith_level1")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-cells")
    ap.add_argument("--write", type=Path, help="write the times, cells per hour and ratio as JSON")
    args = ap.parse_args()
    n_cells = len(args.routers.split(","))
    times: dict[str, list[float]] = {m: [] for m in MODES}
    load = []
    for _ in range(args.repeats):
        for mode in MODES:
            load.append(os.getloadavg()[0])
            t = sweep(args.out / mode, args.limit, args.routers, args.task, mode)
            times[mode].append(t)
            print(f"{mode}: {n_cells} cells in {t:.1f} s ({3600 * n_cells / t:.1f} cells per hour)", flush=True)
    same = outcomes(args.out / "per_process") == outcomes(args.out / "in_process")
    best = {m: min(ts) for m, ts in times.items()}
    ratio = best["in_process"] / best["per_process"]
    print(f"{n_cells} cells (arith-s -> arith-l, {args.task}, --limit {args.limit}): in-process {best['in_process']:.1f} s"
          f" vs per-process {best['per_process']:.1f} s -> {ratio:.3f}x the time, "
          f"{1 / ratio:.2f}x the cells per hour; every cell's metrics and summary equal: {same}")
    if args.write:
        record = {"cells": n_cells, "task": args.task, "limit": args.limit, "routers": args.routers,
                  "seconds": times, "best_seconds": best,
                  "cells_per_hour": {m: 3600 * n_cells / s for m, s in best.items()},
                  "ratio_in_process_over_per_process": ratio, "metrics_and_summaries_equal": same,
                  "load_average_1min_at_start": load, "cpus": os.cpu_count(),
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.write}")
    if not same:
        raise SystemExit("the two sweeps' cells differ")


if __name__ == "__main__":
    main()
