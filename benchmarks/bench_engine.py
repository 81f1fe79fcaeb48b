"""Engine benchmark: ratios measured side by side in one run (CPU, fp32, greedy, 128 new tokens).

A pair with a real cost gap, built from configs: a ~30M-parameter Llama (hidden 256, 44 layers) and a
~1M one cut from it (its embeddings, first layer and head), so the two agree on many tokens as a trained
family would. Prints:

1. oracle, batch 1, vs ``large.generate`` + ``small.generate`` on the same prompts   (goal <= 1.2x)
2. greedy speculative, batch 1, vs ``large.generate(assistant_model=small)`` with the same draft length
   and a constant schedule                                                          (goal >= 1.0x its speed)
   and vs the analytic speed-up bound from the measured acceptance rate (Leviathan et al. 2023, eq. 1)
3. oracle throughput, batch 8 vs batch 1                                              (goal >= 3x)
4. trace recording on vs off                                                          (goal <= 5 % overhead)
5. a router-gated run's large-model forward passes per generated token

Usage: python benchmarks/bench_engine.py [--threads 2] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import torch

from fsgen_eval import ModelPair, generate
from fsgen_eval.experiments import fixtures as testing
from fsgen_eval.engine.api import encode

PROMPTS = [
    "Question: Natalia sold clips to 48 of her friends in April. How many clips did she sell? Answer:",
    "def add(a, b):\n    return",
    "The following are multiple choice questions (with answers) about abstract algebra.",
    "Let's think step by step. First, we add the numbers.",
    "Weng earns $12 an hour for babysitting.",
    "A. 0\nB. 1\nC. 2\nD. 3\nAnswer:",
    "Question: What is 3 + 4? Answer: 3 + 4 =",
    "How many clips did Natalia sell altogether in April and May?",
]


def race(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, runs interleaved round-robin after one warm-up each.

    Interleaving puts every contender under the same background load, so their ratio stays meaningful on a
    busy machine; the minimum is the least noisy estimate of the undisturbed time.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def build(tmp: str) -> ModelPair:
    tok = testing.train_tokenizer(os.path.join(tmp, "tok"))
    large, small = testing.build_pair(tmp, tok, hidden=256, large_layers=44, small_layers=1, heads=4,
                                      init=0.2, late_scale=0.3, seed=0)
    return ModelPair.load(small=str(small), large=str(large))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hf_generate(model, pair: ModelPair, prompt: str, n: int, **kw) -> list[int]:
    ids = torch.tensor([encode(pair, prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, pad_token_id=pair.pad_token_id, **kw)
    return out[0, ids.shape[1]:].tolist()


class ForwardCounter:
    """Counts a model's forward passes with a public forward hook."""

    def __init__(self, model: torch.nn.Module):
        self.n = 0
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, *args) -> None:
        self.n += 1

    def close(self) -> None:
        self.handle.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--num-draft", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, k, r = args.new_tokens, args.num_draft, args.repeats
    tmp = tempfile.mkdtemp()
    pair = build(tmp)
    p0 = PROMPTS[:2]
    print(f"pair: small {n_params(pair.small) / 1e6:.2f}M params, large {n_params(pair.large) / 1e6:.2f}M params; "
          f"{args.threads} threads, {n} new tokens, best of {r}")

    # 1. oracle vs the two plain generates
    t = race({"oracle": lambda: [generate(pair, [p], max_new_tokens=n) for p in p0],
              "large": lambda: [hf_generate(pair.large, pair, p, n) for p in p0],
              "small": lambda: [hf_generate(pair.small, pair, p, n) for p in p0]}, r)
    print(f"1. oracle batch 1: {t['oracle']:.2f}s vs large.generate + small.generate {t['large'] + t['small']:.2f}s "
          f"-> {t['oracle'] / (t['large'] + t['small']):.2f}x (goal <= 1.2x)")

    # 2. greedy speculative vs transformers' assisted generation, same draft length, constant schedule
    gc = pair.small.generation_config
    gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = k, "constant"
    gc.assistant_confidence_threshold = 0.0  # fixed-length drafts, as ours with router=always
    t2 = race({"spec": lambda: [generate(pair, [p], method="speculative", num_draft=k, max_new_tokens=n) for p in p0],
               "assist": lambda: [hf_generate(pair.large, pair, p, n, assistant_model=pair.small) for p in p0]}, r)
    spec = generate(pair, p0, method="speculative", num_draft=k, max_new_tokens=n, batch_size=1).summary
    alpha = spec["acceptance_rate"]
    c = t["small"] / t["large"]  # cost of a System 1 step relative to a large one
    # Leviathan et al.'s expected speed-up assumes i.i.d. acceptances at rate alpha; acceptances of a real
    # pair come in runs, so the same bound from the measured tokens per verification is printed beside it
    bound = (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1))
    bound_len = spec["mean_acceptance_length"] / (k * c + 1)
    print(f"2. speculative batch 1: {t2['spec']:.2f}s vs assisted generate {t2['assist']:.2f}s -> "
          f"{t2['assist'] / t2['spec']:.2f}x its speed (goal >= 1.0x); speed-up over large.generate "
          f"{t['large'] / t2['spec']:.2f}x vs analytic bound {bound:.2f}x from the acceptance rate "
          f"({bound_len:.2f}x from the mean acceptance length) "
          f"(acceptance {alpha:.2f}, mean acceptance length {spec['mean_acceptance_length']:.2f}, cost ratio {c:.3f})")

    # 3. batch 8 vs batch 1 throughput (same prompts, same tokens: greedy rows do not depend on the batch)
    made8 = generate(pair, PROMPTS, max_new_tokens=n).summary["generated_tokens"]
    t3 = race({"b1": lambda: generate(pair, PROMPTS, max_new_tokens=n, batch_size=1),
               "b8": lambda: generate(pair, PROMPTS, max_new_tokens=n, batch_size=8)}, r)
    print(f"3. oracle throughput batch 8 vs batch 1: {made8 / t3['b8']:.0f} vs {made8 / t3['b1']:.0f} "
          f"tokens/s -> {t3['b1'] / t3['b8']:.2f}x (goal >= 3x; {made8} tokens, rows end at EOS or {n})")

    # 4. trace recording on vs off
    t4 = race({"on": lambda: [generate(pair, [p], max_new_tokens=n) for p in p0],
               "off": lambda: [generate(pair, [p], max_new_tokens=n, record_trace=False) for p in p0]}, r)
    print(f"4. trace on vs off: {t4['on']:.2f}s vs {t4['off']:.2f}s -> {100 * (t4['on'] / t4['off'] - 1):+.1f}% "
          f"(goal <= 5%)")

    # 5. router-gated large-model forward passes per token
    ent = np.concatenate([t["s1_entropy"] for t in generate(pair, PROMPTS, max_new_tokens=n).traces])
    thr = float(np.quantile(ent, 0.8))
    counter = ForwardCounter(pair.large)
    out = generate(pair, PROMPTS, router="entropy", threshold=thr, max_new_tokens=n, batch_size=1)
    counter.close()
    s = out.summary
    print(f"5. entropy router (threshold {thr:.2f} nats = 80th percentile): {counter.n / s['generated_tokens']:.3f} "
          f"large forward passes per token at batch 1 (llm_call_rate {s['llm_call_rate']:.3f}, "
          f"collaboration_rate {s['collaboration_rate']:.3f}; oracle collaboration_rate "
          f"{generate(pair, PROMPTS, max_new_tokens=n).summary['collaboration_rate']:.3f})")


if __name__ == "__main__":
    main()
