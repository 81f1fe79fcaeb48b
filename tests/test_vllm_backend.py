"""vLLM's scoring-only backend without vLLM: the conversion of vLLM's ``prompt_logprobs`` to the seam's
``[B, T, V]`` log-probs, checked against a bigram logits table fed through an object with ``LLM.generate``'s
output shape; the decoding methods' refusals; and the replay's re-tokenization of a generated text that
follows a prompt ending in whitespace (MBPP's ``[BEGIN]\\n``), the cause of the MBPP mismatch of issue 22.

The real engine (vLLM's CPU build, tensor parallelism) is tests/test_vllm.py's, in scripts/ci_vllm.sh's venv.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from fsgen_eval.core.sampling import stats
from fsgen_eval.engine.backend import Backend
from fsgen_eval.engine.backends.vllm_backend import SCORE_BATCH, ScoringSpec, VLLMBackend
from fsgen_eval.engine.replay import Trajectory
from fsgen_eval.engine.replay import score_trajectories as engine_scores
from fsgen_eval.lm_eval.samples import generated_ids


def score_trajectories(be: VLLMBackend, trajs: list, topk: int = 0, batch_size: int = SCORE_BATCH) -> list:
    """Replay's teacher forcing on vLLM: the engine's own function, rows of any id padded on the right."""
    return engine_scores(be, trajs, 0, batch_size, topk)


V = 7
TABLE = torch.randn(V, V, generator=torch.Generator().manual_seed(0)) * 3  # next-token logits after a token


class BigramLLM:
    """``LLM.generate`` of a bigram model: per prompt, ``prompt_logprobs`` (``None`` first, then the top
    ``K`` of the distribution before each token, as ``{id: Logprob}``) and one generated token's."""

    def __init__(self, k: int):
        self.k, self.calls = k, 0

    def top(self, prev: int) -> dict[int, SimpleNamespace]:
        lp = TABLE[prev].log_softmax(-1)
        vals, ids = lp.topk(self.k)
        return {int(i): SimpleNamespace(logprob=float(v)) for v, i in zip(vals, ids)}

    def generate(self, prompts: list[dict], params: object, use_tqdm: bool = False) -> list[SimpleNamespace]:
        self.calls += 1
        out = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            plp = [None] + [self.top(ids[t - 1]) for t in range(1, len(ids))]
            out.append(SimpleNamespace(prompt_logprobs=plp, outputs=[SimpleNamespace(logprobs=[self.top(ids[-1])])]))
        return out


def truth(ids: list[int]) -> torch.Tensor:
    """``[len(ids), V]``: the bigram's next-token log-probs at every position of ``ids``."""
    return TABLE[torch.tensor(ids)].log_softmax(-1)


def test_score_is_the_models_distribution_at_every_real_column_of_a_left_padded_batch():
    be = VLLMBackend(BigramLLM(V), V, V, dict)
    assert isinstance(be, Backend) and be.exact
    rows = [[3, 1, 4, 1, 5], [2, 6, 0]]
    ids = torch.tensor([rows[0], [0, 0] + rows[1]])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    out = be.score(ids, mask, mask.cumsum(-1) - 1)  # [B, T, V]
    assert out.shape == (2, 5, V)
    torch.testing.assert_close(out[0], truth(rows[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, 2:], truth(rows[1]), atol=1e-6, rtol=0)
    assert torch.isinf(out[1, :2]).all()  # padding: no distribution
    torch.testing.assert_close(be.score(ids, mask, None, keep=2), out[:, 3:])  # the seam's last-columns-only
    with pytest.raises(NotImplementedError):
        be.fork(torch.tensor([0]))  # vLLM keeps its own cache: no rows to copy


def test_score_trajectories_equals_the_statistics_of_the_true_distribution():
    be = VLLMBackend(BigramLLM(V), V, V, dict)
    trajs = [Trajectory([3, 1], [4, 1, 5], 3, 3, 8), Trajectory([2], [6], 1, 1, 8)]
    got = score_trajectories(be, trajs, topk=2)
    assert be.llm.calls == 1  # one vLLM call for the batch, rows of different lengths padded on the right
    assert [g["argmax"].tolist() for g in score_trajectories(be, trajs, batch_size=1)] == [g["argmax"].tolist()
                                                                                          for g in got]
    for t, g in zip(trajs, got):
        logp = truth(t.prompt + t.tokens[:-1])[-len(t.tokens):]  # the positions predicting each token
        ent, top1, margin = stats(logp)
        assert g["argmax"].tolist() == logp.argmax(-1).tolist()
        for k, v in (("entropy", ent), ("top1_prob", top1), ("margin", margin)):
            torch.testing.assert_close(torch.from_numpy(g[k]), v, atol=1e-6, rtol=0)
        assert g["topk_ids"].shape == (len(t.tokens), 2)


def test_top_k_keeps_argmax_top1_and_margin_and_bounds_the_entropy_from_below():
    k = 3
    be = VLLMBackend(BigramLLM(k), V, k, dict)
    assert not be.exact
    trajs = [Trajectory([3, 1, 4], [1, 5, 9 % V, 2], 4, 4, 8)]
    (got,) = score_trajectories(be, trajs)
    logp = truth(trajs[0].prompt + trajs[0].tokens[:-1])[-4:]
    ent, top1, margin = stats(logp)
    assert got["argmax"].tolist() == logp.argmax(-1).tolist()
    torch.testing.assert_close(torch.from_numpy(got["top1_prob"]), top1, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.from_numpy(got["margin"]), margin, atol=1e-6, rtol=0)
    assert (torch.from_numpy(got["entropy"]) < ent).all()  # K < V tokens with mass: strictly below
    with pytest.raises(ValueError, match="--trace-topk 4 is more than the 3 log-probs"):
        ScoringSpec(k).check(V, trace_topk=4)  # before any engine starts


@pytest.mark.parametrize("call", [
    lambda b: b.advance(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), torch.zeros(1, 2), 1),
    lambda b: b.select(torch.tensor([0])),
    lambda b: b.rewind(0),
    lambda b: b.compact(torch.zeros(1, 1, dtype=torch.long)),
])
def test_decoding_methods_are_refused_in_one_line_naming_the_way_to_decode_on_vllm(call):
    be = VLLMBackend(BigramLLM(V), V, V, dict)
    with pytest.raises(NotImplementedError) as e:
        call(be)
    msg = str(e.value)
    assert "only scores" in msg and "lm_eval --model vllm" in msg and "\n" not in msg
    assert not be.compactable() and be.llm.calls == 0


MBPP_PROMPT = ("You are an expert Python programmer, and here is your task: Write a function to add one. "
               "Your code should pass these tests:\n\nassert f(1) == 2\nassert f(2) == 3\nassert f(3) == 4\n[BEGIN]\n")


@pytest.mark.parametrize("text", ["def f(x):\n    return x + 1\n", "\ndef f(x): return x+1", " x"])
def test_generated_text_after_a_prompt_ending_in_whitespace_keeps_its_own_first_token(text):
    """lm-eval's MBPP prompt ends in "[BEGIN]\\n": the generation's tokens follow the newline's token, so
    re-tokenizing must not move the newline into them (HFLM's loglikelihood rule does, which made every MBPP
    generation of a vLLM run differ from position 0)."""
    tok = AutoTokenizer.from_pretrained(Path(__file__).resolve().parents[1] / "models" / "micro" / "tokenizer")
    ctx = tok(MBPP_PROMPT)["input_ids"]
    emitted = tok(text, add_special_tokens=False)["input_ids"]  # a backend that decoded the text token by token
    got = generated_ids(tok, MBPP_PROMPT, text)
    assert tok.decode(got) == text and got == emitted
    assert tok(MBPP_PROMPT + text)["input_ids"][: len(ctx)] == ctx or text.startswith("\n")  # the case it covers
