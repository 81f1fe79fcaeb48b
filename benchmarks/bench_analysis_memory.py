"""Memory and time of `analyze`, `report` and `check` on a large synthetic study, today's reader beside the new one.

Generates one finished run (``results_X.json`` + ``traces_X.jsonl``, router=always) of ``--tokens`` tokens in
records of 1..7 tokens (mean 4, the shape of the issue's 4 M-token probe: 1 M records), then runs each
command in a fresh subprocess per case and reads its peak RSS (``ru_maxrss``) and wall time:

- ``before``: the package as of ``--before`` (a git ref; extracted with ``git archive`` into a temporary
  folder), i.e. the record-by-record JSON reader with a dict of numpy arrays per record;
- ``after``: this checkout (the columnar reader of ``fsgen_eval/core/traces_io.py``);
- ``after-parquet``: this checkout's ``analyze`` on the same trace copied to Parquet (``traces_io.write_parquet``),
  which decides whether Parquet should become the written format.

Per million tokens = the measured value / (tokens / 1e6): time scales linearly with the tokens; memory has a
fixed part (the interpreter, numpy, scipy, matplotlib: ~100-200 MB), so the per-million memory figure
over-states large runs and the whole-run peak is printed beside it. One thread (OMP_NUM_THREADS=1).

    python benchmarks/bench_analysis_memory.py --tokens 2000000 --write benchmarks/results/analysis_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generate(folder: Path, tokens: int, seed: int = 0) -> Path:
    """One router=always run of ``tokens`` tokens: handoffs more likely where System 1's entropy is high."""
    from fsgen_eval.core.schema import TOKEN_FIELDS, summarize, trace_to_json

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = rng.integers(1, 8, size=tokens // 4 + 8)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), tokens)) + 1]
    lengths[-1] -= int(lengths.sum() - tokens)
    lengths = lengths[lengths > 0]
    n = int(lengths.sum())
    ent = rng.gamma(2.0, 0.5, n).astype(np.float32)
    handoff = rng.random(n) < np.clip(0.05 + 0.2 * ent, 0, 1)
    trace = {"token_id": rng.integers(0, 50000, n), "source": np.where(handoff, 2, 1), "llm_called": np.ones(n, bool),
             "handoff": handoff, "s1_entropy": ent, "s1_top1_prob": np.exp(-ent), "s1_margin": np.exp(-2 * ent),
             "s2_entropy": rng.gamma(2.0, 0.4, n).astype(np.float32), "s2_top1_prob": rng.uniform(0.3, 1, n),
             "s2_margin": rng.uniform(0, 0.3, n), "accepted": np.full(n, -1), "base_handoff": np.full(n, -1)}
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ts = "2026-01-01T00-00-00.000000"
    with open(folder / f"traces_{ts}.jsonl", "w") as fh:
        step = 20000  # records per write: trace_to_json over a block of tokens, then cut per record
        for a in range(0, len(lengths), step):
            lo, hi = offsets[a], offsets[min(a + step, len(lengths))]
            block = trace_to_json({k: trace[k][lo:hi] for k in TOKEN_FIELDS})
            lines = []
            for i in range(a, min(a + step, len(lengths))):
                s, e = offsets[i] - lo, offsets[i + 1] - lo
                rec = {"schema_version": 1, "run_id": "bench", "task": "gsm8k", "doc_id": i, "prompt_hash": "x",
                       "request_type": "generate_until", "method": "oracle", "router": "always", "rank": 0,
                       **{k: v[s:e] for k, v in block.items()},
                       "drafted_tokens": 0, "accepted_tokens": 0, "verification_steps": 0}
                lines.append(json.dumps(rec))
            fh.write("\n".join(lines) + "\n")
    summary = summarize([{"handoff": handoff, "llm_called": trace["llm_called"]}])
    fsgen = {"small": "bench/small", "large": "bench/large", "method": "oracle", "router": "always",
             "run_id": "bench", "summary": summary, "per_task": {"gsm8k": summary},
             "traces": [f"traces_{ts}.jsonl"]}
    results = {"results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.5,
                                     "exact_match_stderr,strict-match": 0.01}},
               "config": {"model": "fsgen", "fsgen": fsgen}}
    (folder / f"results_{ts}.json").write_text(json.dumps(results))
    return folder / f"traces_{ts}.jsonl"


def child(code_dir: str, argv: list[str]) -> None:
    """Run ``fsgen-eval ARGV`` from ``code_dir`` in this process and print its peak RSS and wall time."""
    sys.path.insert(0, code_dir)
    os.environ["PYTHONPATH"] = code_dir
    for name in [m for m in sys.modules if m.startswith("fsgen_eval")]:
        del sys.modules[name]
    from fsgen_eval.cli import main

    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        stdout, sys.stdout = sys.stdout, null
        try:
            rc = main(argv)
        finally:
            sys.stdout = stdout
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    print(json.dumps({"rc": rc, "seconds": seconds, "peak_rss_mib": peak}))


def run_case(code_dir: Path, argv: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONPATH": str(code_dir)}
    out = subprocess.run([sys.executable, __file__, "--child", str(code_dir), "--", *argv], env=env,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} from {code_dir}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract(ref: str, dest: Path) -> Path:
    """The package (and its family files) as of git ``ref``, in ``dest``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "fsgen_eval", "model_configs"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        child(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2_000_000)
    p.add_argument("--before", default="1b6533c", help="git ref of today's reader (before the columnar one)")
    p.add_argument("--commands", default="analyze,check,report")
    p.add_argument("--readers", default="before,after", help="before,after (side by side) or after alone")
    p.add_argument("--write", type=Path, help="keep every unrounded figure in this JSON")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        trace = generate(tmp / "study", args.tokens)
        gen_s = time.perf_counter() - t0
        sys.path.insert(0, str(ROOT))
        from fsgen_eval.core import traces_io

        parquet = traces_io.write_parquet(traces_io.read_trace_file(trace), tmp / "traces.parquet")
        size = {"jsonl_bytes": trace.stat().st_size, "parquet_bytes": parquet.stat().st_size}
        print(f"synthetic study: {args.tokens} tokens, JSONL {size['jsonl_bytes'] / 2**20:.0f} MiB, Parquet "
              f"{size['parquet_bytes'] / 2**20:.0f} MiB (generated in {gen_s:.0f} s)", flush=True)
        (tmp / "before").mkdir()
        before = extract(args.before, tmp / "before")
        argvs = {"analyze": ["analyze", str(tmp / "study")],
                 "check": ["check", str(tmp / "study"), "--baseline", str(tmp / "base.json"), "--update-baseline"],
                 "report": ["report", str(tmp / "study"), "-o", str(tmp / "rep"), "--n-boot", "10"]}
        cases = []
        for cmd in args.commands.split(","):
            for label, code in (("before", before), ("after", ROOT)):
                if label in args.readers.split(","):
                    cases.append((cmd, label, code, argvs[cmd]))
        cases.append(("analyze", "after-parquet", ROOT, ["analyze", str(parquet)]))
        rows = []
        per_m = args.tokens / 1e6
        print(f"{'command':8} {'reader':14} {'peak RSS MiB':>12} {'MiB / M tok':>11} {'s':>7} {'s / M tok':>9}")
        for cmd, label, code, argv in cases:
            r = run_case(code, argv)
            rows.append({"command": cmd, "reader": label, **r, "peak_rss_mib_per_m_tokens": r["peak_rss_mib"] / per_m,
                         "seconds_per_m_tokens": r["seconds"] / per_m})
            print(f"{cmd:8} {label:14} {r['peak_rss_mib']:12.0f} {r['peak_rss_mib'] / per_m:11.0f} "
                  f"{r['seconds']:7.1f} {r['seconds'] / per_m:9.1f}", flush=True)
    ratios = {}
    for cmd in args.commands.split(",") if "before" in args.readers.split(",") else []:
        b = next(r for r in rows if r["command"] == cmd and r["reader"] == "before")
        a = next(r for r in rows if r["command"] == cmd and r["reader"] == "after")
        ratios[cmd] = {"memory_after_over_before": a["peak_rss_mib"] / b["peak_rss_mib"],
                       "time_after_over_before": a["seconds"] / b["seconds"]}
        print(f"{cmd}: memory {ratios[cmd]['memory_after_over_before']:.3f}x, time "
              f"{ratios[cmd]['time_after_over_before']:.3f}x of today's")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps({"tokens": args.tokens, "before": args.before, **size, "cases": rows,
                                          "ratios": ratios, "threads": 1, "cpus": os.cpu_count(),
                                          "python": platform.python_version(),
                                          "note": "peak RSS per subprocess (ru_maxrss); per-million figures are "
                                                  "the run's value divided by tokens / 1e6"}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
