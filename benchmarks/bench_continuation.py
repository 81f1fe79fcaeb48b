"""Outcome labels' continuations: each handoff's prefix fed whole vs one request's prefix fed once and forked.

On a recorded oracle run (``fsgen-eval run ... method=oracle``, e.g. the arith study's arith-s -> arith-l),
the handoffs of the first ``--requests`` requests are continued by the run's large model exactly as
``fsgen-eval label`` continues them (System 1's token swapped in, the task's stop strings, the rest of
``max_gen_toks``), twice, side by side in one process with one torch thread, interleaved round-robin:

- ``per_row``: every prefix (prompt + System 2's tokens + System 1's token) fed whole in a left-padded batch
  (``continue_greedy`` without request keys: the engine's behaviour before the prompt cache was shared);
- ``shared``: the handoffs of one request fork its prompt's (+ common head's) cache, fed once
  (``requests`` keys, as ``label_handoffs`` calls it).

Prints and writes (``--out``, JSON) the real tokens fed to the model (prefill, and all with the decoded
ones), the padded positions fed, the best wall time of each and their ratios, and whether both give the same
tokens for every handoff.

Usage: python benchmarks/bench_continuation.py --run RUN_FOLDER [--requests 40] [--batch-size 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
from transformers import AutoModelForCausalLM

from fsgen_eval.engine.backend import TransformersBackend
from fsgen_eval.engine.continuation import continue_greedy
from fsgen_eval.experiments import label_run as R

COUNT = {"real": 0, "padded": 0}  # tokens fed by every CountingBackend


class CountingBackend(TransformersBackend):
    """The transformers backend, counting what each ``advance`` feeds: real tokens and padded positions."""

    def advance(self, tokens, mask, positions, keep):
        COUNT["real"] += int(mask[:, self.fed:].sum())
        COUNT["padded"] += int(mask[:, self.fed:].numel())
        return super().advance(tokens, mask, positions, keep)


def cases(run_folder: Path, requests: int, batch_size: int):
    """The run, its tokenizer, the large model and the label inputs of the first ``requests`` requests' handoffs:
    prefixes, budgets, stop strings, request keys."""
    run, tok = R.read_label_run(run_folder)
    keys = sorted({(h.task, h.doc_id) for h in run.handoffs})[:requests]
    chosen = [h for h in run.handoffs if (h.task, h.doc_id) in set(keys)]
    small = AutoModelForCausalLM.from_pretrained(run.info.small).float().eval()
    filled, _ = R.system1_tokens(small, tok, run, chosen, batch_size)
    docs = [run.docs[(h.task, h.doc_id)] for h in filled]
    if len({d.stop for d in docs}) != 1:
        raise ValueError("the chosen requests have several stop rules; pick a run of one task")
    prefixes = [d.prompt + d.generation[:h.position] + [h.s1_token] for h, d in zip(filled, docs)]
    budgets = [0 if h.s1_token == tok.eos_token_id else d.max_gen_toks - h.position - 1 for h, d in zip(filled, docs)]
    large = AutoModelForCausalLM.from_pretrained(run.info.large).float().eval()
    return run, tok, large, prefixes, budgets, list(docs[0].stop), [(h.task, h.doc_id) for h in filled]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="an oracle run folder (its results_*.json below it)")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16, help="fsgen-eval label's default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run, tok, large, prefixes, budgets, stop, keys = cases(args.run, args.requests, args.batch_size)
    arms = {"per_row": None, "shared": keys}
    got, fed, times = {}, {}, {name: [] for name in arms}
    for rep in range(args.repeats + 1):  # the first round warms up and counts; the others are timed
        for name, requests in arms.items():
            COUNT.update(real=0, padded=0)
            t = time.perf_counter()
            got[name] = continue_greedy(large, tok, prefixes, budgets, stop, args.batch_size, requests=requests,
                                        backend=CountingBackend.for_role)
            if rep:
                times[name].append(time.perf_counter() - t)
            decoded = sum(max(len(ids) - 1, 0) for ids, _ in got[name])  # every emitted token but the last is fed
            fed[name] = {"real_tokens": COUNT["real"], "prefill_tokens": COUNT["real"] - decoded,
                         "padded_positions": COUNT["padded"]}
    best = {k: min(v) for k, v in times.items()}
    out = {
        "run": str(args.run), "small": run.info.small, "large": run.info.large, "requests": args.requests,
        "handoffs": len(prefixes), "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end "
                   "(a shared machine: compare the two arms, not the seconds)",
        "same_tokens": got["per_row"] == got["shared"],
        "decoded_tokens": sum(len(ids) for ids, _ in got["shared"]),
        "fed": fed, "best_seconds": best, "all_seconds": times,
        "ratios": {"prefill_tokens_per_row_over_shared": fed["per_row"]["prefill_tokens"] / fed["shared"]["prefill_tokens"],
                   "real_tokens_per_row_over_shared": fed["per_row"]["real_tokens"] / fed["shared"]["real_tokens"],
                   "padded_positions_per_row_over_shared":
                       fed["per_row"]["padded_positions"] / fed["shared"]["padded_positions"],
                   "wall_per_row_over_shared": best["per_row"] / best["shared"]},
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
