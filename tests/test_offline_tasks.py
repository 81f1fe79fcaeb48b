"""Offline, lm-eval's *unchanged* gsm8k, mmlu and mbpp read the local hub-like folder through datasets' and
evaluate's own caches (filled by conftest with ``fsgen-eval offline-cache``; nothing patched).

Expectations are derived from lm-eval's own task definitions (its YAML files, read from the installed
package) applied to the raw rows of the local files, so nothing here is a copy that could drift.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import lm_eval
import pytest

from _lm_eval_helpers import DATASETS, offline_env, task_manager

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def render(template: str, doc: dict) -> str:
    return jinja2.Template(template, keep_trailing_newline=True).render(**doc)


@pytest.fixture(scope="module")
def loaded():
    offline_env()
    tm = task_manager()
    tasks = tm.load(["gsm8k", "mbpp", "mmlu_abstract_algebra"])["tasks"]
    for task in tasks.values():
        task.set_fewshot_seed(1234)
    return tm, tasks


def first_prompt(task, num_fewshot: int | None = None) -> str:
    if num_fewshot is not None:
        task.set_config(key="num_fewshot", value=num_fewshot)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    return task.instances[0].arguments[0]


def test_configs_are_lm_evals_own_files(loaded):
    tm, tasks = loaded
    for name, task in tasks.items():
        entry = tm.task_index[name]
        assert Path(entry.yaml_path).is_relative_to(LM_EVAL_TASKS), name  # not a copy of ours
        hub_id = {"gsm8k": "openai/gsm8k", "mbpp": "google-research-datasets/mbpp"}.get(name, "cais/mmlu")
        assert task.config.dataset_path == hub_id  # the config names the hub; datasets' offline cache serves it


def test_gsm8k_docs_and_fewshots_come_from_the_local_files(loaded):
    tm, tasks = loaded
    task, cfg = tasks["gsm8k"], tm.task_index["gsm8k"].cfg
    prompt = first_prompt(task)
    test0 = rows(DATASETS / "openai/gsm8k/main/test.jsonl")[0]
    train = {(r["question"], r["answer"]) for r in rows(DATASETS / "openai/gsm8k/main/train.jsonl")}
    assert prompt.endswith(render(cfg["doc_to_text"], test0))
    shots = prompt.split("\n\n" + render(cfg["doc_to_text"], test0))[0].split("\n\nQuestion: ")
    assert len(shots) == cfg["num_fewshot"]
    for shot in shots:
        q, a = shot.removeprefix("Question: ").split("\nAnswer: ", 1)
        assert (q, a) in train
    assert [f.name for f in task._filters] == [f["name"] for f in cfg["filter_list"]]
    assert list(task._metric_fn_list) == [m["metric"] for m in cfg["metric_list"]]
    assert task.config.generation_kwargs["until"] == cfg["generation_kwargs"]["until"]


def test_mmlu_prompt_is_the_template_over_local_dev_and_test_rows(loaded):
    tm, tasks = loaded
    task = tasks["mmlu_abstract_algebra"]
    template = tm.task_index["mmlu_abstract_algebra"].cfg
    prompt = first_prompt(task, num_fewshot=2)
    folder = DATASETS / "cais/mmlu/abstract_algebra"
    dev, test = rows(folder / "dev.jsonl"), rows(folder / "test.jsonl")
    shots = [render(task.config.doc_to_text, d) + " " + "ABCD"[d["answer"]] for d in dev[:2]]
    assert prompt == template["description"] + "\n\n".join(shots + [render(task.config.doc_to_text, test[0])])
    assert list(task._metric_fn_list) == ["acc"]
    choices = [inst.arguments[1] for inst in task.instances]
    assert choices == [" A", " B", " C", " D"]


def test_mbpp_prompt_and_scoring_are_lm_evals(loaded):
    tm, tasks = loaded
    task = tasks["mbpp"]
    prompt = first_prompt(task)
    test0 = rows(DATASETS / "google-research-datasets/mbpp/full/test.jsonl")[0]
    shots = task.config.fewshot_config.samples()  # lm-eval's own mbpp/utils.py list
    expected = "\n\n".join(render(task.config.doc_to_text, s) + render(task.config.doc_to_target, s) for s in shots)
    assert prompt == expected + "\n\n" + render(task.config.doc_to_text, test0)
    metric = task.config.metric_list[0]["metric"]  # the !function of lm-eval's mbpp.yaml
    assert Path(metric.__code__.co_filename) == LM_EVAL_TASKS / "mbpp" / "utils.py"
    # lm-eval's metric, scored offline: the dataset's reference solution passes, a wrong one fails
    tests = "\n".join(test0["test_list"])
    assert metric(references=[tests], predictions=[[test0["code"]]]) == 1.0
    assert metric(references=[tests], predictions=[["def remove_Occ(s, ch):\n    return s"]]) == 0.0


def test_every_mmlu_subtask_resolves_locally(loaded):
    tm, _ = loaded
    import datasets

    from fsgen_eval.lm_eval.offline import cached_config

    subtasks = {n: e for n, e in tm.task_index.items()
                if n.startswith("mmlu_") and e.cfg and e.cfg.get("dataset_name") and e.yaml_path
                and Path(e.yaml_path).parent.name == "default"}
    assert len(subtasks) == 57
    cache = Path(datasets.config.HF_DATASETS_CACHE)
    for name, entry in subtasks.items():
        assert (DATASETS / "cais/mmlu" / entry.cfg["dataset_name"] / "test.jsonl").is_file(), name
        assert cached_config("cais/mmlu", entry.cfg["dataset_name"], cache) is not None, name


@pytest.mark.slow
def test_mmlu_stem_group_loads_offline(loaded):
    tm, _ = loaded
    stem = tm.load(["mmlu_stem"])
    assert len(stem["tasks"]) == 19
    for task in stem["tasks"].values():
        assert len(task.test_docs()) > 0
