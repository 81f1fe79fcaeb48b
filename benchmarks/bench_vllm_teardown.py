"""How often a process that used vLLM ends cleanly: the same command run ``--runs`` times, each in a fresh
subprocess, its exit code recorded (docs/vllm.md, "Engine teardown").

Commands (``--what``):

- ``scorer``: this file's own child: ``VLLMBackend.load`` of each ``--models`` model in turn (exact scoring,
  as ``replay --scoring vllm`` builds it), a few sequences scored, ``close()``, then a normal interpreter exit.
- ``replay``: ``python -m fsgen_eval.cli replay SYSTEM2 --small S --large L --scoring vllm -o TMP`` on an
  lm-eval ``--log_samples`` folder (``--system2``; made once with ``lm_eval --model hf`` on ``--large`` when
  the folder holds no results); with ``--no-large``, the replay's ``--no-large`` (one engine per run).

Each run's exit code (negative: the signal that ended it, -6 = SIGABRT), its seconds and whether its stderr
holds ``terminate called`` go into ``--write`` under ``--label`` (other labels in the file are kept, so the
runs before and after a change sit side by side). Run from the vLLM venv (docs/vllm.md)::

    python benchmarks/bench_vllm_teardown.py --what replay --runs 12 --label after \\
        --write benchmarks/results/vllm_teardown.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "models" / "micro"
ABORT = "terminate called"


def child_scorer(models: list[str]) -> None:
    """One engine per model, one after the other (as a replay loads the large model, then each System 1)."""
    import torch

    from fsgen_eval.engine.backends.vllm_backend import ScoringSpec, VLLMBackend

    ids = torch.arange(3 * 24).reshape(3, 24) % 2000 + 3  # [3, 24]: any token ids
    for m in models:
        scorer = VLLMBackend.load(m, 2048, ScoringSpec(0, {"max_model_len": 2048}))
        try:
            assert scorer.score(ids).shape == (3, 24, 2048)
        finally:
            scorer.close()


def env() -> dict[str, str]:
    # PYTHONFAULTHANDLER: an abort prints every thread's Python stack, so the stderr kept says where it struck
    return dict(os.environ, PYTHONFAULTHANDLER="1", VLLM_CPU_KVCACHE_SPACE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def system2_samples(folder: Path, large: str) -> Path:
    """An lm-eval ``--log_samples`` run of ``large`` (GSM8K, 2 problems, 24 new tokens), made once."""
    if not any(folder.rglob("results_*.json")):
        from fsgen_eval.experiments.sweep import lm_eval_command

        # GSM8K offline: Hugging Face's own caches, filled from the local hub-like folder (fsgen-eval offline-cache)
        caches = folder.parent / f"{folder.name}_hf_cache"
        hf = dict(env(), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(caches / "datasets"),
                  HF_MODULES_CACHE=str(caches / "modules"))
        subprocess.run([sys.executable, "-m", "fsgen_eval.cli", "offline-cache"], env=hf, check=True, cwd=REPO)
        cmd = [*lm_eval_command("hf"), "--model", "hf", "--model_args", f"pretrained={large},dtype=float32",
               "--tasks", "gsm8k", "--limit", "2", "--num_fewshot", "3", "--gen_kwargs", "max_gen_toks=24",
               "--log_samples", "--output_path", str(folder)]
        subprocess.run(cmd, env=hf, check=True, cwd=REPO, timeout=1800)
    return folder


def command(args: argparse.Namespace, out: Path) -> list[str]:
    if args.what == "scorer":
        return [sys.executable, __file__, "--child", ",".join(args.models)]
    large = ["--no-large"] if args.no_large else ["--large", args.large]
    return [sys.executable, "-m", "fsgen_eval.cli", "replay", str(args.system2), "--small", args.models[0], *large,
            "--scoring", "vllm", "--vllm-args", "max_model_len=2048", "-o", str(out)]


def run_once(cmd: list[str], timeout: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    row = {"exit_code": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "terminate_called": ABORT in proc.stderr}
    if proc.returncode != 0:
        row["stderr_tail"] = proc.stderr[-1500:]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)  # the scorer child: comma-separated models
    p.add_argument("--what", choices=("scorer", "replay"), default="scorer")
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--models", default=str(MICRO / "micro-s"), help="comma-separated; replay: System 1 (first)")
    p.add_argument("--large", default=str(MICRO / "micro-l"), help="replay: the large model (System 2's samples' "
                   "model)")
    p.add_argument("--no-large", action="store_true", help="replay: --no-large (one engine, System 1's, per run)")
    p.add_argument("--system2", type=Path, default=REPO / "runs" / "teardown_system2")
    p.add_argument("--label", required=False, default="run")
    p.add_argument("--note", default="", help="what the tree held (recorded beside the runs)")
    p.add_argument("--write", type=Path)
    p.add_argument("--timeout", type=int, default=900)
    args = p.parse_args()
    if args.child:
        child_scorer(args.child.split(","))
        return
    args.models = args.models.split(",")
    if args.what == "replay":
        system2_samples(args.system2, args.large)
    rows: list[dict] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_once(command(args, Path(tmp) / "out"), args.timeout))
        print(f"{args.label} run {i + 1}/{args.runs}: exit {rows[-1]['exit_code']} ({rows[-1]['seconds']} s)",
              flush=True)
        entry = summary(args, rows)
        if args.write:  # after every run: an interrupted measurement keeps the runs it made
            data = json.loads(args.write.read_text()) if args.write.exists() else {}
            data[args.label] = entry
            args.write.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: v for k, v in entry.items() if k != "per_run"}, indent=1))


def summary(args: argparse.Namespace, rows: list[dict]) -> dict:
    """The runs so far: how many, how many exited 0, the count of each exit code, and each run."""
    codes = [r["exit_code"] for r in rows]
    return {"what": args.what, "command": " ".join(command(args, Path("OUT"))[1:]).replace(str(REPO) + "/", ""),
            "note": args.note, "runs_asked": args.runs, "runs": len(rows), "clean": codes.count(0),
            "exit_codes": {str(c): codes.count(c) for c in sorted(set(codes))},
            "terminate_called": sum(r["terminate_called"] for r in rows), "per_run": rows,
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


if __name__ == "__main__":
    main()
