"""Peak memory of teacher-forced scoring beside lm-eval's ``hf`` path, in ``[B, T, V]`` fp32 tensors.

Each contender runs in its own subprocess on the same inputs (B=8, T=1024 random tokens, the micro family's
V=2048 vocabulary, fp32, CPU, one thread) and reports the peak resident memory during the call above the
resident memory just before it (Linux: ``/proc/self/clear_refs`` resets the peak, ``VmHWM`` reads it), in
units of one ``[B, T, V]`` fp32 tensor (64 MiB here). The model is micro-xs (one layer, hidden 32), so its
activations are small beside the logits and the count is the tensors a contender holds:

- ``hf``: what lm-eval's ``HFLM._loglikelihood_tokens`` does per batch: ``log_softmax(_model_call(inps))``;
- ``score_batch``: the engine's teacher-forced pass (oracle, router ``always``; the large model is a second
  copy of micro-xs), as ``--model fsgen`` runs it for loglikelihood tasks;
- ``replay``: replay's teacher-forced pass of one model over every position, as ``engine.replay`` makes it:
  the backend's ``score`` (log-probs normalised in place) and the trace's columns (``columns.model_columns``).

Goal: score_batch and replay at most the hf path's peak + one tensor. Usage: python benchmarks/bench_memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "micro" / "micro-xs"
B, T = 8, 1024


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def child(which: str) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(MODEL))
    ids = torch.randint(0, vocab, (B, T))
    mask = torch.ones_like(ids)
    if which == "hf":
        import torch.nn.functional as F
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=str(MODEL), device="cpu", dtype="float32", batch_size=B)
        run = lambda: F.log_softmax(lm._model_call(ids), dim=-1)  # noqa: E731  (HFLM's own two lines)
    else:
        from fsgen_eval import ModelPair

        pair = ModelPair.load(small=str(MODEL), large=str(MODEL), dtype="float32", device="cpu")
        if which == "score_batch":
            from fsgen_eval.engine.config import make_config
            from fsgen_eval.engine.score import score_batch

            cfg = make_config(method="oracle", router="always")
            run = lambda: score_batch(pair, ids, mask, cfg)  # noqa: E731
        else:
            from fsgen_eval.engine.columns import model_columns

            scorer = pair.backends["small"]
            run = lambda: model_columns(scorer.score(ids, None, None, T).reshape(-1, vocab))  # noqa: E731
    with torch.inference_mode():
        small = ids[:1, :8]
        (lm._model_call(small) if which == "hf" else None)  # first-call allocations out of the way
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
    before = _rss_kib()
    with torch.inference_mode():
        out = run()
    peak = _peak_kib()
    del out
    unit = B * T * vocab * 4 / 1024
    print(json.dumps({"which": which, "tensors": (peak - before) / unit, "peak_mib": (peak - before) / 1024}))


def main() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error",
           "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           # a fixed mmap threshold: glibc then hands every large block back when it is freed, so the peak
           # resident memory counts live tensors, not blocks the allocator kept for later
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    res = {}
    for which in ("hf", "score_batch", "replay"):
        out = subprocess.run([sys.executable, __file__, which], env=env, capture_output=True, text=True, check=True)
        res[which] = json.loads(out.stdout.strip().splitlines()[-1])
    hf = res["hf"]["tensors"]
    print(f"B={B}, T={T}, V=2048 fp32: one [B, T, V] tensor = {B * T * 2048 * 4 / 2**20:.0f} MiB")
    for which, r in res.items():
        goal = "" if which == "hf" else f"  (goal <= hf + 1 = {hf + 1:.2f}: {'met' if r['tensors'] <= hf + 1 else 'NOT met'})"
        print(f"{which:12} peak above baseline {r['peak_mib']:7.1f} MiB = {r['tensors']:.2f} tensors{goal}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(sys.argv[1])
    else:
        main()
