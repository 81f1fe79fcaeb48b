"""code_eval sandbox cost: seconds per MBPP-sized program with every layer vs the basic fallback, interleaved.

Each round runs the same small passing program once under ``auto`` (namespaces, private root, own uid where
available) and once under ``basic`` (session, rlimits, scratch folder, clean environment), alternating so that
both see the same machine load. Prints the median seconds per program of each and their ratio.

Usage: python benchmarks/bench_sandbox.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from fsgen_eval.lm_eval.sandbox import protections, run_contained

PROGRAM = "import math, re, collections\ndef f(n):\n    return [math.isqrt(i) for i in range(n)]\nassert f(10)[9] == 3\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    print("auto layers:", ", ".join(protections("auto")))
    times: dict[str, list[float]] = {"auto": [], "basic": []}
    for _ in range(args.rounds):
        for mode in times:
            start = time.perf_counter()
            outcome = run_contained(PROGRAM, timeout=30, mode=mode)
            times[mode].append(time.perf_counter() - start)
            assert outcome.returncode == 0, outcome.stderr_tail
    med = {mode: statistics.median(ts) for mode, ts in times.items()}
    print(f"median s/program: auto {med['auto']:.3f}, basic {med['basic']:.3f}; "
          f"ratio auto/basic {med['auto'] / med['basic']:.2f}x")


if __name__ == "__main__":
    main()
