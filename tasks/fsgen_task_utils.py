"""Metrics of the tasks in this folder (loaded by lm-eval through ``!function fsgen_task_utils.<name>``)."""

from __future__ import annotations

from typing import Any

from fsgen_eval.lm_eval.code_eval import CodeEval

# The MBPP paper's few-shot exemplars: tasks 2, 3 and 4 of the prompt split.
MBPP_PROMPT_TASK_IDS = (2, 3, 4)


def mbpp_prompt_examples(dataset: Any) -> Any:
    """The prompt split cut to the paper's three exemplars, in task-id order."""
    return dataset.filter(lambda doc: doc["task_id"] in MBPP_PROMPT_TASK_IDS)


def pass_at_1(references: list[str], predictions: list[list[str]] | list[str]) -> float:
    """pass@1 of each generated program followed by its task's asserts (offline sandboxed runs)."""
    if isinstance(predictions[0], str):
        predictions = [[p] for p in predictions]  # one candidate per problem
    scores, _ = CodeEval().compute(predictions=predictions, references=references, k=[1])
    return scores["pass@1"]
