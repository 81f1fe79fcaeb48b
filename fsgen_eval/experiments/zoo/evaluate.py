"""Each member of a family alone on its task, through lm-eval's own ``hf`` model: what the model card reports.

Per model: the task's accuracy per difficulty level with a Wilson 95 % interval, the generation-length
distribution, the share of generations that ended by a stop string or EOS before ``max_gen_toks``, and a
repetition measure. Written as ``<out>/<model>.json`` (summary) and ``<out>/<model>.samples.jsonl`` (one
compact row per problem: doc id, level, correct, generated tokens, ended, repetitive), so every number of
the card can be recomputed from committed files.

Lengths are counted by re-tokenising lm-eval's response (the text before the stop string) with the model's
own tokenizer; a response of at least ``max_gen_toks - LIMIT_SLACK`` tokens counts as having run to the limit
(a stopped arith answer is ~60-130 tokens, far from both sides of that line).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from scipy.stats import binomtest

LIMIT_SLACK = 16  # re-tokenised responses this close to max_gen_toks count as run to the limit
REPEAT_WINDOW = 64  # the repetition measure looks at a generation's last 64 tokens ...
REPEAT_N = 12  # ... and calls it repetitive when one 12-token n-gram occurs twice there


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """(k/n, lower, upper): the Wilson score 95 % interval (scipy), which stays inside [0, 1]."""
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def repetitive(ids: list[int], window: int = REPEAT_WINDOW, n: int = REPEAT_N) -> bool:
    """True when some ``n``-gram occurs at least twice among the last ``window`` tokens of ``ids``."""
    tail = ids[-window:]
    seen: set[tuple[int, ...]] = set()
    for i in range(len(tail) - n + 1):
        gram = tuple(tail[i : i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def sample_rows(samples: dict[str, list[dict]], tokenizer: Any, max_gen_toks: int) -> list[dict]:
    """One compact row per problem from lm-eval's logged samples of every level task.

    lm-eval logs one sample per (document, filter); ``correct`` is the strict-match exact match (``#### N``),
    ``correct_flexible`` the flexible extraction's.
    """
    by_doc: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for task, items in samples.items():
        for s in items:
            by_doc[(task, s["doc_id"])][s["filter"]] = s
    rows = []
    for (task, doc_id), per_filter in sorted(by_doc.items()):
        strict = per_filter["strict-match"]
        ids = tokenizer(strict["resps"][0][0], add_special_tokens=False)["input_ids"]
        rows.append({"task": task, "doc_id": doc_id, "level": strict["doc"]["level"],
                     "correct": int(strict["exact_match"]),
                     "correct_flexible": int(per_filter["flexible-extract"]["exact_match"]), "tokens": len(ids),
                     "ended": int(len(ids) < max_gen_toks - LIMIT_SLACK), "repetitive": int(repetitive(ids))})
    return rows


def summarise(rows: list[dict], max_gen_toks: int) -> dict:
    """Accuracy per level (strict and flexible, Wilson intervals), lengths, ended and repetitive shares."""
    by_level: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_level[r["level"]].append(r)

    def acc(rs: list[dict], key: str) -> dict:
        k, n = sum(r[key] for r in rs), len(rs)
        point, lo, hi = wilson(k, n)
        return {"correct": k, "n": n, "accuracy": point, "low": lo, "high": hi}

    lengths = sorted(r["tokens"] for r in rows)

    def q(p: float) -> int:
        return lengths[min(len(lengths) - 1, int(p * len(lengths)))]

    return {
        "strict": {"all": acc(rows, "correct"), **{f"level{l}": acc(rs, "correct") for l, rs in sorted(by_level.items())}},
        "flexible": {"all": acc(rows, "correct_flexible"),
                     **{f"level{l}": acc(rs, "correct_flexible") for l, rs in sorted(by_level.items())}},
        "generations": len(rows), "max_gen_toks": max_gen_toks,
        "tokens": {"mean": sum(lengths) / len(lengths), "p10": q(0.1), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
                   "max": lengths[-1]},
        "ended_share": sum(r["ended"] for r in rows) / len(rows),
        "repetitive_share": sum(r["repetitive"] for r in rows) / len(rows),
        "repetition_rule": f"a {REPEAT_N}-token n-gram occurring twice in the last {REPEAT_WINDOW} tokens",
        "ended_rule": f"re-tokenised response shorter than max_gen_toks - {LIMIT_SLACK}",
    }


def evaluate_model(model_dir: Path, task: str, tasks_dir: Path, limit: int | None, batch_size: int) -> tuple[list[dict], dict]:
    """Run ``lm_eval --model hf`` on ``task`` in-process; (rows, lm-eval's results dict without samples)."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=[task],
                                  task_manager=TaskManager(include_path=str(tasks_dir)), batch_size=batch_size,
                                  device="cpu", limit=limit, log_samples=True)
    max_gen_toks = 256  # lm-eval's default; a task's own generation_kwargs (read from the run's config) win
    for cfg in out["configs"].values():
        max_gen_toks = int(cfg.get("generation_kwargs", {}).get("max_gen_toks", max_gen_toks))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = sample_rows(out["samples"], tok, max_gen_toks)
    results = {k: out[k] for k in ("results", "configs", "n-samples") if k in out}
    return rows, {"results": results, "max_gen_toks": max_gen_toks}


def evaluate_family(models: list[tuple[str, Path, int]], task: str, tasks_dir: Path, out_dir: Path,
                    limit: int | None = None, batch_size: int = 32, log: Callable[[str], None] = print) -> dict:
    """Evaluate every ``(name, folder, total_params)``; finished models (their summary exists) are skipped.

    Returns ``{name: summary}``; each model's files are written (tmp + rename) before the next starts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name, folder, params in models:
        path = out_dir / f"{name}.json"
        if path.exists():
            summaries[name] = json.loads(path.read_text())
            log(f"{name}: already evaluated, skipping")
            continue
        rows, raw = evaluate_model(folder, task, tasks_dir, limit, batch_size)
        summary = {"model": name, "total_params": params, "task": task, "limit": limit,
                   **summarise(rows, raw["max_gen_toks"]), "lm_eval": raw["results"]}
        _write(out_dir / f"{name}.samples.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        _write(path, json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
        s = summary["strict"]["all"]
        log(f"{name}: accuracy {s['accuracy']:.4f} [{s['low']:.4f}, {s['high']:.4f}] on {s['n']} problems; "
            f"ended {summary['ended_share']:.3f}; repetitive {summary['repetitive_share']:.3f}")
        summaries[name] = summary
    return summaries


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
