"""Teacher-forced scoring and greedy tails on vLLM: ``prompt_logprobs`` instead of a transformers forward pass.

vLLM returns, per prompt token, the log-probs of the ``K`` most likely tokens at the position before it
(``SamplingParams(prompt_logprobs=K)``) plus the prompt token's own; the position after the last prompt token
comes with the one generated token (``logprobs=K``, ``max_tokens=1``). ``K`` is capped by the engine's
``max_logprobs``. So a sequence of ``T`` tokens gives its ``[T, V]`` next-token log-probs densely where
``K`` covers the whole vocabulary ``V`` — the statistics are then exact (the distribution is renormalised
over the tokenizer's ``V`` ids, as the transformers path cuts the logits to them) — and as a top-``K``
approximation otherwise: ids outside the top ``K`` are ``-inf``, so ``argmax``, ``top1_prob`` and ``margin``
stay exact (``K >= 2``) but the entropy is summed over ``K`` tokens only: a **lower bound** of the true one
(every term ``-p log p`` is non-negative). :attr:`VLLMBackend.exact` says which.

:class:`VLLMBackend` is a scoring-only backend of the engine's seam (``engine.backend.Backend``):
``score(ids, mask, positions) -> [B, T, V]``, ``vocab_size``, ``exact``; the decoding methods (``advance``,
``select``, ``rewind``, ``compact``) refuse in one line, since vLLM keeps its KV cache to itself (System 2's
decoding on vLLM is ``lm_eval --model vllm``'s), and ``scores_only`` tells the engine so. Replay's teacher
forcing is the engine's own ``engine.replay.score_trajectories`` on it (one ``score`` call per batch);
:func:`score_and_complete` decodes the large model's tails with vLLM's generation instead of the engine's
cached loop, then scores through that same function. Replay chooses it with ``--scoring vllm``. ``vllm`` is
imported only when a backend is built.
"""

from __future__ import annotations

import gc
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsgen_eval.engine.replay import Trajectory, finish_index, score_trajectories, trim_at_stop

VLLM_MISSING = ("vLLM is not installed in this Python: install the extra, `pip install 'fsgen-eval[vllm]'` "
                "on a GPU machine, or vLLM's CPU build on a CPU one (docs/vllm.md)")
THREAD_JOIN_S = 30.0  # how long close() waits for each of the engine's threads once the engine is shut down
SCORE_BATCH = 64  # trajectories per vLLM call: vLLM batches within a call, so more per call is faster
APPROXIMATION = ("top-{k} of {v} log-probs per position: argmax, top1_prob and margin exact; entropy summed "
                 "over the top {k} tokens only, a lower bound of the true entropy")


def vllm_available() -> bool:
    """Whether ``import vllm`` can work here (found without importing it: the import takes seconds)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """One line naming the extra, before any model loads, when vLLM is absent."""
    if not vllm_available():
        raise ValueError(VLLM_MISSING)


@dataclass
class ScoringSpec:
    """How a vLLM scorer is built: ``topk`` log-probs per position (0 = the whole vocabulary, exact) and the
    engine's arguments (``max_logprobs``, ``tensor_parallel_size``, ``max_model_len``, ...)."""

    topk: int = 0
    engine_args: dict[str, Any] = field(default_factory=dict)

    def k(self, vocab: int) -> int:
        return vocab if self.topk <= 0 or self.topk >= vocab else self.topk

    def check(self, vocab: int, trace_topk: int = 0) -> None:
        """Refuse (one line) a ``max_logprobs`` below the ``K`` asked for, ``K`` < 2 (no margin), and a trace
        top-K beyond ``K`` (the ids past it would be -inf fillers, not the model's)."""
        k = self.k(vocab)
        if k < 2:
            raise ValueError(f"--scoring-topk {self.topk}: the margin needs the top 2 log-probs at least")
        if trace_topk > k:
            raise ValueError(f"--trace-topk {trace_topk} is more than the {k} log-probs vLLM returns per position")
        cap = self.engine_args.get("max_logprobs")
        if cap is not None and int(cap) != -1 and int(cap) < k:
            need = f"the whole vocabulary ({vocab}) an exact scoring needs" if k == vocab else f"--scoring-topk {k}"
            raise ValueError(f"vLLM max_logprobs={cap} is below {need}: raise max_logprobs (-1 = no cap) or "
                             "lower --scoring-topk (a top-K approximation)")

    def describe(self, vocab: int) -> dict[str, Any]:
        """What the trace and the results record about the scoring."""
        k = self.k(vocab)
        return {"backend": "vllm", "topk": k, "vocab": vocab, "exact": k == vocab,
                **({} if k == vocab else {"approximation": APPROXIMATION.format(k=k, v=vocab)})}


DECODE_REFUSED = ("the vLLM backend only scores (prompt_logprobs): {what} needs a KV cache vLLM keeps to itself; "
                  "decode System 2 on vLLM with `lm_eval --model vllm` (or `fsgen-eval sweep --system2-model vllm`) "
                  "and replay it")


class VLLMBackend:
    """One model on a vLLM engine, scored teacher-forced from ``prompt_logprobs``: the engine seam's scoring
    side. ``exact``: ``K`` covers the vocabulary, so :meth:`score` is the model's whole distribution."""

    fed = 0  # no cache this side of vLLM
    scores_only = True  # the decoding methods refuse: the engine scores every row through score()
    device = torch.device("cpu")  # where score()'s inputs and outputs live (vLLM places the model itself)

    def __init__(self, llm: Any, vocab: int, k: int, sampling: Callable[..., Any],
                 threads: Sequence[threading.Thread] = ()):
        """``llm``: a ``vllm.LLM``; ``vocab``: the tokenizer's V; ``k``: log-probs asked per position;
        ``sampling``: ``vllm.SamplingParams`` (passed in, so the conversion is testable without vLLM);
        ``threads``: the threads this process gained while the engine was built (:meth:`close` waits for them)."""
        self.llm, self.vocab_size, self.k, self.sampling = llm, vocab, k, sampling
        self.threads = list(threads)
        self.exact = k >= vocab

    # ---- the seam's decoding methods: refused, one line each
    def empty(self) -> "VLLMBackend":
        return self  # stateless: nothing cached

    def advance(self, tokens: Tensor, mask: Tensor, positions: Tensor, keep: int) -> Tensor:
        raise NotImplementedError(DECODE_REFUSED.format(what="advance (cached decoding)"))

    def select(self, rows: Tensor) -> None:
        raise NotImplementedError(DECODE_REFUSED.format(what="select (keeping cache rows)"))

    def fork(self, rows: Tensor) -> "VLLMBackend":
        raise NotImplementedError(DECODE_REFUSED.format(what="fork (copying cache rows)"))

    def rewind(self, length: int) -> None:
        raise NotImplementedError(DECODE_REFUSED.format(what="rewind (dropping cached columns)"))

    def compactable(self) -> bool:
        return False

    def compact(self, index: Tensor) -> None:
        raise NotImplementedError(DECODE_REFUSED.format(what="compact (gathering cached columns)"))

    @classmethod
    def load(cls, model: str, vocab: int, spec: ScoringSpec, dtype: str = "float32") -> VLLMBackend:
        """Build the engine (``max_logprobs`` defaults to the ``K`` needed); refuses a lower cap first."""
        require_vllm()
        spec.check(vocab)
        from vllm import LLM, SamplingParams

        k = spec.k(vocab)
        args = {"dtype": dtype, "enforce_eager": True, "max_logprobs": k, **spec.engine_args}
        before = set(threading.enumerate())
        llm = LLM(model=model, **args)
        return cls(llm, vocab, k, SamplingParams, [t for t in threading.enumerate() if t not in before])

    def close(self) -> None:
        """Release the engine, so that this process can build another one and exit with none of its threads.

        vLLM's engine client runs daemon threads in this process (the loop reading the engine's outputs, the
        monitor of its processes). The engine core's ``shutdown`` stops the engine's processes and signals those
        threads but returns before they end. A daemon thread still running when the interpreter finalizes is
        ended by ``pthread_exit`` as it asks for the GIL, which aborts the process where a C++ frame that must
        not unwind lies on its stack (``terminate called without an active exception``, the mechanism of PyTorch
        issue 38228). So, in order: ``shutdown``; wait for the threads the engine started here; then the release
        vLLM's maintainers give (vllm-project/vllm#6544): drop the ``LLM``, ``gc.collect()``,
        ``destroy_model_parallel()``, ``destroy_distributed_environment()`` (no-ops unless the engine ran in
        this process, e.g. ``VLLM_ENABLE_V1_MULTIPROCESSING=0``). Whether this is what once aborted a finished
        ``replay --scoring vllm`` is not established (docs/vllm.md, "Engine teardown")."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm, core
        for t in self.threads:
            t.join(THREAD_JOIN_S)
        alive = [t.name for t in self.threads if t.is_alive()]
        self.threads = []
        gc.collect()
        from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
        if alive:  # said, never silent: these may abort the interpreter's exit
            warnings.warn(f"vLLM's threads {alive} still run {THREAD_JOIN_S} s after the engine's shutdown",
                          RuntimeWarning, stacklevel=2)

    def _params(self, max_tokens: int = 1, **kw: Any) -> Any:
        # raw log-probs of the model (temperature 1); detokenize=False: no text for K ids per position
        return self.sampling(temperature=0.0, max_tokens=max_tokens, detokenize=False, **kw)

    def score_rows(self, seqs: Sequence[Sequence[int]], keep: Sequence[int] | None = None) -> list[Tensor]:
        """Per sequence ``[n, V]`` log-probs of the next token at its last ``n`` = ``keep[b]`` positions (all
        of them by default), the last one predicting the token after the sequence."""
        outs = self.llm.generate([{"prompt_token_ids": list(s)} for s in seqs],
                                 self._params(1, prompt_logprobs=self.k, logprobs=self.k), use_tqdm=False)
        rows = []
        for b, (s, out) in enumerate(zip(seqs, outs, strict=True)):
            n = len(s) if keep is None else keep[b]
            # prompt_logprobs[t] is the distribution at position t - 1 (entry 0 is None); the generated token's
            # logprobs[0] is the one at the last position
            dists = list(out.prompt_logprobs[len(s) - n + 1:]) + [out.outputs[0].logprobs[0]] if n else []
            rows.append(self._dense(dists))
        return rows

    def _dense(self, dists: Sequence[dict[int, Any]]) -> Tensor:
        """``[n, V]`` from ``{token_id: Logprob}`` dicts: filled from the top ``K``, ``-inf`` elsewhere."""
        out = torch.full((len(dists), self.vocab_size), -math.inf, dtype=torch.float32)
        for t, d in enumerate(dists):
            ids = [i for i in d if i < self.vocab_size]  # a model's padded embedding rows are no token
            out[t, ids] = torch.tensor([d[i].logprob for i in ids], dtype=torch.float32)
        if self.exact:  # over the tokenizer's ids, as the transformers path cuts the logits to them
            out = out.log_softmax(-1)
        return out

    def score(self, ids: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
              keep: int | None = None) -> Tensor:
        """The seam's scoring: ``[B, keep, V]`` next-token log-probs at the last ``keep`` columns (``None``: all
        ``T``) of ``ids`` ``[B, T]`` (left-padded where ``mask`` ``[B, T]`` is 0; pad positions ``-inf``; no
        ``mask``: every column scored, right-padded rows' pads only feeding their own outputs). ``positions``
        are vLLM's own (0 at each row's first real token), so they are not needed."""
        mask = torch.ones_like(ids) if mask is None else mask
        keep = ids.shape[1] if keep is None else keep
        seqs = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
        kept = mask[:, ids.shape[1] - keep:].bool()  # [B, keep]: the kept columns holding a token
        # only those are made dense (the costly part: V Python log-prob objects per position); with left or no
        # padding they are each row's last tokens
        out = torch.full((ids.shape[0], keep, self.vocab_size), -math.inf, dtype=torch.float32)
        for b, dense in enumerate(self.score_rows(seqs, kept.sum(-1).tolist())):
            out[b, kept[b]] = dense
        return out

    def greedy(self, prompts: Sequence[Sequence[int]], max_tokens: Sequence[int],
               stops: Sequence[Sequence[str]] = (), eos: Sequence[int] = ()) -> list[list[int]]:
        """Greedy continuations (at most ``max_tokens[b]``; vLLM stops early at an EOS id or once a stop
        string appears, keeping it), in one batch."""
        todo = [b for b, m in enumerate(max_tokens) if m > 0]
        params = [self.sampling(temperature=0.0, max_tokens=int(max_tokens[b]), stop=list(stops[b]) if stops else None,
                                 include_stop_str_in_output=True, stop_token_ids=list(eos), ignore_eos=False)
                  for b in todo]
        outs = self.llm.generate([{"prompt_token_ids": list(prompts[b])} for b in todo], params, use_tqdm=False) \
            if todo else []
        new: list[list[int]] = [[] for _ in prompts]
        for b, out in zip(todo, outs):
            new[b] = list(out.outputs[0].token_ids)
        return new


# ------------------------------------------------------------------------------------------ replay steps
def complete_all(scorer: VLLMBackend, given: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
                 tokenizer: Any, eos: Sequence[int], stops: Sequence[tuple[str, ...]], max_new: Sequence[int],
                 lookahead: int = 0) -> list[Trajectory]:
    """``engine.replay.complete`` of every generation with the large model on vLLM: greedy tokens after the
    given ones until the engine's finishing rule fires (vLLM's stop strings and EOS end a continuation early;
    the engine's own :func:`finish_index` then decides where it ended), then ``lookahead`` more."""
    tokens, fins = [], []
    for g, st, m in zip(given, stops, max_new):
        fin = finish_index(tokenizer, list(g), eos, st, m)
        tokens.append(list(g[:fin]) if fin is not None else list(g))
        fins.append(fin)
    need = [0 if f is not None else m - len(t) for t, f, m in zip(tokens, fins, max_new)]
    for b, new in enumerate(scorer.greedy([list(p) + t for p, t in zip(prompts, tokens)], need, stops, eos)):
        tokens[b] += new
    out, extra = [], []
    for b, t in enumerate(tokens):
        fin = finish_index(tokenizer, t, eos, stops[b], max_new[b]) or len(t)
        del t[fin:]  # vLLM may run a token or two past where the engine's window saw the stop string
        extra.append(min(lookahead, max_new[b] - fin))
        out.append(Trajectory(list(prompts[b]), t, len(trim_at_stop(tokenizer, t[:fin], stops[b])[0]), fin,
                              max_new[b]))
    for b, new in enumerate(scorer.greedy([list(p) + t.tokens for p, t in zip(prompts, out)], extra)):
        out[b].tokens += new
    return out


def score_and_complete(scorer: VLLMBackend, given: Sequence[Sequence[int]], prompts: Sequence[Sequence[int]],
                       tokenizer: Any, eos: Sequence[int], stops: Sequence[tuple[str, ...]], max_new: Sequence[int],
                       lookahead: int = 0, topk: int = 0) -> tuple[list[Trajectory], list[dict[str, np.ndarray]]]:
    """``engine.replay.score_and_complete`` on vLLM: every trajectory completed, and the large model's
    statistics at the tokens the trace keeps (the given ones, or more where the trimmed trace runs into the
    tail)."""
    trajs = complete_all(scorer, given, prompts, tokenizer, eos, stops, max_new, lookahead)
    keep = [Trajectory(t.prompt, t.tokens[: max(t.emitted, len(g))], 0, 0, t.max_new_tokens)
            for t, g in zip(trajs, given)]
    # pad: any token id (right pads only feed their own, unused, outputs)
    return trajs, score_trajectories(scorer, keep, 0, SCORE_BATCH, topk)
