"""Greedy oracle agreement: how often a small model's greedy next token equals a large one's.

Along the large model's own greedy continuation (what FS-GEN's oracle emits), the small model is run
teacher-forced and its argmax compared with the large model's token at every generated position. One minus
the agreement is the oracle's collaboration rate. Plain transformers forward passes and ``generate`` only —
a sanity check of a family that needs no decoding engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fsgen_eval.experiments.zoo import corpus as C

STOP = "Question:"  # lm-eval's gsm8k stop string: what the large model writes after its answer


@dataclass
class Agreement:
    agree: int  # generated positions where the small model's argmax equals the large model's token
    tokens: int  # generated positions compared

    @property
    def rate(self) -> float:
        """Share of compared tokens on which the two models agree."""
        return self.agree / max(1, self.tokens)


def gsm8k_prompts(root: Path, n: int, shots: int) -> list[str]:
    """``n`` GSM8K test questions, each after the first ``shots`` training exemplars (lm-eval's layout)."""
    context = "".join(C.gsm8k_doc(d) + C.FEWSHOT_DELIMITER for d in C.read_jsonl(root / C.GSM8K / "train.jsonl")[:shots])
    tests = C.read_jsonl(root / C.GSM8K / "test.jsonl")[:n]
    return [f"{context}Question: {d['question']}\nAnswer:" for d in tests]


@torch.no_grad()
def greedy_continuations(large: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                         max_new_tokens: int = 128) -> list[tuple[torch.Tensor, int]]:
    """The large model's greedy continuation of each prompt, stopped at lm-eval's gsm8k stop string.

    Returns (prompt + continuation ids ``(1, P + N)``, P) per prompt.
    """
    runs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids  # (1, P)
        out = large.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, stop_strings=[STOP], tokenizer=tokenizer,
                             pad_token_id=tokenizer.eos_token_id)  # (1, P + N)
        runs.append((out, ids.shape[1]))
    return runs


@torch.no_grad()
def agreement_on(small: PreTrainedModel, runs: list[tuple[torch.Tensor, int]]) -> Agreement:
    """Teacher-force ``small`` on each continuation; count where its argmax equals the emitted token."""
    total = Agreement(0, 0)
    for out, p in runs:
        new = out[0, p:]  # (N,)
        # The prediction for generated token i sits at position P - 1 + i of the logits.
        pred = small(out).logits[0, p - 1 : -1].argmax(-1)  # (N,)
        total.agree += int((pred == new).sum())
        total.tokens += len(new)
    return total


def greedy_agreement(small: PreTrainedModel, large: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     prompts: list[str], max_new_tokens: int = 128) -> Agreement:
    """Compare the two models' greedy tokens along the large model's greedy continuation of each prompt."""
    return agreement_on(small, greedy_continuations(large, tokenizer, prompts, max_new_tokens))


def agreement_matrix(models: dict[str, PreTrainedModel], tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                     max_new_tokens: int = 128) -> dict[str, dict[str, Agreement]]:
    """``result[large][small]`` for every pair where ``small`` comes before ``large`` in ``models``."""
    names = list(models)
    result: dict[str, dict[str, Agreement]] = {}
    for j, large in enumerate(names[1:], start=1):
        runs = greedy_continuations(models[large], tokenizer, prompts, max_new_tokens)
        result[large] = {small: agreement_on(models[small], runs) for small in names[:j]}
    return result
