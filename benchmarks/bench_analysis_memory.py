"""Memory and time of `analyze`, `report` and `check` on large synthetic studies, today's reader beside the new one.

Two sizes, each one finished run (router=always) in records of 1..7 tokens (mean 4, the shape of the
issue's 4 M-token probe):

- ``--before-tokens`` (default 1 M): a JSONL study (``results_X.json`` + ``traces_X.jsonl``) read side by
  side by ``before`` (the package as of ``--before``, extracted with ``git archive``: the record-by-record
  JSON reader with a dict of numpy arrays per record) and ``after`` (this checkout), and the same trace as
  Parquet read by ``after-parquet``: the ratios come from this size;
- ``--tokens`` (default 10 M, the issue's goal: each command within 1 GiB and one minute): a Parquet study
  (``traces_X.parquet``, what ``fsgen-eval traces convert`` makes of a JSONL study) read by ``after-parquet``,
  and with ``--previous REF`` also by ``previous-parquet`` (the package as of REF), command by command side by
  side: the ratios at this size come from these two. It is written from arrays, not through JSONL: a 10 M-token
  JSONL (2 GB) takes ~10 min to write on the loaded machine, and the JSONL reader's cost per million tokens is
  measured at the first size (``--before-tokens 0`` skips it).

Each command runs in a fresh subprocess per case; its peak RSS (``VmHWM`` of /proc/self/status; ``ru_maxrss``
of such a child starts at its parent's RSS, which put 2 GiB on every 10 M-token case) and wall time are recorded.
Per million tokens = the measured value / (tokens / 1e6): time scales linearly with the tokens; memory has a
fixed part (the interpreter, numpy, pyarrow, matplotlib: ~100-200 MB), so the per-million memory figure
over-states large runs and the whole-run peak is printed beside it. One thread (OMP_NUM_THREADS=1).

    python benchmarks/bench_analysis_memory.py --before-tokens 1000000 --tokens 10000000 \
        --write benchmarks/results/analysis_memory_10m.json
    python benchmarks/bench_analysis_memory.py --before-tokens 0 --tokens 10000000 --previous b520170 \
        --write benchmarks/results/analysis_memory_10m_columns.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


TS = "2026-01-01T00-00-00.000000"


def synthetic(tokens: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(record lengths [R], token fields [N]) of a router=always run: handoffs likelier where entropy is high."""
    rng = np.random.default_rng(seed)
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
    return lengths, trace


def write_results(folder: Path, trace_name: str, trace: dict[str, np.ndarray]) -> None:
    """The results file of the synthetic run, naming ``trace_name`` (its summary from ``trace``)."""
    from fsgen_eval.core.schema import summarize

    summary = summarize([{"handoff": trace["handoff"], "llm_called": trace["llm_called"]}])
    fsgen = {"small": "bench/small", "large": "bench/large", "method": "oracle", "router": "always",
             "run_id": "bench", "summary": summary, "per_task": {"gsm8k": summary}, "traces": [trace_name]}
    results = {"results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.5,
                                     "exact_match_stderr,strict-match": 0.01}},
               "config": {"model": "fsgen", "fsgen": fsgen}}
    (folder / f"results_{TS}.json").write_text(json.dumps(results))


def generate_parquet(folder: Path, tokens: int, seed: int = 0) -> Path:
    """The run of :func:`synthetic` as a Parquet study, written from the arrays (no JSONL in between)."""
    from fsgen_eval.core import traces_io
    from fsgen_eval.core.schema import COUNTERS, FIELD_DTYPES

    lengths, trace = synthetic(tokens, seed)
    folder.mkdir(parents=True, exist_ok=True)
    r = len(lengths)
    strings = {k: np.full(r, v, dtype=object) for k, v in (("run_id", "bench"), ("task", "gsm8k"),
                                                            ("request_type", "generate_until"))}
    table = traces_io.TraceTable(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                                 {k: v.astype(FIELD_DTYPES[k]) for k, v in trace.items()},
                                 {**strings, "doc_id": np.arange(r, dtype=np.int64),
                                  **{k: np.zeros(r, np.int64) for k in COUNTERS}},
                                 np.arange(r, dtype=np.int64), np.zeros(r, np.int64))
    out = traces_io.write_parquet(table, folder / f"traces_{TS}.parquet")
    write_results(folder, out.name, trace)
    return out


def generate(folder: Path, tokens: int, seed: int = 0) -> Path:
    """The run of :func:`synthetic` as a JSONL study (``results_X.json`` + ``traces_X.jsonl``)."""
    from fsgen_eval.core.schema import TOKEN_FIELDS, trace_to_json

    lengths, trace = synthetic(tokens, seed)
    folder.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ts = TS
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
    write_results(folder, f"traces_{ts}.jsonl", trace)
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
    print(json.dumps({"rc": rc, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process image's peak RSS (``VmHWM``). Not ``ru_maxrss``: after fork + exec it starts at the
    parent's RSS (Linux keeps the larger), so a child of a parent holding 2 GB read 2032 MiB whatever it did."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: an upper bound


def run_case(code_dir: Path, argv: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONPATH": str(code_dir)}
    out = subprocess.run([sys.executable, __file__, "--child", str(code_dir), "--", *argv], env=env,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} from {code_dir}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract(ref: str, dest: Path) -> Path:
    """The package (its shipped folders, and pyproject.toml: a checkout finds them by it) as of git
    ``ref``, in ``dest``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "fsgen_eval", "model_configs", "models", "tasks",
                              "pyproject.toml"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_child_if_asked(argv: list[str]) -> bool:
    """Run the case :func:`run_case` started this script for (``--child CODE_DIR -- ARGV``); ``False`` when
    ``argv`` is not one (the benchmark itself then runs)."""
    if "--child" not in argv:
        return False
    i = argv.index("--child")
    child(argv[i + 1], argv[argv.index("--") + 1:])
    return True


def main() -> int:
    if run_child_if_asked(sys.argv):
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=10_000_000, help="the Parquet study's size (this checkout)")
    p.add_argument("--before-tokens", type=int, default=1_000_000, help="the side-by-side JSONL study's size")
    p.add_argument("--before", default="1b6533c", help="git ref of today's reader (before the columnar one)")
    p.add_argument("--commands", default="analyze,check,report")
    p.add_argument("--readers", default="before,after", help="before,after (side by side) or after alone")
    p.add_argument("--previous", help="git ref whose package also reads the --tokens study, side by side")
    p.add_argument("--write", type=Path, help="keep every unrounded figure in this JSON")
    args = p.parse_args()
    commands = args.commands.split(",")
    rows: list[dict] = []
    size: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(ROOT))
        from fsgen_eval.core import traces_io

        print(f"{'tokens':>9} {'command':8} {'reader':14} {'peak RSS MiB':>12} {'MiB / M tok':>11} {'s':>7} "
              f"{'s / M tok':>9}", flush=True)
        if args.before_tokens:
            trace = generate(tmp / "small", args.before_tokens)
            pq_folder = tmp / "small-parquet"
            pq_folder.mkdir()
            traces_io.write_parquet(traces_io.read_trace_file(trace), pq_folder / f"traces_{TS}.parquet")
            results = json.loads(next((tmp / "small").glob("results_*.json")).read_text())
            results["config"]["fsgen"]["traces"] = [f"traces_{TS}.parquet"]
            (pq_folder / f"results_{TS}.json").write_text(json.dumps(results))
            size.update(before_tokens_jsonl_bytes=trace.stat().st_size,
                        before_tokens_parquet_bytes=(pq_folder / f"traces_{TS}.parquet").stat().st_size)
            (tmp / "before").mkdir()
            before = extract(args.before, tmp / "before")
            for cmd in commands:
                for label, code in (("before", before), ("after", ROOT)):
                    if label in args.readers.split(","):
                        rows.append(_measure(code, cmd, label, tmp / "small", args.before_tokens, tmp))
                rows.append(_measure(ROOT, cmd, "after-parquet", pq_folder, args.before_tokens, tmp))
            shutil.rmtree(tmp / "small")
        if args.tokens:
            t0 = time.perf_counter()
            trace = generate_parquet(tmp / "large", args.tokens)
            size["tokens_parquet_bytes"] = trace.stat().st_size
            print(f"{args.tokens} tokens as Parquet: {trace.stat().st_size / 2**20:.0f} MiB, written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            previous = extract(args.previous, _mkdir(tmp / "previous")) if args.previous else None
            for cmd in commands:
                if previous is not None:
                    rows.append(_measure(previous, cmd, "previous-parquet", tmp / "large", args.tokens, tmp))
                rows.append(_measure(ROOT, cmd, "after-parquet", tmp / "large", args.tokens, tmp))
    ratios = {}
    for cmd in commands if args.previous and args.tokens else []:
        a, b = (next(r for r in rows if r["command"] == cmd and r["reader"] == label and r["tokens"] == args.tokens)
                for label in ("after-parquet", "previous-parquet"))
        ratios[f"{cmd} after-parquet over previous-parquet"] = {
            "memory": a["peak_rss_mib"] / b["peak_rss_mib"], "time": a["seconds"] / b["seconds"]}
        print(f"{cmd} at {args.tokens} tokens: memory {a['peak_rss_mib'] / b['peak_rss_mib']:.3f}x, time "
              f"{a['seconds'] / b['seconds']:.3f}x of {args.previous}'s")
    for cmd in commands if "before" in args.readers.split(",") and args.before_tokens else []:
        b = next(r for r in rows if r["command"] == cmd and r["reader"] == "before")
        for label in ("after", "after-parquet"):
            a = next(r for r in rows if r["command"] == cmd and r["reader"] == label and r["tokens"] == b["tokens"])
            ratios[f"{cmd} {label}"] = {"memory_over_before": a["peak_rss_mib"] / b["peak_rss_mib"],
                                        "time_over_before": a["seconds"] / b["seconds"]}
            print(f"{cmd} {label}: memory {ratios[f'{cmd} {label}']['memory_over_before']:.3f}x, time "
                  f"{ratios[f'{cmd} {label}']['time_over_before']:.3f}x of today's")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps({"tokens": args.tokens, "before_tokens": args.before_tokens,
                                          "before": args.before, "previous": args.previous, **size, "cases": rows, "ratios": ratios,
                                          "threads": 1, "cpus": os.cpu_count(), "python": platform.python_version(),
                                          "note": "peak RSS per subprocess (VmHWM); per-million figures are "
                                                  "the run's value divided by tokens / 1e6; measured on a "
                                                  "2-core machine shared with other sessions (loaded)"},
                                         indent=1) + "\n")
    return 0


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _measure(code: Path, cmd: str, label: str, study: Path, tokens: int, tmp: Path) -> dict:
    """One command over ``study`` by the package in ``code``: its row (and the printed line)."""
    argv = {"analyze": ["analyze", str(study)],
            "check": ["check", str(study), "--baseline", str(tmp / f"base-{label}-{tokens}.json"), "--update-baseline"],
            "report": ["report", str(study), "-o", str(tmp / f"rep-{label}-{tokens}"), "--n-boot", "10"]}[cmd]
    r = run_case(code, argv)
    per_m = tokens / 1e6
    row = {"tokens": tokens, "command": cmd, "reader": label, **r,
           "peak_rss_mib_per_m_tokens": r["peak_rss_mib"] / per_m, "seconds_per_m_tokens": r["seconds"] / per_m}
    print(f"{tokens:9d} {cmd:8} {label:14} {r['peak_rss_mib']:12.0f} {r['peak_rss_mib'] / per_m:11.0f} "
          f"{r['seconds']:7.1f} {r['seconds'] / per_m:9.1f}", flush=True)
    return row


if __name__ == "__main__":
    sys.exit(main())
