"""The fsgen_arith task: a deterministic generator, disjoint splits, GSM8K's grading, and lm-eval runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import yaml

from fsgen_eval.core import arith

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
SMALL = {"train": 40, "validation": 5, "test": 10}


class _TagLoader(yaml.SafeLoader):
    """Reads task YAMLs with lm-eval's ``!function`` tags kept as plain strings."""


_TagLoader.add_constructor("!function", lambda loader, node: f"!function {node.value}")


def _task_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_TagLoader)


def test_same_seed_same_file_hash_other_seed_other_files(tmp_path):
    a = arith.write_splits(tmp_path / "a", seed=7, per_level=SMALL)
    b = arith.write_splits(tmp_path / "b", seed=7, per_level=SMALL)
    c = arith.write_splits(tmp_path / "c", seed=8, per_level=SMALL)
    assert a == b
    assert all(a[s] != c[s] for s in arith.SPLITS)
    assert (tmp_path / "a" / "test.jsonl").read_bytes() == (tmp_path / "b" / "test.jsonl").read_bytes()


def test_a_problem_depends_on_seed_split_and_index_only():
    whole = arith.generate_split("test", seed=3, per_level=5)
    assert arith.make_problem(3, "test", 13, arith.LEVELS[13 % 4]) == whole[13]


def test_published_splits_never_share_a_problem_and_have_the_documented_sizes():
    splits = arith.split_problems()
    questions = {name: {p.question for p in docs} for name, docs in splits.items()}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    test = splits["test"]
    assert len(test) >= 1000
    assert [sum(p.level == lv for p in test) for lv in arith.LEVELS] == [300] * 4


def test_a_duplicate_of_a_test_question_is_dropped_from_train(monkeypatch):
    # Force a collision: the train problem at index 0 is generated as the test problem at index 0.
    real = arith.make_problem
    monkeypatch.setattr(arith, "make_problem",
                        lambda seed, split, i, level: real(seed, "test" if (split, i) == ("train", 0) else split, i, level))
    splits = arith.split_problems(seed=5, per_level=SMALL)
    assert len(splits["train"]) == 4 * SMALL["train"] - 1
    assert splits["test"][0].question not in {p.question for p in splits["train"]}


def test_solutions_are_right_and_written_the_gsm8k_way():
    for p in arith.generate_split("test", per_level=50):
        lines = p.answer.split("\n")
        assert len(lines) == p.level + 1 and lines[-1].startswith("#### ")
        for calc in re.findall(r"<<([^>]*)>>", p.answer):
            left, right = calc.split("=")
            assert eval(left.replace("/", "//")) == int(right)  # noqa: S307 - our own arithmetic strings
        # the running total carries from each line's result into the next line's calculation
        results = [int(x) for x in re.findall(r">>(\d+)", p.answer)]
        assert results[-1] == int(arith.final_answer(p.answer)) and max(results) <= arith.MAX_VALUE


def test_grading_is_lm_evals_gsm8k_grading():
    ours = _task_yaml(TASKS / "fsgen_arith" / "_fsgen_arith_template_yaml")
    gsm8k = _task_yaml(Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml")
    for key in ("filter_list", "metric_list", "doc_to_text", "doc_to_target", "output_type"):
        assert ours[key] == gsm8k[key], key
    assert ours["generation_kwargs"]["until"] == gsm8k["generation_kwargs"]["until"]


def test_the_strict_and_flexible_filters_extract_every_answer():
    cfg = _task_yaml(TASKS / "fsgen_arith" / "_fsgen_arith_template_yaml")
    strict, flexible = (f["filter"][0] for f in cfg["filter_list"])
    for p in arith.split_problems()["test"]:
        target = arith.final_answer(p.answer)
        assert re.findall(strict["regex_pattern"], p.answer)[0] == target
        last = re.findall(flexible["regex_pattern"], p.answer)[flexible["group_select"]]
        assert next(g for g in last if g) == target


def _lm_eval(tmp_path: Path, model: str, model_args: str) -> dict[int, str]:
    out = tmp_path / model
    launcher = ["fsgen_eval.cli", "run"] if model == "fsgen" else ["lm_eval"]  # fsgen-eval run registers fsgen
    cmd = [sys.executable, "-m", *launcher, "--model", model, "--model_args", model_args, "--include_path", str(TASKS),
           "--tasks", "fsgen_arith_level2", "--limit", "6", "--batch_size", "4", "--log_samples", "--output_path", str(out)]
    if model == "hf":
        cmd += ["--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (samples,) = out.rglob("samples_fsgen_arith_level2_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {r["doc_id"]: r["resps"][0][0] for r in rows if r["filter"] == "strict-match"}


@pytest.mark.slow
def test_the_task_runs_unchanged_through_hf_and_fsgen(tmp_path):
    large, small = REPO / "models" / "arith" / "arith-m", REPO / "models" / "arith" / "arith-xs"
    hf = _lm_eval(tmp_path, "hf", f"pretrained={large},dtype=float32")
    fsgen = _lm_eval(tmp_path, "fsgen", f"small={small},large={large},method=oracle,router=always,dtype=float32")
    assert len(hf) == 6 and fsgen == hf  # the oracle emits the large model's greedy tokens


def test_the_validation_variant_evaluates_the_validation_split_level_by_level():
    """fsgen_arith_validation: the frontier's calibration documents, never an evaluated (test) one."""
    from _lm_eval_helpers import task_manager

    def leaves(group: str) -> dict[str, list[dict]]:
        (subtasks,) = task_manager().load_task_or_group([group]).values()  # {group: {level task: Task}}
        return {name: list(task.eval_docs) for name, task in subtasks.items()}

    val, test = leaves("fsgen_arith_validation"), leaves("fsgen_arith")
    assert sorted(val) == [f"fsgen_arith_validation_level{n}" for n in arith.LEVELS]
    for n in arith.LEVELS:
        docs = val[f"fsgen_arith_validation_level{n}"]
        assert len(docs) == 100 and {d["level"] for d in docs} == {n}
    val_questions = {d["question"] for docs in val.values() for d in docs}
    assert len(val_questions) == 400
    assert not val_questions & {d["question"] for docs in test.values() for d in docs}
