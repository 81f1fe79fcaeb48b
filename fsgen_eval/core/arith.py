"""``arith``: procedurally generated multi-step arithmetic word problems written the way GSM8K's are.

The generator *is* the specification: a problem is a pure function of ``(seed, split, index)``, so every
split is reproducible bit for bit and needs no download. A problem starts with someone holding a number of
things and applies ``level`` operations (buy more, give away, double/triple, split in halves/thirds); its
solution has one line per step with GSM8K's calculator annotation ``<<a+b=c>>`` and ends in ``#### N``::

    Question: Mia has 23 marbles. She buys 17 more. Then she gives 8 to Omar. How many marbles does Mia have now?
    Answer: Mia buys 17 more, so she has 23 + 17 = <<23+17=40>>40 marbles.
    She gives away 8, so she has 40 - 8 = <<40-8=32>>32 marbles.
    #### 32

Difficulty fields per document: ``level`` (number of operations, 1–4) and ``max_value`` (the largest number
the solution writes), so lm-eval can report one metric per level. Splits: ``train`` for model training,
``validation`` for calibration and held-out loss, ``test`` for evaluation; a train problem whose question
equals a validation or test question is dropped (``split_problems``), so the splits never share a problem.
Pure Python: no torch, no lm-eval.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

LEVELS = (1, 2, 3, 4)  # operations per problem; the task reports one metric per level
SPLITS = ("train", "validation", "test")
SEED = 1234  # the published splits; any other seed gives another, equally valid, problem set
# Problems per level and split. Test: 4 x 300 = 1200 (the issue asks for >= 1000).
PER_LEVEL = {"train": 25_000, "validation": 100, "test": 300}
MAX_VALUE = 999  # no running total above this: at most three digits

NAMES = (
    ("Mia", "she"), ("Omar", "he"), ("Lena", "she"), ("Ravi", "he"), ("Sofia", "she"), ("Tom", "he"),
    ("Aisha", "she"), ("Ben", "he"), ("Chloe", "she"), ("Diego", "he"), ("Emma", "she"), ("Felix", "he"),
    ("Grace", "she"), ("Hugo", "he"), ("Ivy", "she"), ("Jack", "he"), ("Kira", "she"), ("Leo", "he"),
    ("Nora", "she"), ("Owen", "he"), ("Pia", "she"), ("Sam", "he"), ("Tara", "she"), ("Yusuf", "he"),
)
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "coins", "cards", "stamps",
         "beads", "buttons", "candles", "eggs", "flowers", "toys", "rocks", "balloons", "cupcakes", "ribbons")


@dataclass(frozen=True)
class Problem:
    """One document of the task, as lm-eval's ``doc`` sees it."""

    question: str
    answer: str  # the GSM8K-style worked solution ending in "#### N"
    level: int  # number of operations
    max_value: int  # the largest number in the solution (a second difficulty measure)
    split: str
    index: int  # position in its split before de-duplication


def _rng(seed: int, split: str, index: int) -> random.Random:
    # A problem depends on (seed, split, index) only: splits can be generated in any order, or in part.
    digest = hashlib.sha256(f"{seed}/{split}/{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _step(rng: random.Random, x: int) -> tuple[str, int]:
    """One operation applicable to the running total ``x``: (op, operand)."""
    choices = ["add"]
    if x > 3:
        choices.append("sub")
    if x <= 99:
        choices.append("mul")
    if x >= 4 and (x % 2 == 0 or x % 3 == 0):
        choices.append("div")
    op = rng.choice(choices)
    if op == "add":
        return op, rng.randint(2, min(99, MAX_VALUE - x))
    if op == "sub":
        return op, rng.randint(2, min(99, x - 1))
    if op == "mul":
        return op, rng.choice([k for k in (2, 3) if x * k <= MAX_VALUE])
    return op, rng.choice([k for k in (2, 3) if x % k == 0])


def _apply(op: str, x: int, n: int) -> int:
    return {"add": x + n, "sub": x - n, "mul": x * n, "div": x // n}[op]


SIGN = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _sentences(op: str, n: int, name: str, pron: str, item: str, friend: str, first: bool) -> tuple[str, str]:
    """(question sentence, solution clause before the calculation) for one operation."""
    then = "" if first else "Then "
    P = pron.capitalize()
    s = then + pron if not first else P
    if op == "add":
        return f"{s} buys {n} more.", f"{P} buys {n} more"
    if op == "sub":
        return f"{s} gives {n} to {friend}.", f"{P} gives away {n}"
    if op == "mul":
        word = {2: "doubles", 3: "triples"}[n]
        return f"{s} {word} the number of {item}.", f"{P} {word} them"
    part = {2: "half", 3: "a third"}[n]
    return f"{s} keeps {part} of the {item} and gives the rest away.", f"{P} keeps {part}"


def make_problem(seed: int, split: str, index: int, level: int) -> Problem:
    """The problem at ``index`` of ``split`` with ``level`` operations (deterministic)."""
    rng = _rng(seed, split, index)
    (name, pron), item = rng.choice(NAMES), rng.choice(ITEMS)
    friend = rng.choice([n for n, _ in NAMES if n != name])
    x = rng.randint(10, 99)
    question = [f"{name} has {x} {item}."]
    lines, biggest = [], x
    for i in range(level):
        op, n = _step(rng, x)
        y = _apply(op, x, n)
        ask, clause = _sentences(op, n, name, pron, item, friend, first=(i == 0))
        question.append(ask)
        lines.append(f"{clause}, so {pron} has {x} {SIGN[op]} {n} = <<{x}{SIGN[op]}{n}={y}>>{y} {item}.")
        biggest = max(biggest, y, n)
        x = y
    question.append(f"How many {item} does {name} have now?")
    answer = "\n".join(lines) + f"\n#### {x}"
    return Problem(" ".join(question), answer, level, biggest, split, index)


def generate_split(split: str, seed: int = SEED, per_level: int | None = None) -> list[Problem]:
    """Every problem of ``split`` (levels interleaved 1, 2, 3, 4, 1, ...), before de-duplication."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    n = PER_LEVEL[split] if per_level is None else per_level
    return [make_problem(seed, split, i, LEVELS[i % len(LEVELS)]) for i in range(n * len(LEVELS))]


def split_problems(seed: int = SEED, per_level: dict[str, int] | None = None) -> dict[str, list[Problem]]:
    """All three splits; train drops any problem whose question is also a validation or test question,
    and validation any that is also a test question, so no two splits share a problem."""
    sizes = {**PER_LEVEL, **(per_level or {})}
    test = generate_split("test", seed, sizes["test"])
    seen = {p.question for p in test}
    validation = [p for p in generate_split("validation", seed, sizes["validation"]) if p.question not in seen]
    seen |= {p.question for p in validation}
    train = [p for p in generate_split("train", seed, sizes["train"]) if p.question not in seen]
    return {"train": train, "validation": validation, "test": test}


def doc_text(p: Problem) -> str:
    """A document as lm-eval's gsm8k-style prompt + target shows it (``Question: ..\\nAnswer: ..``)."""
    return f"Question: {p.question}\nAnswer: {p.answer}"


def final_answer(answer: str) -> str:
    """The number after ``####`` (GSM8K's convention)."""
    return answer.split("####")[-1].strip()


def write_splits(out_dir: str | Path, seed: int = SEED, per_level: dict[str, int] | None = None) -> dict[str, str]:
    """Write ``<split>.jsonl`` for every split; returns each file's sha256 (same seed -> same hashes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for split, problems in split_problems(seed, per_level).items():
        text = "".join(json.dumps(asdict(p), sort_keys=True) + "\n" for p in problems)
        path = out / f"{split}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        hashes[split] = hashlib.sha256(text.encode()).hexdigest()
    return hashes
