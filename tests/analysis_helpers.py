"""Writers of small fake lm-eval output folders (results + traces) for the analysis tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.core.schema import FIELD_DTYPES, TOKEN_FIELDS, summarize, trace_to_json


def make_trace(s1_entropy: list[float], handoff: list[bool], llm_called: list[bool] | None = None,
               top1: list[float] | None = None, margin: list[float] | None = None) -> dict[str, np.ndarray]:
    """A per-token trace; top-1 probability and margin default to simple functions of the entropy."""
    n = len(s1_entropy)
    ent = np.asarray(s1_entropy, np.float32)
    called = np.ones(n, bool) if llm_called is None else np.asarray(llm_called, bool)
    t = {k: np.zeros(n, FIELD_DTYPES[k]) for k in TOKEN_FIELDS}
    t.update(token_id=np.arange(n), source=np.where(np.asarray(handoff), 2, 1).astype(np.int8),
             llm_called=called, handoff=np.asarray(handoff, bool) & called, s1_entropy=ent,
             s1_top1_prob=np.asarray(top1 if top1 is not None else np.exp(-ent), np.float32),
             s1_margin=np.asarray(margin if margin is not None else np.exp(-2 * ent), np.float32),
             s2_entropy=np.where(called, 0.5, np.nan).astype(np.float32),
             s2_top1_prob=np.where(called, 0.8, np.nan).astype(np.float32),
             s2_margin=np.where(called, 0.6, np.nan).astype(np.float32), accepted=np.full(n, -1, np.int8),
             base_handoff=np.full(n, -1, np.int8))  # -1: no untuned base (every method but proxy), as written
    return t


def random_traces(n: int, length: int, seed: int, router: str = "always", shift: float = 0.0) -> list[dict]:
    """Traces whose handoff probability grows with System 1's entropy (so AUROC > 0.5)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ent = rng.gamma(2.0, 0.5, length)
        handoff = rng.random(length) < np.clip(0.05 + 0.2 * ent + shift, 0, 1)
        called = np.ones(length, bool) if router == "always" else ent > 1.0
        out.append(make_trace(list(ent), list(handoff), list(called)))
    return out


def write_run(folder: Path, small: str, large: str, method: str = "oracle", router: str = "always",
              threshold: float | None = None, tasks: dict[str, dict[str, Any]] | None = None,
              traces: dict[str, list[dict]] | None = None, ts: str = "2026-01-01T00-00-00.000000",
              summary_override: dict[str, dict[str, Any]] | None = None,
              params: dict[str, Any] | None = None) -> Path:
    """Write ``folder/<small>__<large>/results_<ts>.json`` (+ ``traces_<ts>.jsonl``) as the adapter would."""
    tasks = tasks or {"gsm8k": {"exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.05}}
    traces = traces or {}
    out = Path(folder) / f"{small.replace('/', '__')}__{large.replace('/', '__')}"
    out.mkdir(parents=True, exist_ok=True)
    per_task = {t: summarize(traces.get(t, [])) for t in tasks}
    for t, s in (summary_override or {}).items():
        per_task[t] = {**per_task.get(t, {}), **s}
    fsgen = {"small": small, "large": large, "small_base": None, "method": method, "router": router,
             "threshold": threshold, "params": params or {}, "summary": summarize([tr for v in traces.values() for tr in v]),
             "per_task": per_task, "tokens_per_second": 123.4,
             "traces": [f"traces_{ts}.jsonl"] if traces else []}
    results = {"results": {t: {"alias": t, **m} for t, m in tasks.items()}, "config": {"model": "fsgen", "fsgen": fsgen}}
    (out / f"results_{ts}.json").write_text(json.dumps(results))
    if traces:
        with (out / f"traces_{ts}.jsonl").open("w") as fh:
            for task, trs in traces.items():
                for i, tr in enumerate(trs):
                    rec = {"task": task, "doc_id": i, "prompt_hash": "x", "request_type": "generate_until",
                           "method": method, "router": router, "rank": 0, **trace_to_json(tr),
                           "drafted_tokens": 0, "accepted_tokens": 0, "verification_steps": 0}
                    fh.write(json.dumps(rec) + "\n")
    return out


# each analysis command's extra arguments, for tests that run every reader on one folder
READER_ARGS = {"check": lambda tmp: ["--baseline", str(tmp / "b.json"), "--update-baseline"],
               "report": lambda tmp: ["-o", str(tmp / "rep"), "--n-boot", "20"],
               "fit": lambda tmp: [],
               "analyze": lambda tmp: []}


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI on ``argv``: exit status 2 and one stderr line (no traceback) holding every needle."""
    from fsgen_eval.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err
