"""Training and held-out text, formatted exactly as lm-eval's standard tasks present their documents.

Formats (lm-eval 0.4 task YAMLs; few-shot examples are joined by ``fewshot_delimiter`` "\\n\\n"):

- gsm8k: ``"Question: {question}\\nAnswer:"`` + ``" "`` + ``"{answer}"`` (answer with its ``<<a=b>>``
  calculator marks and ``#### n`` line, as lm-eval shows few-shot targets);
- mmlu: the subject's description ``"The following are multiple choice questions (with answers) about
  {subject}.\\n\\n"``, then ``"{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:"`` + ``" B"``;
- mbpp: ``"You are an expert Python programmer, and here is your task: {text} Your code should pass these
  tests:\\n\\n{t0}\\n{t1}\\n{t2}\\n[BEGIN]\\n"`` + ``"{code}\\n[DONE]"`` (target delimiter "").

Documents are grouped into *episodes* of a few documents of one task, joined by "\\n\\n" like a few-shot
prompt; episodes are separated by the EOS token. Only training splits are trained on (gsm8k train, mbpp
train/validation/prompt, mmlu dev/validation); gsm8k test is read only for the held-out loss.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

GSM8K = Path("openai/gsm8k/main")
MBPP = Path("google-research-datasets/mbpp/full")
MMLU = Path("cais/mmlu")

# (dataset folder, split) pairs the training corpus is built from — never a test split.
TRAIN_SPLITS: tuple[tuple[Path, str], ...] = (
    (GSM8K, "train"),
    (MBPP, "train"),
    (MBPP, "validation"),
    (MBPP, "prompt"),
    (MMLU, "dev"),
    (MMLU, "validation"),
)
HELDOUT_SPLIT: tuple[Path, str] = (GSM8K, "test")

FEWSHOT_DELIMITER = "\n\n"
LETTERS = "ABCD"


@dataclass(frozen=True)
class Episode:
    """A few documents of one task joined like a few-shot prompt; ``task`` names where they came from."""

    task: str
    text: str


def resolve_datasets_dir(arg: str | None) -> Path:
    """The datasets folder from ``--datasets-dir`` or ``FSGEN_DATASETS_DIR``; raise if absent or incomplete."""
    raw = arg or os.environ.get("FSGEN_DATASETS_DIR")
    if not raw:
        raise ValueError("no datasets folder: pass --datasets-dir or set FSGEN_DATASETS_DIR")
    root = Path(raw)
    if not root.is_dir():
        raise FileNotFoundError(f"datasets folder {root} does not exist")
    needed = [root / GSM8K / "train.jsonl", root / GSM8K / "test.jsonl"]
    needed += [root / MBPP / f"{split}.jsonl" for split in ("train", "validation", "prompt")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"datasets folder {root} lacks {missing[0]}")
    if not mmlu_subjects(root):
        raise FileNotFoundError(f"datasets folder {root} has no MMLU subject under {root / MMLU}")
    return root


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mmlu_subjects(root: Path) -> list[str]:
    """Subjects (folders with a dev.jsonl), sorted so the corpus does not depend on directory order."""
    base = root / MMLU
    return sorted(p.name for p in base.iterdir() if (p / "dev.jsonl").is_file()) if base.is_dir() else []


def gsm8k_doc(doc: dict) -> str:
    """A GSM8K training document as the text the models learn from."""
    return f"Question: {doc['question']}\nAnswer: {doc['answer']}"


def mmlu_description(subject: str) -> str:
    """MMLU's per-subject header line (as lm-eval's prompt starts)."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_doc(doc: dict) -> str:
    """An MMLU question with its lettered choices and answer, as lm-eval formats it."""
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, doc["choices"]))
    return f"{doc['question'].strip()}{options}\nAnswer: {LETTERS[doc['answer']]}"


def mbpp_doc(doc: dict) -> str:
    """An MBPP problem with three tests and its solution, in lm-eval's prompt format."""
    tests = "\n".join(doc["test_list"][:3])
    return (
        f"You are an expert Python programmer, and here is your task: {doc['text']} "
        f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n{doc['code']}\n[DONE]"
    )


def _episodes(task: str, docs: list[str], per_episode: int, rng: random.Random, prefix: str = "") -> list[Episode]:
    """Shuffle ``docs`` and join every ``per_episode`` of them with the few-shot delimiter."""
    docs = list(docs)
    rng.shuffle(docs)
    chunks = [docs[i : i + per_episode] for i in range(0, len(docs), per_episode)]
    return [Episode(task, prefix + FEWSHOT_DELIMITER.join(chunk)) for chunk in chunks]


def training_episodes(root: Path, seed: int = 0, per_episode: int = 6) -> list[Episode]:
    """Every training-split document, grouped into shuffled few-shot-like episodes (deterministic in ``seed``)."""
    rng = random.Random(seed)
    gsm = [gsm8k_doc(d) for d in read_jsonl(root / GSM8K / "train.jsonl")]
    mbpp = [mbpp_doc(d) for split in ("train", "validation", "prompt") for d in read_jsonl(root / MBPP / f"{split}.jsonl")]
    episodes = _episodes("gsm8k", gsm, per_episode, rng) + _episodes("mbpp", mbpp, per_episode, rng)
    for subject in mmlu_subjects(root):
        docs = [mmlu_doc(d) for split in ("dev", "validation") for d in _read_optional(root / MMLU / subject / f"{split}.jsonl")]
        episodes += _episodes(f"mmlu_{subject}", docs, per_episode, rng, prefix=mmlu_description(subject))
    rng.shuffle(episodes)
    return episodes


def heldout_episodes(root: Path, per_episode: int = 6) -> list[Episode]:
    """GSM8K test, in file order, as few-shot-like episodes: evaluation only, never trained on."""
    docs = [gsm8k_doc(d) for d in read_jsonl(root / GSM8K / "test.jsonl")]
    chunks = [docs[i : i + per_episode] for i in range(0, len(docs), per_episode)]
    return [Episode("gsm8k_test", FEWSHOT_DELIMITER.join(chunk)) for chunk in chunks]


def _read_optional(path: Path) -> list[dict]:
    # Some subjects may lack a validation split in a trimmed copy; dev alone still counts.
    return read_jsonl(path) if path.is_file() else []


def arith_training_episodes(seed: int = 0, per_episode: int = 4) -> list[Episode]:
    """The arith task's train split (fsgen_eval.core.arith), shuffled into few-shot-like episodes."""
    from fsgen_eval.core import arith

    docs = [arith.doc_text(p) for p in arith.split_problems()["train"]]
    return _episodes("arith", docs, per_episode, random.Random(seed))


def arith_heldout_episodes(per_episode: int = 4) -> list[Episode]:
    """The arith validation split, in order, as episodes: never trained on (held-out loss only)."""
    from fsgen_eval.core import arith

    docs = [arith.doc_text(p) for p in arith.split_problems()["validation"]]
    chunks = [docs[i : i + per_episode] for i in range(0, len(docs), per_episode)]
    return [Episode("arith_validation", FEWSHOT_DELIMITER.join(chunk)) for chunk in chunks]
