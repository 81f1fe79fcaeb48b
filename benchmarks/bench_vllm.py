"""vLLM against this project's transformers loop, side by side in one run, one thread per job.

Parts (``--parts``, comma-separated):

- ``scoring``: the replay's teacher-forced scoring pass of each ``--score-models`` model over System 2's
  generations in ``--system2`` (an lm-eval ``--log_samples`` folder): ``engine.replay.score_trajectories``
  (transformers) against ``vllm_backend.score_trajectories`` (vLLM ``prompt_logprobs``, whole vocabulary:
  exact). Timed after each model is loaded; the engine's start is reported apart.
- ``generation``: System 2's generation for ``--large`` through ``lm_eval --model hf``, ``--model fsgen``
  (the large model as its own System 1, router ``never``) and ``--model vllm`` on the same problems; wall
  seconds of each lm-eval process (model loading included, reported beside).

Run from the vLLM venv (docs/vllm.md), with a ``__main__`` guard (vLLM spawns its engine processes)::

    python benchmarks/bench_vllm.py --parts scoring --system2 runs/s2 --score-models models/micro/micro-s \\
        --write benchmarks/results/vllm.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _trajectories(folder: Path, tokenizer_model: str) -> list:
    from fsgen_eval.engine.pair import load_tokenizer
    from fsgen_eval.engine.replay import Trajectory
    from fsgen_eval.lm_eval.samples import read_system2_run, tokenize_run

    run = read_system2_run(folder)
    tok = load_tokenizer(tokenizer_model, "small", False)
    tokenize_run(run, tok, int(run.results["max_length"]))
    return [Trajectory(r.context_ids, r.token_ids, len(r.token_ids), len(r.token_ids), r.max_gen_toks)
            for r in run.requests], tok


def bench_scoring(folder: Path, models: list[str]) -> dict:
    """Per model: seconds of the transformers and the vLLM scoring pass over the same trajectories."""
    import torch

    from fsgen_eval.engine import replay as rp
    from fsgen_eval.engine.backends import vllm_backend as vs
    from fsgen_eval.engine.pair import load_model

    torch.set_num_threads(1)
    out = {}
    for m in models:
        trajs, tok = _trajectories(folder, m)
        vocab, pad = len(tok), tok.pad_token_id or 0
        model = load_model(m, "small", "float32", "cpu", False)
        t0 = time.perf_counter()
        ref = rp.score_trajectories(model, trajs, vocab, pad, 8)
        tf = time.perf_counter() - t0
        del model
        t0 = time.perf_counter()
        scorer = vs.VLLMBackend.load(m, vocab, vs.ScoringSpec(0, {"max_model_len": 2048}))
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = vs.score_trajectories(scorer, trajs)
        vl = time.perf_counter() - t0
        scorer.close()
        same = all((a["argmax"] == b["argmax"]).all() for a, b in zip(ref, got))
        worst = max(float(abs(a[k] - b[k]).max(initial=0)) for a, b in zip(ref, got) for k in ("entropy", "top1_prob"))
        out[Path(m).name] = {"generations": len(trajs), "tokens": sum(len(t.tokens) for t in trajs),
                             "transformers_s": tf, "vllm_s": vl, "vllm_engine_start_s": start,
                             "vllm_over_transformers": vl / tf, "argmax_equal": bool(same), "max_abs_diff": worst}
        print(f"scoring {Path(m).name}: transformers {tf:.2f} s, vLLM {vl:.2f} s ({vl / tf:.2f}x; engine start "
              f"{start:.1f} s apart), argmax equal {same}, max |diff| {worst:.2e}", flush=True)
    return out


def bench_generation(large: str, limit: int, max_gen_toks: int, out_dir: Path) -> dict:
    """Wall seconds of lm-eval's System 2 run of ``large`` through hf, fsgen (router never) and vllm."""
    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1", HF_ALLOW_CODE_EVAL="1",
               PYTHONPATH=str(REPO))
    common = ["--tasks", "gsm8k", "--limit", str(limit), "--num_fewshot", "3", "--gen_kwargs",
              f"max_gen_toks={max_gen_toks}", "--log_samples"]
    args = {"hf": f"pretrained={large},dtype=float32,device=cpu,batch_size=8",
            "fsgen": f"small={large},large={large},method=oracle,router=never,dtype=float32,device=cpu,batch_size=8,"
                     "trace=true",
            "vllm": f"pretrained={large},dtype=float32,max_model_len=2048,enforce_eager=True"}
    out = {}
    for name, margs in args.items():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lm_eval", "--model", name, "--model_args", margs,
                               "--output_path", str(out_dir / name), *common], env=env, capture_output=True,
                              text=True, cwd=REPO)
        out[name] = {"wall_s": time.perf_counter() - t0, "rc": proc.returncode}
        print(f"generation {name}: {out[name]['wall_s']:.1f} s (rc {proc.returncode})", flush=True)
    for name in ("fsgen", "vllm"):
        out[f"{name}_over_hf"] = out[name]["wall_s"] / out["hf"]["wall_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="scoring")
    p.add_argument("--system2", type=Path, help="scoring: System 2's lm-eval --log_samples folder")
    p.add_argument("--score-models", default="models/micro/micro-s")
    p.add_argument("--large", default="models/micro/micro-xl")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--max-gen-toks", type=int, default=64)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_vllm"))
    p.add_argument("--write", type=Path, help="write the unrounded figures to this JSON file")
    a = p.parse_args()
    result = {"machine": f"{os.cpu_count()} CPU cores, one thread per job", "parts": {}}
    if "scoring" in a.parts:
        result["parts"]["scoring"] = {"system2": str(a.system2), **bench_scoring(a.system2, a.score_models.split(","))}
    if "generation" in a.parts:
        result["parts"]["generation"] = {"large": a.large, "limit": a.limit, "max_gen_toks": a.max_gen_toks,
                                         **bench_generation(a.large, a.limit, a.max_gen_toks, a.work)}
    if a.write:
        a.write.parent.mkdir(parents=True, exist_ok=True)
        a.write.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
