"""A fixed System 2 run on the committed arith pair, and what ``fsgen-eval replay`` writes from it, in a form
that compares byte for byte (run ids, timestamps, paths and timings left out).

The run is built by hand, as lm-eval's ``--model hf --log_samples`` writes one: two tasks, the first with
prompts sharing a few-shot prefix (the shared-prefix scoring path), the second with prompts sharing nothing
(the right-padded path); responses that end at a stop string, before it (the large model decodes the tail)
and at ``max_gen_toks``. ``tests/data/replay_golden/*.json`` were written by this module with the replay code
of main at c3f9bac (``python tests/_replay_golden.py``), so the test holds the code to its earlier output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
ARITH = REPO / "models" / "arith"
GOLDEN = Path(__file__).resolve().parent / "data" / "replay_golden"
UNTIL = ["Question:", "</s>", "<|im_end|>"]
SHOTS = ("Question: Tom has 3 apples. He buys 4 more. How many apples does he have?\nAnswer: 3 + 4 = 7. "
         "The answer is 7.\n\nQuestion: Ann had 9 pens and gave 2 away. How many are left?\nAnswer: 9 - 2 = 7. "
         "The answer is 7.\n\n")
QUESTIONS = ["Sam has 5 cards. He gets 6 more. How many cards does he have?",
             "Mia had 12 eggs and used 5. How many eggs are left?",
             "Leo had 8 coins, found 3 and lost 2. How many coins does he have?",
             "A box holds 4 rows of 3 cups. How many cups are in the box?"]
RESPONSES = [" 5 + 6 = 11. The answer is 11.", " 12 - 5", "", " 4 * 3 = 12. The answer is 12. Question: x"]
MAX_GEN = [40, 40, 24, 40]
# (run name, replay flags)
RUNS = {"large": ["--large", str(ARITH / "arith-l"), "--small", f"{ARITH / 'arith-s'},{ARITH / 'arith-xs'}",
                  "--draft-lengths", "1,4", "--trace-topk", "3", "--batch-size", "3"],
        "no_large": ["--no-large", "--small", str(ARITH / "arith-s"), "--draft-lengths", "2", "--batch-size", "2"]}


def _line(doc_id: int, context: str, response: str, max_gen: int) -> dict:
    kwargs = {"until": UNTIL, "do_sample": False, "temperature": 0.0, "max_gen_toks": max_gen}
    return {"doc_id": doc_id, "arguments": {"gen_args_0": {"arg_0": context, "arg_1": kwargs}},
            "resps": [[response]], "filtered_resps": [response], "filter": "none"}


def write_system2_run(folder: Path) -> Path:
    """System 2's lm-eval output folder (``--model hf`` of arith-l, samples logged); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {"shared": [SHOTS + f"Question: {q}\nAnswer:" for q in QUESTIONS],
             "apart": [f"Question: {q}\nAnswer:" for q in QUESTIONS]}
    stamp = "2026-12-04T00-00-00.000000"
    for task, contexts in tasks.items():
        lines = [_line(i, c, r, m) for i, (c, r, m) in enumerate(zip(contexts, RESPONSES, MAX_GEN))]
        (folder / f"samples_{task}_{stamp}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = {"results": {t: {"exact_match,none": 0.0} for t in tasks},
               "configs": {t: {"output_type": "generate_until"} for t in tasks},
               "config": {"model": "hf", "model_args": {"pretrained": str(ARITH / "arith-l")}},
               "max_length": 512, "eot_token_id": 0, "tokenizer_eos_token": ["<|endoftext|>", "0"]}
    (folder / f"results_{stamp}.json").write_text(json.dumps(results))
    return folder


VOLATILE = ("run_id", "traces", "seconds", "system2_results")


def _scrub(obj):
    """``obj`` without the keys that differ between two identical replays (ids, names, times, paths)."""
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj.replace(str(ARITH), "ARITH") if isinstance(obj, str) else obj


def snapshot(out: Path) -> dict:
    """Per ``<small>__<large>`` folder: every trace line, the top-K side file's rows and ``config.fsgen``."""
    snap = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        traces = [json.loads(x) for f in sorted(folder.glob("traces_*.jsonl")) for x in f.read_text().splitlines()]
        side = [pq.read_table(f).to_pylist() for f in sorted(folder.glob("traces_*.topk.parquet"))]
        (results,) = folder.glob("results_*.json")
        fsgen = json.loads(results.read_text())["config"]["fsgen"]
        snap[folder.name] = {"records": _scrub(traces), "topk_rows": side, "fsgen": _scrub(fsgen)}
    return snap


def replay_snapshot(tmp: Path, run: str) -> dict:
    from fsgen_eval.cli import main as cli

    system2 = write_system2_run(tmp / "system2")
    out = tmp / f"out-{run}"
    if cli(["replay", str(system2), "-o", str(out), *RUNS[run]]) != 0:
        raise SystemExit(f"replay {run} failed")
    return snapshot(out)


def canonical(snap: dict) -> str:
    return json.dumps(snap, indent=1, sort_keys=True, allow_nan=True) + "\n"


if __name__ == "__main__":  # write the golden files (only ever from the reference code)
    import tempfile

    for run in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            (GOLDEN / f"{run}.json").write_text(canonical(replay_snapshot(Path(tmp), run)))
            print(f"wrote {GOLDEN / f'{run}.json'}", file=sys.stderr)
