"""What outcome labels cost beside the run they label (issue 20): in one process, one torch thread, side by side.

1. System 2's own generation: ``fsgen-eval run`` of the large model alone (``small=large``, router ``never``,
   exact token ids in its traces: the sweep's System 2 run) on ``--limit`` problems of each arith level;
2. the pair's oracle run made from it by ``fsgen-eval replay`` (System 1 teacher-forced; timed, not part of the
   ratio);
3. ``fsgen-eval label`` of that replayed run: every handoff, then a seeded sample of ``--sample`` handoffs.

Printed and written (``-o``, JSON): each step's wall seconds (the whole command: model loading and lm-eval's task
set-up included, as a user pays them), lm-eval's own evaluation time of step 1, the label command's own cost
record (System 2 tokens decoded by the continuations, their seconds, System 1's teacher-forced pass), System 2
tokens per labelled handoff, and the ratios of labelling to System 2's generation. The label code is called
through the CLI, so this measures whichever continuation code is installed.

    OMP_NUM_THREADS=1 python benchmarks/bench_label_cost.py -o benchmarks/results/label_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> float:
    """Wall seconds of one ``fsgen-eval`` command run in this process; a failure stops the benchmark."""
    from fsgen_eval.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    if rc:
        raise SystemExit(f"fsgen-eval {' '.join(argv[:1])} exited {rc}")
    return time.perf_counter() - t0


def one_results(folder: Path) -> Path:
    (path,) = sorted(folder.rglob("results_*.json"))
    return path


def label_cost(folder: Path) -> dict[str, Any]:
    """The label command's own cost record of the one run it labelled (``runs.json``)."""
    (entry,) = json.loads((folder / "runs.json").read_text()).values()
    return {**entry["cost"], "handoffs": entry["handoffs"], "sampled": entry["sampled"]}


def per_handoff(cost: dict[str, Any], label_s: float, gen_s: float, engine_s: float) -> dict[str, Any]:
    """Whole commands against each other, and the decoding loops alone: the label's continuations against
    System 2's seconds in the engine (its run's ``tokens_per_second``), without model loading and task set-up."""
    n = max(int(cost["labelled"]), 1)
    return {"wall_s": label_s, "cost": cost, "s2_tokens_per_labelled_handoff": cost["s2_tokens_decoded"] / n,
            "wall_s_per_labelled_handoff": label_s / n,
            "ratio_wall_to_s2_generation_wall": label_s / gen_s,
            "ratio_continuations_to_s2_engine": cost["continuation_seconds"] / engine_s}


def format_markdown(out: dict[str, Any]) -> str:
    """The JSON's figures, each rounded once, here."""
    g = out["system2_generation"]
    small, large = (Path(m).name for m in out["pair"])
    lines = [f"# Labelling cost beside System 2's generation ({small} -> {large})", "",
             f"One process, {out['torch_threads']} torch thread, one after another: `fsgen-eval run` of "
             f"{large} alone on {out['task']} (the first {out['limit_per_level']} problems of "
             f"each level; {g['generated_tokens']} tokens), `fsgen-eval replay` of {small} on "
             "it, then `fsgen-eval label` of that replayed run: every handoff, then a seeded sample. Wall seconds "
             "of whole commands (model loading and lm-eval's task set-up included) on a 2-core machine shared "
             f"with other jobs (load average at the end {out['load_average_at_end'][0]:.1f}): a ratio measured "
             "side by side, not a speed. Written by benchmarks/bench_label_cost.py into label_cost.json.", "",
             f"System 2's generation: {g['wall_s']:.1f} s (lm-eval's evaluation time {g['lm_eval_evaluation_s']:.1f}"
             f" s, of which {g['engine_s']:.1f} s in the decoding loop); the replay: {out['replay_wall_s']:.1f} s. "
             "The last column sets the label's continuations (System 2 decoding from each handoff, each scored by the "
             "task's metric) against that "
             "decoding loop: both without model loading and task set-up.", "",
             "| labelling | handoffs labelled | System 2 tokens per labelled handoff | wall s | wall / System 2 "
             "generation | continuations s | continuations / System 2's decoding loop |", "|---|---|---|---|---|---|---|"]
    for key, name in (("label_all", "every handoff"), ("label_sample", f"sample of {out['label_sample']['sample']}")):
        r = out[key]
        c = r["cost"]
        lines.append(f"| {name} | {c['labelled']} of {c['handoffs']} | {r['s2_tokens_per_labelled_handoff']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['ratio_wall_to_s2_generation_wall']:.2f} | "
                     f"{c['continuation_seconds']:.1f} | {r['ratio_continuations_to_s2_engine']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", default="models/arith/arith-s")
    ap.add_argument("--large", default="models/arith/arith-l")
    ap.add_argument("--task", default="fsgen_arith")
    ap.add_argument("--limit", type=int, default=13, help="problems per level of the group (13: 52 in all)")
    ap.add_argument("--sample", type=int, default=50, help="the seeded sample's size (handoffs per run)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("-o", "--output", type=Path, required=True, help="the JSON (its .md beside it)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from an existing JSON")
    args = ap.parse_args()
    if args.markdown_only:
        args.output.with_suffix(".md").write_text(format_markdown(json.loads(args.output.read_text())))
        return

    import torch

    from fsgen_eval.analysis import files

    torch.set_num_threads(1)
    os.chdir(REPO)
    work = Path(tempfile.mkdtemp(prefix="bench-label-"))
    try:
        s2_dir, replay_dir = work / "system2", work / "replay"
        gen_s = timed(["run", "--model", "fsgen", "--model_args",
                       f"small={args.large},large={args.large},method=oracle,router=never,trace=true,dtype=float32,"
                       f"batch_size={args.batch_size}", "--tasks", args.task, "--include_path", "tasks/",
                       "--limit", str(args.limit), "--log_samples", "--output_path", str(s2_dir)])
        s2_results = json.loads(one_results(s2_dir).read_text())
        s2_info = files.load_run(one_results(s2_dir)).fsgen
        s2_tokens = s2_info.summary["generated_tokens"]
        engine_s = s2_tokens / s2_info.tokens_per_second  # its seconds in the decoding loop itself
        replay_s = timed(["replay", str(one_results(s2_dir).parent), "--small", args.small, "--large", args.large,
                          "-o", str(replay_dir), "--dtype", "float32", "--batch-size", str(args.batch_size)])
        run = one_results(replay_dir)
        common = [str(run), "--include_path", "tasks/", "--batch-size", str(args.batch_size), "--n-boot", "200"]
        all_s = timed(["label", *common, "-o", str(work / "all")])
        sample_s = timed(["label", *common, "--sample", str(args.sample), "--seed", "0", "-o", str(work / "sample")])
        gen_eval_s = float(s2_results["total_evaluation_time_seconds"])
        out = {
            "pair": [args.small, args.large], "task": args.task, "limit_per_level": args.limit,
            "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(), "machine": platform.processor() or platform.machine(),
            "system2_generation": {"wall_s": gen_s, "lm_eval_evaluation_s": gen_eval_s, "engine_s": engine_s,
                                   "generated_tokens": s2_tokens},
            "replay_wall_s": replay_s,
            "label_all": per_handoff(label_cost(work / "all"), all_s, gen_s, engine_s),
            "label_sample": {"sample": args.sample,
                             **per_handoff(label_cost(work / "sample"), sample_s, gen_s, engine_s)},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(format_markdown(out))
    for key in ("label_all", "label_sample"):
        r = out[key]
        print(f"{key}: {r['cost']['labelled']} handoffs labelled, {r['s2_tokens_per_labelled_handoff']:.1f} System 2 "
              f"tokens each; wall {r['wall_s']:.1f} s = {r['ratio_wall_to_s2_generation_wall']:.2f}x System 2's "
              f"generation ({gen_s:.1f} s); continuations alone {r['cost']['continuation_seconds']:.1f} s = "
              f"{r['ratio_continuations_to_s2_engine']:.2f}x System 2's decoding loop ({engine_s:.1f} s)")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
