"""Top-K traces: side-file size per 1M tokens and decoding overhead of ``trace_topk=K`` vs 0, in one run.

On the committed micro family (micro-s -> micro-xl, vocabulary 2048; CPU, fp32, greedy, oracle, router
``always`` so System 2's top-K is recorded at every token). Prints

1. decoding CPU time with ``trace_topk=K`` vs ``trace_topk=0`` (same prompts, interleaved, best of N);
2. bytes of the Parquet side file per 1M tokens (and of the JSONL trace beside it), written through the
   adapter's own ``TraceWriter``.

Usage: python benchmarks/bench_topk.py [--k 100] [--threads 1] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from fsgen_eval import ModelPair, generate
from fsgen_eval.core.schema import topk_path
from fsgen_eval.lm_eval.traces import TraceWriter, make_record



def race(fns: dict, repeats: int) -> dict[str, float]:
    """Best CPU time (``time.process_time``) of each function, runs interleaved after one warm-up each.

    With one torch thread the process's CPU time is the work done, unaffected by time spent waiting for a
    core that other jobs hold, so the ratio stays meaningful on a shared machine (wall time did not: the
    same comparison moved between +1 % and +29 % with the machine's load)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.process_time()
            fn()
            times[name].append(time.process_time() - t)
    return {k: min(v) for k, v in times.items()}


MICRO = Path(__file__).resolve().parents[1] / "models" / "micro"
PROMPTS = [
    "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?\nAnswer:",
    "Question: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?\nAnswer:",
    "Question: Betty is saving money for a new wallet which costs $100. How much more money does she need?\nAnswer:",
    "Question: James writes a 3-page letter to 2 different friends twice a week. How many pages does he write "
    "a year?\nAnswer:",
]


def side_file_bytes(out, tmp: Path) -> tuple[int, int, int]:
    """(tokens, side-file bytes, JSONL bytes) of ``out``'s traces written as one batch."""
    path = tmp / "traces.jsonl"
    for p in (path, topk_path(path)):
        p.unlink(missing_ok=True)
    w = TraceWriter(path)
    w.write_batch([make_record({"task": "gsm8k", "doc_id": i}, t, c)
                   for i, (t, c) in enumerate(zip(out.traces, out.counters))])
    w.close()
    return out.summary["generated_tokens"], topk_path(path).stat().st_size, path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small", default=str(MICRO / "micro-s"))
    ap.add_argument("--large", default=str(MICRO / "micro-xl"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pair = ModelPair.load(small=args.small, large=args.large, dtype="float32")
    n, k = args.new_tokens, args.k
    run = lambda kk: generate(pair, PROMPTS, max_new_tokens=n, batch_size=len(PROMPTS), trace_topk=kk)
    print(f"pair: {Path(args.small).name} -> {Path(args.large).name} (vocabulary {pair.vocab_size}); "
          f"{args.threads} thread(s), {n} new tokens, {len(PROMPTS)} prompts in one batch, best of {args.repeats}")
    t = race({"k": lambda: run(k), "0": lambda: run(0)}, args.repeats)
    print(f"1. trace_topk={k} vs 0: {t['k']:.2f}s vs {t['0']:.2f}s -> {100 * (t['k'] / t['0'] - 1):+.1f}% decoding CPU time")
    tokens, side, jsonl = side_file_bytes(run(k), Path(tempfile.mkdtemp()))
    print(f"2. side file at K={k}: {side / tokens * 1e6 / 2**20:.0f} MiB per 1M tokens "
          f"({side} bytes for {tokens} tokens; the JSONL trace beside it: {jsonl / tokens * 1e6 / 2**20:.0f} MiB "
          f"per 1M tokens; raw int32+float32 for both systems: {16 * k / 2**20 * 1e6:.0f} MiB)")


if __name__ == "__main__":
    main()
