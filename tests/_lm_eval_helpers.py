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
    """The switches every lm-eval test here runs under: no hub, local datasets, code execution allowed."""
    if not DATASETS.is_dir():
        skip_or_fail(f"offline datasets folder {DATASETS} is absent")
    os.environ["FSGEN_DATASETS_DIR"] = str(DATASETS)
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # mbpp's utils runs code_eval once when it is imported
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


@functools.lru_cache(maxsize=1)
def task_manager():
    import fsgen_eval.lm_eval  # noqa: F401  (registers --model fsgen; the offline datasets and code_eval)
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS))
