"""vLLM against this project's transformers loop, side by side in one run, one thread per job.

Parts (``--parts``, comma-separated):

- ``scoring``: the replay's teacher-forced scoring pass of each ``--score-models`` model over System 2's
  generations in ``--system2`` (an lm-eval ``--log_samples`` folder): ``engine.replay.score_trajectories``
  (transformers) against the same function on ``vllm_backend.VLLMBackend`` (vLLM ``prompt_logprobs``, whole vocabulary:
  exact). Timed after each model is loaded; the engine's start is reported apart.
- ``generation``: System 2's generation for ``--large`` through ``lm_eval --model hf``, ``--model fsgen``
  (the large model as its own System 1, router ``never``) and ``--model vllm`` on the same problems; wall
  seconds of each lm-eval process (model loading and vLLM's engine start included).
- ``share``: the same share from a replaying sweep already finished (``--share-folder``).
- ``sweep``: the replaying sweep (oracle/``always``, ``--sweep-models``, GSM8K and MBPP, ``--limit``) with
  System 2 in this project's loop (``--system2-model fsgen``) and on vLLM (``--system2-model vllm``), each
  into a fresh folder, one after the other; wall seconds of each and their ratio, and from each sweep's files
  the shares of System 2's generation (lm-eval's ``total_evaluation_time_seconds`` of each ``_system2`` run,
  model loading included) spent scoring every System 1 (each replay's ``seconds.small``) and on the large
  model's part of the replays (its tails and look-ahead, or its statistics; once per (large, task) group),
  and both together (:func:`sweep_share`).

Run from the vLLM venv (docs/vllm.md), with a ``__main__`` guard (vLLM spawns its engine processes)::

    python benchmarks/bench_vllm.py --parts sweep,generation,scoring --limit 8 \\
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
    from fsgen_eval.engine.backend import TransformersBackend
    from fsgen_eval.engine.backends import vllm_backend as vs
    from fsgen_eval.engine.pair import load_model

    torch.set_num_threads(1)
    out = {}
    for m in models:
        trajs, tok = _trajectories(folder, m)
        vocab, pad = len(tok), tok.pad_token_id or 0
        model = TransformersBackend.for_role(load_model(m, "small", "float32", "cpu", False), "small", vocab)
        t0 = time.perf_counter()
        ref = rp.score_trajectories(model, trajs, pad, 8)
        tf = time.perf_counter() - t0
        del model
        t0 = time.perf_counter()
        scorer = vs.VLLMBackend.load(m, vocab, vs.ScoringSpec(0, {"max_model_len": 2048}))
        start = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = rp.score_trajectories(scorer, trajs, pad, vs.SCORE_BATCH)
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
    from fsgen_eval.experiments.sweep import lm_eval_command

    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1", HF_ALLOW_CODE_EVAL="1",
               PYTHONPATH=str(REPO))
    common = ["--tasks", "gsm8k", "--limit", str(limit), "--num_fewshot", "3", "--gen_kwargs",
              f"max_gen_toks={max_gen_toks}", "--log_samples"]
    # (model_args, lm-eval's --batch_size): HFLM batches of 8 as the study's; vLLM schedules every request itself
    # (lm-eval passes --batch_size and --device to the class too: in model_args they would be given twice)
    args = {"hf": (f"pretrained={large},dtype=float32", ["--batch_size", "8", "--device", "cpu"]),
            "fsgen": (f"small={large},large={large},method=oracle,router=never,dtype=float32,trace=true",
                      ["--batch_size", "8", "--device", "cpu"]),
            "vllm": (f"pretrained={large},dtype=float32,max_model_len=2048,enforce_eager=True",
                     ["--batch_size", "auto"])}
    out = {}
    for name, (margs, batch) in args.items():
        t0 = time.perf_counter()
        proc = subprocess.run([*lm_eval_command(name), "--model", name, "--model_args", margs,
                               *batch, "--output_path", str(out_dir / name), *common], env=env,
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise SystemExit(f"lm_eval --model {name} exited {proc.returncode}: {proc.stderr[-2000:]}")
        out[name] = {"wall_s": time.perf_counter() - t0, "args": " ".join(batch)}
        print(f"generation {name}: {out[name]['wall_s']:.1f} s", flush=True)
    for name in ("fsgen", "vllm"):
        out[f"{name}_over_hf"] = out[name]["wall_s"] / out["hf"]["wall_s"]
    return out


def replay_seconds(folder: Path) -> dict:
    """The replays' seconds below ``folder``: System 1's scoring summed over cells (``small``), the large
    model's part once per (large, task) group (``large``: one replay command serves a group and every cell of
    it records that command's figure), and how many ``cells`` and ``groups`` there were."""
    from fsgen_eval.analysis.files import find_runs

    runs = [r for r in find_runs([folder]) if r.fsgen is not None and r.fsgen.replay]
    groups = {(Path(r.fsgen.large).name, tuple(sorted(r.fsgen.per_task))): r.fsgen.replay["seconds"]["large"]
              for r in runs}
    return {"small": sum(r.fsgen.replay["seconds"]["small"] for r in runs), "large": sum(groups.values()),
            "cells": len(runs), "groups": len(groups)}


def sweep_share(folder: Path) -> dict:
    """From a finished replaying sweep: System 2's generation seconds (lm-eval's own total of each
    ``_system2`` run), the replays' seconds and their shares of it.

    One replay command serves a whole (large, task) group: it scores every System 1 of the group (each cell's
    ``replay.seconds.small``, its own) and runs the large model once (its tails and look-ahead, or its
    statistics: ``replay.seconds.large``, which every cell of the group records). So the large model's part
    is counted once per group, not once per cell (counting it per cell overstated it by the group's size)."""

    gen = sum(float(json.loads(p.read_text())["total_evaluation_time_seconds"])  # lm-eval writes a string
              for p in (folder / "_system2").rglob("results_*.json"))
    seconds = replay_seconds(folder)
    small, large = seconds["small"], seconds["large"]
    return {"system2_generation_s": gen, "scoring_small_s": small, "large_part_s": large, "cells": seconds["cells"],
            "groups": seconds["groups"], "system1_scoring_over_generation": small / gen,
            "large_part_over_generation": large / gen, "scoring_over_generation": (small + large) / gen}


def bench_sweep(models: str, limit: str, out_dir: Path, tasks: str = "gsm8k,mbpp",
                system2: tuple[str, ...] = ("fsgen", "vllm"), vllm_args: str = "", jobs: int = 1) -> dict:
    """The replaying sweep with System 2 in this project's loop and on vLLM (``system2``), one after the
    other; ``limit``: problems per task, ``"all"`` for the whole test sets (no ``--limit``); ``jobs``: cells
    at once (the study's ``JOBS``, one thread each); ``vllm_args``: the vLLM System 2 run's model args
    (``--system2-vllm-args``)."""
    import shutil

    env = dict(os.environ, OMP_NUM_THREADS="1", VLLM_CPU_KVCACHE_SPACE="1", HF_ALLOW_CODE_EVAL="1",
               PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    out = {}
    for s2 in system2:
        folder = out_dir / f"sweep-{s2}"
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [sys.executable, "-m", "fsgen_eval.cli", "sweep", "--family", "micro", "--models", models,
               "--methods", "oracle", "--routers", "always", "--tasks", tasks, "--jobs", str(jobs),
               *([] if limit == "all" else ["--limit", limit]), "--output-path", str(folder),
               "--system2-model", s2, "--draft-lengths", "1,2,3,4,5,6,7,8",
               "--model-args-extra", "dtype=float32,batch_size=8",
               "--lm-eval-args", "--num_fewshot 3 --confirm_run_unsafe_code"]
        if s2 == "vllm" and vllm_args:
            cmd += ["--system2-vllm-args", vllm_args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"sweep {s2} exited {proc.returncode}: {proc.stderr[-2000:]}")
        out[s2] = {"wall_s": wall, **sweep_share(folder)}
        print(f"sweep, System 2 on {s2}: {wall:.1f} s; of System 2's generation: every System 1's scoring "
              f"{out[s2]['system1_scoring_over_generation']:.3f}, the large model's part "
              f"{out[s2]['large_part_over_generation']:.3f}, both {out[s2]['scoring_over_generation']:.3f}", flush=True)
    if len(out) == 2:
        out["vllm_over_fsgen"] = out["vllm"]["wall_s"] / out["fsgen"]["wall_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="sweep,generation,scoring")
    p.add_argument("--system2", type=Path, help="scoring: System 2's lm-eval --log_samples folder")
    p.add_argument("--score-models", default="models/micro/micro-s,models/micro/micro-l")
    p.add_argument("--large", default="models/micro/micro-xl")
    p.add_argument("--limit", default="8", help="problems per task; sweep: 'all' for the whole test sets")
    p.add_argument("--jobs", type=int, default=1, help="sweep: cells at once (the study runs 2)")
    p.add_argument("--max-gen-toks", type=int, default=64)
    p.add_argument("--sweep-models", default="micro-s,micro-l,micro-xl")
    p.add_argument("--sweep-tasks", default="gsm8k,mbpp")
    p.add_argument("--sweep-system2", default="fsgen,vllm", help="sweep: System 2's model classes, in this order")
    # eager on a CPU: vLLM's default torch.compile builds C++ for minutes per model (docs/vllm.md)
    p.add_argument("--system2-vllm-args", default="enforce_eager=True,max_model_len=2048",
                   help="sweep: the vLLM System 2 runs' model args (sweep --system2-vllm-args)")
    p.add_argument("--share-folder", type=Path, help="share: a finished replaying sweep's folder")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench-vllm")
    p.add_argument("--write", type=Path, help="write the unrounded figures to this JSON file")
    a = p.parse_args()
    if a.limit != "all" and not (a.limit.isdigit() and int(a.limit) > 0):
        p.error(f"--limit {a.limit!r}: a positive integer or 'all'")
    if a.limit == "all" and ("generation" in a.parts or "scoring" in a.parts):
        p.error("--limit all is for the sweep part only (generation and scoring take a number)")
    result = {"machine": f"{os.cpu_count()} CPU cores shared with other sessions (loaded), one thread per job",
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}

    def keep(name: str, value: dict) -> None:  # written after each part: a later crash loses nothing finished
        result["parts"][name] = value
        if a.write:
            a.write.parent.mkdir(parents=True, exist_ok=True)
            a.write.write_text(json.dumps(result, indent=2) + "\n")

    parts = a.parts.split(",")
    if "sweep" in parts:
        system2 = tuple(a.sweep_system2.split(","))
        keep("sweep", {"models": a.sweep_models, "tasks": a.sweep_tasks, "limit": a.limit, "jobs": a.jobs,
                       "system2_vllm_args": a.system2_vllm_args,
                       **bench_sweep(a.sweep_models, a.limit, a.work, a.sweep_tasks, system2, a.system2_vllm_args,
                                     a.jobs)})
    if "share" in parts:  # from a sweep already run (its wall time not measured here)
        keep("share", {"folder": str(a.share_folder), **sweep_share(a.share_folder)})
    if "generation" in parts:
        keep("generation", {"large": a.large, "limit": int(a.limit), "max_gen_toks": a.max_gen_toks,
                            **bench_generation(a.large, int(a.limit), a.max_gen_toks, a.work)})
    if "scoring" in parts:
        # default: the vLLM System 2 runs of the sweep part's largest model (GSM8K and MBPP)
        folders = [a.system2] if a.system2 else sorted(
            p.parent for p in (a.work / "sweep-vllm" / "_system2").glob(f"{Path(a.large).name}/*/*/results_*.json"))
        keep("scoring", {str(f.relative_to(a.work) if a.system2 is None else f):
                         bench_scoring(f, a.score_models.split(",")) for f in folders})

if __name__ == "__main__":
    main()
