"""``batch_size=auto``: fsgen's probe against ``--model hf``'s on the same large model, side by side.

Issue 13 item 8: ``lm_eval --model fsgen ... batch_size=auto --tasks gsm8k --limit 8 --num_fewshot 3``
took 693 s (probe settled on 64 on the CPU) against 25 s with ``batch_size=4``. The probe is HFLM's
``_detect_batch_size`` (5 forward passes of ``[max_batch_size, max_length]``, halved until it fits); this
prints

1. the probe alone, timed in one process, interleaved: ``--model hf`` (the large model) vs ``--model fsgen``
   (goal: about 1x; fsgen's probe runs each model once per call, hf's runs the large one);
2. with ``--before``: the probe as it was (each call the full collaboration, ``score_batch``) vs hf's;
3. with ``--cli``: the issue's whole command lines, ``hf`` and ``fsgen`` each with ``batch_size=auto`` and
   ``batch_size=4``, and what each run picked.

Usage: python benchmarks/bench_auto_batch.py [--small models/micro/micro-s] [--large models/micro/micro-l]
       [--max-batch-size 64] [--max-length N] [--repeats 2] [--before] [--cli]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

REPO = Path(__file__).resolve().parents[1]


def probe_seconds(lm, repeats: int) -> tuple[float, int]:
    """Best wall time of ``repeats`` probes and the batch size picked."""
    best, size = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        size = lm._detect_batch_size()
        best = min(best, time.perf_counter() - start)
    return best, int(size)


def probes(small: str, large: str, max_batch_size: int, max_length: int | None, repeats: int,
           before: bool = False) -> None:
    import fsgen_eval  # noqa: F401
    from lm_eval.models.huggingface import HFLM

    from fsgen_eval.lm_eval.model import FSGenLM

    hf = HFLM(pretrained=large, device="cpu", batch_size="auto", max_batch_size=max_batch_size,
              max_length=max_length)
    fs = FSGenLM(small=small, large=large, device="cpu", batch_size="auto", max_batch_size=max_batch_size,
                 max_length=max_length, trace=False)
    times: dict[str, list[float]] = {"hf": [], "fsgen": []}
    picked = {}
    for _ in range(repeats):  # interleaved: both see the same machine load
        for name, lm in (("hf", hf), ("fsgen", fs)):
            t, picked[name] = probe_seconds(lm, 1)
            times[name].append(t)
    hf_t, fs_t = min(times["hf"]), min(times["fsgen"])
    print(f"probe, max_length {hf.max_length}, max_batch_size {max_batch_size}: "
          f"hf {hf_t:.2f} s (picked {picked['hf']}), fsgen {fs_t:.2f} s (picked {picked['fsgen']}), "
          f"fsgen/hf = {fs_t / hf_t:.2f}x")
    if before:
        before_probe(fs, hf, repeats)


def before_probe(fs, hf, repeats: int) -> None:
    """The probe as it was (issue 13 item 8): each call the full teacher-forced collaboration."""
    from fsgen_eval.engine.score import score_batch

    now = fs._model_call
    fs._model_call = lambda inps, *a, **k: score_batch(fs.pair, inps, torch.ones_like(inps),
                                                       fs._decode_config()).logprobs
    t_before, _ = probe_seconds(fs, 1)
    fs._model_call = now
    t_hf, _ = probe_seconds(hf, 1)
    print(f"before the fix: fsgen {t_before:.2f} s vs hf {t_hf:.2f} s = {t_before / t_hf:.2f}x")


def cli_runs(small: str, large: str, max_batch_size: int, max_length: int | None) -> None:
    from fsgen_eval.lm_eval.offline import build_offline_cache, default_source

    build_offline_cache(default_source())  # lm-eval's gsm8k offline: datasets' own cache
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    common = ["--tasks", "gsm8k", "--limit", "8", "--num_fewshot", "3"]
    runs = {}
    sizes = f",max_length={max_length}" if max_length else ""
    for model, args in (("hf", f"pretrained={large}"), ("fsgen", f"small={small},large={large}")):
        for bs in ("auto", "4"):
            with tempfile.TemporaryDirectory() as out:
                launcher = ["fsgen_eval.cli", "run"] if model == "fsgen" else ["lm_eval"]  # fsgen-eval run registers fsgen
                cmd = [sys.executable, "-m", *launcher, "--model", model, "--model_args",
                       f"{args},device=cpu,batch_size={bs},max_batch_size={max_batch_size}{sizes}", *common,
                       "--output_path", out]
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                took = time.perf_counter() - start
            if proc.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            picked = re.findall(r"Determined Largest batch size: (\d+)", proc.stdout)
            runs[(model, bs)] = took
            print(f"--model {model} batch_size={bs}: {took:.1f} s" + (f" (picked {picked})" if picked else ""))
    for model in ("hf", "fsgen"):
        print(f"{model}: auto / batch 4 = {runs[(model, 'auto')] / runs[(model, '4')]:.2f}x")
    print(f"whole run with auto: fsgen / hf = {runs[('fsgen', 'auto')] / runs[('hf', 'auto')]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", default=str(REPO / "models/micro/micro-s"))
    ap.add_argument("--large", default=str(REPO / "models/micro/micro-l"))
    ap.add_argument("--max-batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=None, help="context window (default: the model's)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--before", action="store_true", help="also time the probe as it was (score_batch per call)")
    ap.add_argument("--cli", action="store_true", help="also time the issue's whole lm_eval command lines")
    args = ap.parse_args()
    torch.set_num_threads(1)
    probes(args.small, args.large, args.max_batch_size, args.max_length, args.repeats, args.before)
    if args.cli:
        cli_runs(args.small, args.large, args.max_batch_size, args.max_length)


if __name__ == "__main__":
    main()
