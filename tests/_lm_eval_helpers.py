"""Shared by the adapter/offline tests: the offline datasets folder and one lm-eval TaskManager per session
(building its task index takes seconds; simple_evaluate would build a new one per run), which also
indexes this repository's tasks/ folder."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "hf-datasets"
TASKS = REPO / "tasks"  # the paper's setups, as users pass them: --include_path tasks/


def offline_env() -> None:
    """The switches every lm-eval test here runs under: no hub (the datasets and code_eval come from the caches
    conftest filled from the offline folder), code execution allowed."""
    if not DATASETS.is_dir():
        skip_or_fail(f"offline datasets folder {DATASETS} is absent")
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # mbpp's utils runs code_eval once when it is imported
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


@functools.lru_cache(maxsize=1)
def task_manager():
    import fsgen_eval.lm_eval  # noqa: F401  (registers --model fsgen)
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS))


def lm_eval_run(out: Path, model: str, model_args: str, max_gen_toks: int = 20) -> Path:
    """One lm-eval run on 3 GSM8K + 2 MBPP prompts (1-shot, batch 2), saved as the CLI saves it
    (``--log_samples``); an fsgen run laid out as ``fsgen-eval run`` lays it out. Returns the results' folder."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    from fsgen_eval.core.runs import run_layout

    offline_env()
    layout = run_layout(out, model_args) if model == "fsgen" else None
    if layout is not None:
        _, lm_eval_path, model_args = layout
    tracker = EvaluationTracker(output_path=str(lm_eval_path if layout else out))
    res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["gsm8k", "mbpp"], limit=3,
                                  num_fewshot=1, gen_kwargs=f"max_gen_toks={max_gen_toks}", batch_size=2,
                                  log_samples=True, confirm_run_unsafe_code=True, task_manager=task_manager(),
                                  evaluation_tracker=tracker)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples)
    for task in res["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    (results,) = out.rglob("results_*.json")
    return results.parent
