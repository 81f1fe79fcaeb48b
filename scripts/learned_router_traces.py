"""Traces for the learned-router study: GSM8K train (to fit on) and test (to evaluate on) prompts.

Oracle decoding with ``router=always`` (System 2 evaluated at every token, so every handoff is known) and
``trace_topk``, through the Python API; each split's records go through the adapter's ``TraceWriter``
(``<out>/<split>.jsonl`` and ``<split>.topk.parquet``), so ``fsgen-eval router train`` reads them as it reads
lm-eval's. Prompts are lm-eval's gsm8k layout: the first ``--shots`` training exemplars, then the question
(train questions start after the exemplars). Greedy, at most ``--max-new-tokens``, stopped at ``Question:``.

Usage: python scripts/learned_router_traces.py OUT [--n 300] [--small models/micro/micro-m]
       [--large models/micro/micro-xl] [--topk 20]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

from fsgen_eval import ModelPair, generate
from fsgen_eval.experiments.zoo import corpus as C
from fsgen_eval.lm_eval.traces import TraceWriter, make_record

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("FSGEN_DATASETS_DIR", ROOT.parent / "shared" / "hf-datasets"))


def prompts(split: str, n: int, shots: int) -> list[str]:
    train = C.read_jsonl(DATASETS / C.GSM8K / "train.jsonl")
    context = "".join(C.gsm8k_doc(d) + C.FEWSHOT_DELIMITER for d in train[:shots])
    docs = train[shots: shots + n] if split == "train" else C.read_jsonl(DATASETS / C.GSM8K / "test.jsonl")[:n]
    return [f"{context}Question: {d['question']}\nAnswer:" for d in docs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=300, help="questions per split")
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--small", default=str(ROOT / "models/micro/micro-m"))
    ap.add_argument("--large", default=str(ROOT / "models/micro/micro-xl"))
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    pair = ModelPair.load(small=args.small, large=args.large, dtype="float32")
    for split in ("train", "test"):
        path = args.out / f"{split}.jsonl"
        if path.exists():
            print(f"{path} exists; skipped")
            continue
        tmp = args.out / f"{split}.partial.jsonl"  # renamed (both files) only once complete
        for p in (tmp, tmp.with_suffix(".topk.parquet")):
            p.unlink(missing_ok=True)
        start = time.perf_counter()
        out = generate(pair, prompts(split, args.n, args.shots), max_new_tokens=args.max_new_tokens,
                       stop="Question:", batch_size=args.batch_size, trace_topk=args.topk)
        w = TraceWriter(tmp)
        w.write_batch([make_record({"task": f"gsm8k_{split}", "doc_id": i, "method": "oracle", "router": "always",
                                    "small": Path(args.small).name, "large": Path(args.large).name}, t, c)
                       for i, (t, c) in enumerate(zip(out.traces, out.counters))])
        w.close()
        tmp.with_suffix(".topk.parquet").rename(path.with_suffix(".topk.parquet"))
        tmp.rename(path)
        s = out.summary
        print(f"{split}: {args.n} prompts, {s['generated_tokens']} tokens, collaboration_rate "
              f"{s['collaboration_rate']:.3f}, {time.perf_counter() - start:.0f} s -> {path}")


if __name__ == "__main__":
    main()
