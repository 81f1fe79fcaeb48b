"""One batched, KV-cached collaborative decoding loop, and teacher-forced scoring with the same methods.

Layout of a batch: rows are left-padded to a common length and advance in lockstep, one column per emitted
token (finished rows receive pad tokens). Each model keeps a ``DynamicCache`` and a count ``fed`` of the
sequence positions already in it. System 1 is fed every token; the large model (and ``small_base``) only
when a router asks for System 2 — it then catches up on every skipped token in one forward pass. Because
rows advance in lockstep, ``fed`` is the same for every row and no cache ever needs per-row surgery.

The loop returns tokens and traces as data; it never prints and never writes files.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

from . import schema
from .methods import CONTRASTIVE_VARIANTS, METHODS, Method, get_method
from .pair import ModelPair
from .routers import Router, get_router
from .sampling import pick, stats


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DecodeConfig:
    method: str = "oracle"  # key of methods.METHODS
    router: str = "always"  # key of routers.ROUTERS
    threshold: float | None = None  # the router's threshold (max_prob, margin, entropy)
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters, defaults filled in
    max_new_tokens: int = 64  # upper bound on emitted tokens per row
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    top_k: int = 0  # 0 = no top-k filter
    stop: tuple[str, ...] = ()  # stop strings, checked on the decoded generation
    seed: int | None = None  # seeds the sampling generator
    record_trace: bool = True  # False: keep only what the summary needs (no uncertainty statistics)

    @property
    def method_spec(self) -> Method:
        return METHODS[self.method]

    @property
    def router_spec(self) -> Router:
        return get_router(self.router)


def make_config(
    method: str = "oracle",
    router: str = "always",
    threshold: float | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop: str | list[str] | tuple[str, ...] | None = None,
    seed: int | None = None,
    has_small_base: bool = False,
    record_trace: bool = True,
    **method_params: Any,
) -> DecodeConfig:
    """Validate every setting and return a ``DecodeConfig``; ``ValueError`` naming the problem otherwise.

    Runs before any model does, so bad input costs nothing.
    """
    spec = get_method(method)
    rt = get_router(router)
    unknown = sorted(set(method_params) - set(spec.defaults))
    if unknown:
        takes = ", ".join(spec.defaults) or "no parameters"
        raise ValueError(f"method {method!r} does not use parameter(s) {', '.join(unknown)} (it takes: {takes})")
    params = {**spec.defaults, **{k: v for k, v in method_params.items()}}
    _check_params(method, params)
    if spec.needs_small_base and not has_small_base:
        raise ValueError(f"method {method!r} needs small_base (the untuned base of the small model)")
    if rt.needs_threshold and threshold is None:
        raise ValueError(f"router {router!r} needs a threshold")
    if threshold is not None and not rt.needs_threshold:
        raise ValueError(f"router {router!r} takes no threshold (routers that do: max_prob, margin, entropy)")
    if threshold is not None and not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    if temperature is None or temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if any(not s for s in stops):
        raise ValueError("stop strings must be non-empty")
    return DecodeConfig(method, router, None if threshold is None else float(threshold), params,
                        int(max_new_tokens), float(temperature), float(top_p), int(top_k), stops, seed, record_trace)


def _check_params(method: str, params: dict[str, Any]) -> None:
    if method == "speculative" and (int(params["num_draft"]) != params["num_draft"] or params["num_draft"] < 1):
        raise ValueError(f"num_draft must be an integer >= 1, got {params['num_draft']!r}")
    if method == "contrastive":
        if not 0 <= params["alpha"] <= 1:
            raise ValueError(f"contrastive alpha (plausibility cut-off) must be in [0, 1], got {params['alpha']!r}")
        if params["beta"] < 0:
            raise ValueError(f"contrastive beta must be >= 0, got {params['beta']!r}")
        if params["contrastive_variant"] not in CONTRASTIVE_VARIANTS:
            raise ValueError(f"unknown contrastive_variant {params['contrastive_variant']!r}; "
                             f"valid: {', '.join(CONTRASTIVE_VARIANTS)}")


# ------------------------------------------------------------------------------------------ model side
def _crop(cache: DynamicCache, fed: int, length: int) -> None:
    """Cut ``cache`` from ``fed`` to ``length`` positions with the public ``crop``.

    A negative argument removes that many tokens in transformers 4.x and 5.x alike (5.x reads a positive
    one as tokens to remove and refuses it; 4.x as the length to keep), so only the negative form is used.
    """
    cache.crop(length - fed)


@dataclass
class Runner:
    """One model's side of the loop: its KV cache and how many sequence positions it has seen."""

    model: PreTrainedModel
    cache: DynamicCache
    cache_kw: str  # forward()'s name for the cache argument
    keep_kw: str  # forward()'s name for "compute logits of the last n positions only"
    device: torch.device  # where the model's inputs go
    fed: int = 0  # sequence positions already in the cache

    @classmethod
    def new(cls, model: PreTrainedModel) -> "Runner":
        # transformers 5 renamed `past_key_values` to `cache`; ask the signature which one it takes
        params = inspect.signature(model.forward).parameters
        return cls(model, DynamicCache(config=model.config),
                   "cache" if "cache" in params else "past_key_values",
                   "logits_to_keep" if "logits_to_keep" in params else "num_logits_to_keep",
                   model.get_input_embeddings().weight.device)

    def advance(self, seq: "Sequences", keep: int, vocab: int) -> Tensor:
        """Feed every position not yet seen; return log-probs ``[B, keep, vocab]`` of the last ``keep``."""
        dev = self.device
        out = self.model(
            input_ids=seq.tokens[:, self.fed:].to(dev),
            attention_mask=seq.mask.to(dev),
            position_ids=seq.positions[:, self.fed:].to(dev),
            use_cache=True,
            **{self.cache_kw: self.cache, self.keep_kw: keep},
        )
        self.fed = seq.length
        # cut to the tokenizer's vocabulary: padded embedding rows are not tokens
        return out.logits[:, -keep:, :vocab].float().log_softmax(-1).to(seq.tokens.device)

    def select(self, keep: Tensor) -> None:
        """Keep only the batch rows ``keep`` of the cache (public ``batch_select_indices``)."""
        if self.fed:
            self.cache.batch_select_indices(keep.to(self.device))

    def rewind(self, length: int) -> None:
        if self.fed > length:
            _crop(self.cache, self.fed, length)
            self.fed = length


# ------------------------------------------------------------------------------------------ sequences
def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids ``[B, T]`` that count only real tokens, so left padding does not shift positions."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


@dataclass
class Sequences:
    """Token columns of a left-padded batch (prompt then generation) and who has finished."""

    tokens: Tensor  # (B, L) int64
    mask: Tensor  # (B, L) int64, 0 on left padding
    positions: Tensor  # (B, L) int64
    prompt_len: int
    finished: Tensor  # (B,) bool
    lengths: Tensor  # (B,) int64 tokens generated before finishing (EOS included)

    @classmethod
    def from_prompt(cls, input_ids: Tensor, attention_mask: Tensor) -> "Sequences":
        b, t = input_ids.shape
        return cls(input_ids.long(), attention_mask.long(), positions_from_mask(attention_mask), t,
                   torch.zeros(b, dtype=torch.bool, device=input_ids.device),
                   torch.zeros(b, dtype=torch.long, device=input_ids.device))

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    @property
    def generated(self) -> int:
        return self.length - self.prompt_len

    def push(self, tok: Tensor) -> None:
        """Append one column ``[B]`` (no finishing logic: used for speculative drafts)."""
        self.tokens = torch.cat([self.tokens, tok[:, None]], 1)
        self.mask = torch.cat([self.mask, torch.ones_like(tok)[:, None]], 1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], 1)

    def truncate(self, length: int) -> None:
        self.tokens, self.mask, self.positions = (x[:, :length] for x in (self.tokens, self.mask, self.positions))

    def select(self, keep: Tensor) -> None:
        """Keep only the batch rows ``keep``."""
        for name in ("tokens", "mask", "positions", "finished", "lengths"):
            setattr(self, name, getattr(self, name)[keep])


class Finisher:
    """Emits columns: pads finished rows, counts lengths, detects EOS and stop strings."""

    def __init__(self, pair: ModelPair, stop: tuple[str, ...]):
        self.tokenizer = pair.tokenizer
        self.pad = pair.pad_token_id
        self.eos = torch.tensor(pair.eos_token_ids(), dtype=torch.long, device=pair.device)
        self.stop = stop
        # a stop string of n bytes spans at most n byte-level tokens; one more covers a split character
        self.window = max((len(s.encode()) for s in stop), default=0) + 1

    def emit(self, seq: Sequences, tok: Tensor) -> Tensor:
        """Append ``tok`` ``[B]`` (pad where finished); return the column actually appended."""
        live = ~seq.finished
        tok = torch.where(live, tok, torch.full_like(tok, self.pad))
        seq.push(tok)
        seq.lengths += live.long()
        done = live & torch.isin(tok, self.eos)
        if self.stop:
            done |= live & self._stopped(seq, live & ~done)
        seq.finished |= done
        return tok

    def _stopped(self, seq: Sequences, rows: Tensor) -> Tensor:
        out = torch.zeros_like(rows)
        w = min(self.window, seq.generated)
        for r in rows.nonzero().flatten().tolist():
            text = self.tokenizer.decode(seq.tokens[r, -w:].tolist(), skip_special_tokens=True)
            out[r] = any(s in text for s in self.stop)
        return out


# ------------------------------------------------------------------------------------------- traces
class Recorder:
    """Per-token trace columns ``[B0]`` over the original batch, kept on the device and moved to the CPU
    once per batch. ``rows`` maps the live batch (finished rows are dropped) to original rows."""

    def __init__(self, enabled: bool, rows: Tensor):
        self.enabled = enabled
        self.rows = rows  # (b,) original row of each live row
        self.batch = len(rows)  # B0
        self.cols: dict[str, list[Tensor]] = {k: [] for k in schema.TOKEN_FIELDS}

    def _put(self, field: str, v: Tensor) -> None:
        if len(v) < self.batch:  # dropped rows get a filler, cut off later by their length
            v = torch.zeros(self.batch, dtype=v.dtype, device=v.device).index_copy(0, self.rows, v)
        self.cols[field].append(v)

    def add(self, token: Tensor, source: Tensor, called: Tensor, handoff: Tensor, s1: Tensor,
            s2: Tensor | None, accepted: Tensor | None = None) -> None:
        """Record one column; ``s1``/``s2`` are log-probs ``[b, V]`` (s2 only meaningful where ``called``)."""
        for k, v in (("token_id", token), ("source", source), ("llm_called", called), ("handoff", handoff)):
            self._put(k, v)
        self._put("accepted", accepted if accepted is not None else torch.full_like(token, -1))
        if not self.enabled:
            return
        for k, v in zip(("s1_entropy", "s1_top1_prob", "s1_margin"), stats(s1)):
            self._put(k, v)
        nan = torch.full(token.shape, math.nan, device=token.device)
        s2_stats = stats(s2) if s2 is not None else (nan, nan, nan)
        for k, v in zip(("s2_entropy", "s2_top1_prob", "s2_margin"), s2_stats):
            self._put(k, torch.where(called, v, nan))

    def finish(self, batch: int, device: torch.device) -> dict[str, np.ndarray]:
        """Stack to ``[B, N]`` numpy arrays with the schema's dtypes (one device→CPU copy per field)."""
        out = {}
        n = len(self.cols["token_id"])
        for k in schema.TOKEN_FIELDS:
            col = self.cols[k]
            if col:
                arr = torch.stack(col, 1).cpu().numpy()
            else:
                arr = np.full((batch, n), np.nan if schema.FIELD_DTYPES[k] is np.float32 else 0)
            out[k] = arr.astype(schema.FIELD_DTYPES[k])
        return out


@dataclass
class RowResult:
    token_ids: list[int]  # generated tokens (EOS included if emitted), trimmed at a stop string
    text: str  # decoded generation (special tokens skipped), trimmed at the stop string
    trace: schema.Trace  # per-token arrays, one entry per token_ids entry
    counters: dict[str, int]  # drafted_tokens, accepted_tokens, verification_steps


def _trim_at_stop(tokenizer, ids: list[int], stop: tuple[str, ...]) -> tuple[list[int], str]:
    """Cut the text before the earliest stop string, and the tokens to the fewest that still spell it."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s in text]
    if not cuts:
        return ids, text
    text = text[: min(cuts)]
    k = len(ids)
    while k > 0 and tokenizer.decode(ids[: k - 1], skip_special_tokens=True).startswith(text):
        k -= 1
    return ids[:k], text


def _rows(pair: ModelPair, st: "DecodeState", cfg: DecodeConfig) -> list[RowResult]:
    st.lengths[st.rows] = st.seq.lengths
    trace = st.rec.finish(st.rec.batch, st.seq.tokens.device)
    gen = trace["token_id"].tolist()  # the emitted columns, over the original rows
    lengths = st.lengths.cpu().tolist()
    cnt = st.counters.cpu().tolist()
    out = []
    for r, n in enumerate(lengths):
        ids, text = _trim_at_stop(pair.tokenizer, gen[r][:n], cfg.stop)
        row_trace = {k: v[r, : len(ids)] for k, v in trace.items()}
        out.append(RowResult(ids, text, row_trace, dict(zip(schema.COUNTERS, cnt[r]))))
    return out


# --------------------------------------------------------------------------------------------- loop
@dataclass
class DecodeState:
    """Everything the loop carries between steps."""

    seq: Sequences
    small: Runner
    large: Runner
    small_base: Runner | None
    rec: Recorder
    fin: Finisher
    generator: torch.Generator | None
    rows: Tensor  # (b,) original row of each live row
    lengths: Tensor  # (B0,) final generated lengths, filled in as rows are dropped
    counters: Tensor  # (B0, 3) int64: drafted, accepted, verification steps

    def runners(self) -> list[Runner]:
        return [r for r in (self.small, self.large, self.small_base) if r is not None]


def drop_finished(st: DecodeState) -> None:
    """Take finished rows out of the batch and every cache, so they cost nothing while others go on."""
    keep = (~st.seq.finished).nonzero().flatten()
    if len(keep) in (0, len(st.rows)):
        return
    st.lengths[st.rows] = st.seq.lengths
    for runner in st.runners():
        runner.select(keep)
    st.seq.select(keep)
    st.rows = st.rows[keep]
    st.rec.rows = st.rows


def make_generator(pair: ModelPair, cfg: DecodeConfig) -> torch.Generator | None:
    """The sampling generator (``None`` when greedy); make one per run and share it across batches, so
    batches do not repeat each other's draws."""
    if cfg.temperature == 0:
        return None
    gen = torch.Generator(device=pair.device)
    # without a seed, draw one from torch's global RNG, so torch.manual_seed (lm-eval's --seed) still
    # makes a run reproducible
    gen.manual_seed(cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return gen


def _init(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig,
          gen: torch.Generator | None) -> DecodeState:
    dev = pair.device
    ids, mask = input_ids.to(dev), attention_mask.to(dev)
    rows = torch.arange(ids.shape[0], device=dev)
    return DecodeState(
        Sequences.from_prompt(ids, mask), Runner.new(pair.small), Runner.new(pair.large),
        Runner.new(pair.small_base) if pair.small_base is not None else None,
        Recorder(cfg.record_trace, rows), Finisher(pair, cfg.stop), gen, rows,
        torch.zeros(ids.shape[0], dtype=torch.long, device=dev),
        torch.zeros(ids.shape[0], 3, dtype=torch.long, device=dev),
    )


def system2_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig, s1: Tensor) -> Tensor:
    """System 2's log-probs ``[B, V]`` at the next position (the large model catches up first)."""
    v = pair.vocab_size
    large = st.large.advance(st.seq, 1, v)[:, -1]
    base = st.small_base.advance(st.seq, 1, v)[:, -1] if cfg.method_spec.needs_small_base else None
    return cfg.method_spec.fn(s1, large, base, **cfg.params).log_softmax(-1)


def plain_step(st: DecodeState, pair: ModelPair, cfg: DecodeConfig) -> None:
    """Emit one token per row: System 2's where the router asks for it, System 1's elsewhere."""
    s1 = st.small.advance(st.seq, 1, pair.vocab_size)[:, -1]  # (B, V)
    called = cfg.router_spec.fn(s1, cfg.threshold) & ~st.seq.finished
    s2 = system2_step(st, pair, cfg, s1) if called.any() else None
    dist = torch.where(called[:, None], s2, s1) if s2 is not None else s1
    tok = pick(dist, cfg.temperature, cfg.top_k, cfg.top_p, st.generator)
    handoff = called & (tok != s1.argmax(-1))
    tok = st.fin.emit(st.seq, tok)
    st.rec.add(tok, 1 + called.to(torch.int8), called, handoff, s1, s2)


def decode_batch(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig,
                 generator: torch.Generator | None = None) -> list[RowResult]:
    """Decode a left-padded batch ``input_ids``/``attention_mask`` ``[B, T]``; one ``RowResult`` per row.

    ``generator`` drives sampling; by default a new one seeded with ``cfg.seed``.
    """
    from .speculative import speculative_round  # the draft/verify function lives beside this loop

    st = _init(pair, input_ids, attention_mask, cfg, generator or make_generator(pair, cfg))
    spec = cfg.method_spec.speculative and cfg.router != "never"
    with torch.inference_mode():
        while st.seq.generated < cfg.max_new_tokens and not bool(st.seq.finished.all()):
            speculative_round(st, pair, cfg) if spec else plain_step(st, pair, cfg)
            drop_finished(st)
    return _rows(pair, st, cfg)


# ---------------------------------------------------------------------------------- teacher forcing
@dataclass
class ScoreResult:
    logprobs: Tensor  # (B, T, V) System 2's log-probs at t for token t+1 (System 1's where not called)
    trace: dict[str, np.ndarray]  # field -> (B, T), aligned with logprobs; token_id = input_ids[t+1]


def full_logprobs(model: PreTrainedModel, ids: Tensor, mask: Tensor, vocab: int) -> Tensor:
    """Log-probs ``[B, T, vocab]`` of one uncached forward pass."""
    dev = model.get_input_embeddings().weight.device
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                position_ids=positions_from_mask(mask).to(dev), use_cache=False)
    return out.logits[..., :vocab].float().log_softmax(-1).to(ids.device)


def score_batch(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig) -> ScoreResult:
    """Teacher-forced: the method and router applied at every position of ``input_ids`` ``[B, T]``."""
    v, (b, t) = pair.vocab_size, input_ids.shape
    ids, mask = input_ids.to(pair.device), attention_mask.to(pair.device)
    spec = cfg.method_spec
    with torch.inference_mode():
        s1 = full_logprobs(pair.small, ids, mask, v)  # (B, T, V)
        flat1 = s1.reshape(-1, v)
        if spec.speculative:  # every token is verified unless System 2 is never asked
            called = torch.full((b * t,), cfg.router != "never", dtype=torch.bool, device=ids.device)
        else:
            called = cfg.router_spec.fn(flat1, cfg.threshold)
        s2 = large = None
        if called.any():
            large = full_logprobs(pair.large, ids, mask, v).reshape(-1, v)
            base = full_logprobs(pair.small_base, ids, mask, v).reshape(-1, v) if spec.needs_small_base else None
            s2 = spec.fn(flat1, large, base, **cfg.params).log_softmax(-1)
        out = torch.where(called[:, None], s2, flat1) if s2 is not None else flat1
        trace = _score_trace(ids, flat1, s2, large, called, cfg)
    return ScoreResult(out.view(b, t, v), {k: x.reshape(b, t) for k, x in trace.items()})


def _score_trace(ids: Tensor, s1: Tensor, s2: Tensor | None, large: Tensor | None, called: Tensor,
                 cfg: DecodeConfig) -> dict[str, np.ndarray]:
    """Trace fields over flattened positions ``[B*T]``; System 2's token is its greedy prediction."""
    nxt = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1).reshape(-1)
    g1 = s1.argmax(-1)
    handoff = called & (s2.argmax(-1) != g1) if s2 is not None else torch.zeros_like(called)
    accepted = torch.full_like(nxt, -1)
    source = 1 + called.long()
    if cfg.method_spec.speculative and large is not None:
        agree = large.argmax(-1) == g1  # would System 1's greedy draft be accepted?
        accepted = torch.where(called, agree.long(), accepted)
        source = torch.where(called & agree, torch.ones_like(source), source)
    rec = Recorder(True, torch.arange(len(nxt), device=ids.device))
    rec.add(nxt, source, called, handoff, s1, s2, accepted)
    return {k: v[:, 0] for k, v in rec.finish(len(nxt), ids.device).items()}
