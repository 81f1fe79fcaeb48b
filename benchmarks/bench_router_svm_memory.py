"""Memory and time of `fsgen-eval router train --model svm` (and `router compare` with the router it wrote).

The SVM is fitted on at most ``--max-samples`` tokens (a balanced sample; scikit-learn's SVC), but its
threshold is set on the decision function of every training token, and that function was computed as one
[tokens, support vectors] kernel: 12.8 GB for 400 k tokens x 4000 vectors (11.5 GiB peak, issue 24). It is
now computed ``KERNEL_BLOCK`` kernel values at a time (``fsgen_eval.core.learned.decision``), so memory is
bounded whatever the number of tokens.

Side by side, each in a fresh subprocess (peak RSS by ``VmHWM``, one thread): ``before`` (the package as of
``--before``) and ``after`` (this checkout) on a ``--before-tokens`` trace the old code can hold under the
machine's shared memory, then ``after`` alone on ``--tokens`` (default 400 k, the issue's case).

    python benchmarks/bench_router_svm_memory.py --write benchmarks/results/router_svm_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analysis_memory import ROOT, extract, generate, run_case  # noqa: E402


def main() -> int:
    # each case runs as bench_analysis_memory.py --child (run_case), never through this script
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=400_000)
    p.add_argument("--before-tokens", type=int, default=40_000)
    p.add_argument("--before", default="1b6533c", help="git ref before the chunked decision function")
    p.add_argument("--max-samples", type=int, default=4000)
    p.add_argument("--write", type=Path)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "before").mkdir()
        before = extract(args.before, tmp / "before")
        cases = [(args.before_tokens, "before", before), (args.before_tokens, "after", ROOT),
                 (args.tokens, "after", ROOT)]
        print(f"{'tokens':>8} {'code':7} {'command':8} {'peak RSS MiB':>12} {'s':>7}", flush=True)
        for tokens, label, code in cases:
            trace = tmp / f"t{tokens}" / "study"
            if not trace.exists():
                generate(trace, tokens)
            jsonl = next(trace.glob("traces_*.jsonl"))
            out = tmp / f"router-{label}-{tokens}.json"
            for cmd, argv in (("train", ["router", "train", str(jsonl), "--model", "svm", "--max-samples",
                                         str(args.max_samples), "--target-call-rate", "0.2", "-o", str(out)]),
                              ("compare", ["router", "compare", str(jsonl), "--routers", str(out)])):
                r = run_case(code, argv)
                rows.append({"tokens": tokens, "code": label, "command": cmd, **r})
                print(f"{tokens:8d} {label:7} {cmd:8} {r['peak_rss_mib']:12.0f} {r['seconds']:7.1f}", flush=True)
    b = {r["command"]: r for r in rows if r["code"] == "before"}
    a = {r["command"]: r for r in rows if r["code"] == "after" and r["tokens"] == args.before_tokens}
    ratios = {cmd: {"memory_after_over_before": a[cmd]["peak_rss_mib"] / b[cmd]["peak_rss_mib"],
                    "time_after_over_before": a[cmd]["seconds"] / b[cmd]["seconds"]} for cmd in b}
    for cmd, r in ratios.items():
        print(f"{cmd} at {args.before_tokens} tokens: memory {r['memory_after_over_before']:.3f}x, time "
              f"{r['time_after_over_before']:.3f}x of before")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps({"tokens": args.tokens, "before_tokens": args.before_tokens,
                                          "before": args.before, "max_samples": args.max_samples, "cases": rows,
                                          "ratios": ratios, "threads": 1, "cpus": os.cpu_count(),
                                          "python": platform.python_version(),
                                          "note": "peak RSS per subprocess (VmHWM); measured on a 2-core "
                                                  "machine shared with other sessions (loaded)"}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
