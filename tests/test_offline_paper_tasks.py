"""tasks/: the paper's setups load with --include_path tasks/, render as intended and score offline."""

from __future__ import annotations

import json
import re

import pytest

from _lm_eval_helpers import DATASETS, offline_env, task_manager


def rows(rel: str) -> list[dict]:
    return [json.loads(x) for x in (DATASETS / rel).read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def tasks():
    offline_env()
    loaded = task_manager().load(["fsgen_gsm8k_cot", "fsgen_mbpp", "fsgen_mmlu_stem_cot"])
    for task in loaded["tasks"].values():
        task.set_fewshot_seed(1234)
    return loaded


def prompt(task) -> str:
    task.build_all_requests(limit=1, rank=0, world_size=1)
    return task.instances[0].arguments[0]


def test_gsm8k_eight_shot_chain_of_thought(tasks):
    task = tasks["tasks"]["fsgen_gsm8k_cot"]
    text = prompt(task)
    train, test = rows("openai/gsm8k/main/train.jsonl"), rows("openai/gsm8k/main/test.jsonl")
    assert text.count("Let's think step by step.") == 9  # 8 exemplars and the question
    assert text.count("The answer is ") == 8 and "<<" not in text and "####" not in text
    assert text.startswith(f"Question: {train[0]['question']}\nAnswer: Let's think step by step. ")
    assert text.endswith(f"Question: {test[0]['question']}\nAnswer: Let's think step by step.")
    assert task.doc_to_target(test[0]) == "18"
    last_shot = train[7]["answer"].split("####")[-1].strip()
    assert f"The answer is {last_shot}." in text


def test_mmlu_stem_chain_of_thought_group(tasks):
    stem = {n: t for n, t in tasks["tasks"].items() if n.startswith("fsgen_mmlu_stem_cot_")}
    assert len(stem) == 19
    task = stem["fsgen_mmlu_stem_cot_abstract_algebra"]
    doc = rows("cais/mmlu/abstract_algebra/test.jsonl")[0]
    text = prompt(task)
    assert "question about abstract algebra" in text and doc["question"].strip() in text
    assert text.endswith("Answer: Let's think step by step.")
    assert task.instances[0].request_type == "generate_until"
    strict = next(f for f in task.config.filter_list if f["name"] == "strict-match")["filter"][0]
    assert re.findall(strict["regex_pattern"], "... (B) looks wrong. The answer is (C).") == ["C"]


def test_mbpp_three_shot_prompt_and_offline_pass_at_1(tasks):
    task = tasks["tasks"]["fsgen_mbpp"]
    text = prompt(task)
    shots = rows("google-research-datasets/mbpp/full/prompt.jsonl")[1:4]
    assert [s["task_id"] for s in shots] == [2, 3, 4]
    for shot in shots:
        assert f"{shot['code']}\n[DONE]" in text
    assert text.endswith("[BEGIN]\n") and text.count("[BEGIN]") == 4
    doc = task.test_docs()[0]
    metric = task.config.metric_list[0]["metric"]
    assert metric(references=[task.doc_to_target(doc)], predictions=[doc["code"]]) == 1.0
    assert metric(references=[task.doc_to_target(doc)], predictions=["def remove_Occ(s, ch): return s"]) == 0.0
    assert re.search(r"assert remove_Occ", task.doc_to_target(doc))
