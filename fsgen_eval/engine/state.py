"""What the decoding loop carries between steps: token columns, stop handling, the trace recorder, rows.

Layout of a batch: rows are left-padded to a common number of columns; a column is real where ``mask`` is 1
and position ids count only a row's real tokens. Each model's backend (``engine/backend.py``) keeps its
cache and a count ``fed`` of the columns already in it, the same for every row. System 1 is fed every column; the large model (and
``small_base``) only when a router asks for System 2 — it then catches up on every skipped column in one
forward pass. The plain loop emits one real column per step for every row; speculative decoding
(``engine/speculative.py``) lets each row accept its own number of drafts, and a row's rejected drafts stay
behind as masked columns (skipped by attention) until ``compact`` squeezes them out of the tokens and caches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fsgen_eval.core import schema
from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.engine.backend import Backend
from fsgen_eval.engine.columns import model_columns, trace_columns
from fsgen_eval.engine.finish import stop_in, stop_window, trim_at_stop


# ------------------------------------------------------------------------------------------ sequences
def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids ``[B, T]`` that count only real tokens, so left padding does not shift positions."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


@dataclass
class Sequences:
    """Token columns of a left-padded batch (prompt then generation) and who has finished.

    A column is part of a row's sequence where ``mask`` is 1; masked columns (left padding, a row's
    rejected drafts) are skipped by attention and by position ids.
    """

    tokens: Tensor  # (B, L) int64
    mask: Tensor  # (B, L) int64, 0 on left padding and rejected drafts
    positions: Tensor  # (B, L) int64, counting only real tokens
    prompt_len: int
    finished: Tensor  # (B,) bool
    lengths: Tensor  # (B,) int64 tokens generated (EOS included); final once the row has finished
    ended: Tensor  # (B,) int64 tokens generated when the finishing rule ended the row; 0: not yet

    @classmethod
    def from_prompt(cls, input_ids: Tensor, attention_mask: Tensor, resume: "Resume | None" = None) -> "Sequences":
        """Columns of the prompt ``[B, T]`` (left-padded): nothing generated yet, or with ``resume`` each row's
        last ``resume.generated`` real columns counted as its own tokens."""
        b, t = input_ids.shape
        dev = input_ids.device
        zeros = torch.zeros(b, dtype=torch.long, device=dev)
        gen, ended = (zeros, zeros.clone()) if resume is None else (resume.generated.to(dev), resume.ended.to(dev))
        return cls(input_ids.long(), attention_mask.long(), positions_from_mask(attention_mask), t,
                   torch.zeros(b, dtype=torch.bool, device=dev), gen.clone(), ended.clone())

    @property
    def length(self) -> int:
        """Columns, real or masked (what the caches hold once fed)."""
        return self.tokens.shape[1]

    @property
    def generated(self) -> int:
        """The most tokens any row has generated."""
        return int(self.lengths.max()) if len(self.lengths) else 0

    def push(self, tok: Tensor, real: Tensor | None = None) -> None:
        """Append one column ``[B]``, real where ``real`` ``[B]`` (default: every row); no finishing logic."""
        real = torch.ones_like(tok) if real is None else real.long()
        self.positions = torch.cat([self.positions, self.mask.sum(-1, keepdim=True)], 1)  # next real position
        self.tokens = torch.cat([self.tokens, tok[:, None]], 1)
        self.mask = torch.cat([self.mask, real[:, None]], 1)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` columns (drops rejected drafts)."""
        self.tokens, self.mask, self.positions = (x[:, :length] for x in (self.tokens, self.mask, self.positions))

    def reject(self, start: int, kept: Tensor) -> None:
        """Mask out each row's columns from ``start + kept`` on (``kept`` ``[B]``): its rejected drafts."""
        cols = torch.arange(self.length - start, device=kept.device)
        self.mask[:, start:] *= (cols[None] < kept[:, None]).long()

    def real_tokens(self, row: int, end: int) -> Tensor:
        """Row ``row``'s real tokens among columns ``[0, end)``."""
        return self.tokens[row, :end][self.mask[row, :end].bool()]

    def compact_index(self, tail: int, fraction: float) -> Tensor | None:
        """Columns ``[B, L']`` that keep every row's real tokens, left-padded, and every column from ``tail``
        on; ``None`` unless that removes more than ``fraction`` of the ``L`` columns.

        Kept columns stay in order and the tail lands on the last ``L - tail`` columns of every row, so a
        cache that holds columns ``[0, f)`` with ``f >= tail`` becomes ``index[:, :f - (L - L')]``.
        """
        keep = self.mask.bool()
        keep[:, tail:] = True
        new_len = int(keep.sum(-1).max())
        if self.length - new_len <= fraction * self.length:
            return None
        # a stable sort puts each row's dropped columns first, then its kept ones in their order
        order = torch.sort(keep.to(torch.uint8), dim=-1, stable=True).indices
        return order[:, self.length - new_len:]

    def compact(self, index: Tensor) -> None:
        """Keep columns ``index`` ``[B, L']`` of every row (see ``compact_index``)."""
        self.tokens, self.mask, self.positions = (x.gather(1, index) for x in (self.tokens, self.mask, self.positions))

    def feed(self, backend: Backend, keep: int) -> Tensor:
        """``backend``'s log-probs ``[B, keep, V]`` at the last ``keep`` columns, once it has been fed every
        column it has not seen yet."""
        return backend.advance(self.tokens, self.mask, self.positions, keep)

    def select(self, keep: Tensor) -> None:
        """Keep only the batch rows ``keep``."""
        for name in ("tokens", "mask", "positions", "finished", "lengths", "ended"):
            setattr(self, name, getattr(self, name)[keep])


@dataclass(frozen=True)
class Resume:
    """Rows that go on from tokens they generated already (replay's tails: System 2's given tokens).

    Row ``b``'s last ``generated[b]`` real prompt columns are its own tokens: counted against the budget and
    searched for stop strings as if the loop had emitted them. ``ended[b]`` > 0: the finishing rule ended the
    row already, at that many tokens. ``past_end`` tokens are decoded after a row's end, never past the
    budget (speculative rounds verify drafts there, so replay's counters need them).
    """

    generated: Tensor  # (B,) int64
    ended: Tensor  # (B,) int64, 0 where the row has not ended
    past_end: int = 0

    def check(self, rows: int) -> None:
        """One-line refusal of a resume that does not fit a batch of ``rows`` rows."""
        if self.generated.shape != (rows,) or self.ended.shape != (rows,):
            raise ValueError(f"Resume of {tuple(self.generated.shape)} generated and {tuple(self.ended.shape)} "
                             f"ended counts for a batch of {rows} rows")
        if bool((self.ended > self.generated).any()) or bool((self.generated < 0).any()) or self.past_end < 0:
            raise ValueError("Resume: a row cannot have ended after the tokens it generated, nor count below 0")


class Finisher:
    """Counts each row's emitted tokens and ends it at EOS, a stop string or ``max_new_tokens``: the rule of
    ``engine/finish.py``, EOS and the budget as tensors over the batch, stop strings by ``stop_in``.

    A row leaves the loop (``finished``) where it ends, or ``past_end`` tokens later (never past the budget):
    after its end the rule is not applied again (EOS and stop strings are ordinary tokens there)."""

    def __init__(self, pair: ModelPair, stop: tuple[str, ...], max_new_tokens: int, past_end: int = 0):
        self.tokenizer = pair.tokenizer
        self.pad = pair.pad_token_id
        self.eos = torch.tensor(pair.eos_token_ids(), dtype=torch.long, device=pair.device)
        self.stop = stop
        self.max_new = max_new_tokens
        self.window = stop_window(stop)
        self.past_end = past_end

    def emit(self, seq: Sequences, tok: Tensor) -> Tensor:
        """Append ``tok`` ``[B]`` as a new column (pad where finished); return the column appended."""
        live = ~seq.finished
        tok = torch.where(live, tok, torch.full_like(tok, self.pad))
        seq.push(tok)
        self.account(seq, tok, live, None)
        return tok

    def account(self, seq: Sequences, tok: Tensor, emitting: Tensor, end: Tensor | None) -> Tensor:
        """Count ``tok`` ``[B]`` as the next token of each unfinished row where ``emitting`` ``[B]``; the
        token is already in ``seq``, ending at column ``end`` ``[B]`` (exclusive; ``None``: the last column).
        Returns ``tok`` with pad where it is not counted."""
        live = emitting & ~seq.finished
        seq.lengths += live.long()
        fresh = live & (seq.ended == 0)  # rows the rule has not ended yet
        done = fresh & (torch.isin(tok, self.eos) | (seq.lengths >= self.max_new))
        if self.stop:
            done |= self._stopped(seq, fresh & ~done, end)
        seq.ended = torch.where(done, seq.lengths, seq.ended)
        seq.finished |= (seq.ended > 0) & (seq.lengths >= self.limit(seq))
        return torch.where(live, tok, torch.full_like(tok, self.pad))

    def limit(self, seq: Sequences) -> Tensor:
        """``[B]`` tokens after which each row leaves: its end + ``past_end`` (never past the budget), the
        budget for a row not ended yet."""
        return torch.where(seq.ended > 0, (seq.ended + self.past_end).clamp(max=self.max_new),
                           torch.full_like(seq.ended, self.max_new))

    def _stopped(self, seq: Sequences, rows: Tensor, end: Tensor | None) -> Tensor:
        out = torch.zeros_like(rows)
        for r in rows.nonzero().flatten().tolist():
            e = seq.length if end is None else int(end[r])
            w = min(self.window, int(seq.lengths[r]))  # generated tokens only, never the prompt's
            out[r] = stop_in(self.tokenizer, seq.real_tokens(r, e)[-w:].tolist(), self.stop)
        return out


# ------------------------------------------------------------------------------------------- traces
class Recorder:
    """Per-token trace columns ``[B0]`` over the original batch, kept on the device and moved to the CPU
    once per batch. ``rows`` maps the live batch (finished rows are dropped) to original rows.

    Each ``add`` is one column; a row that does not emit a token in it (``emitted`` False: speculative rows
    that accepted fewer drafts than others) gets no entry, so every row's entries are its own tokens in order.

    With ``topk`` > 0 it also keeps System 1's and System 2's top-``topk`` ids and probabilities per token
    (columns ``[B0, K]``), gathered on the device like every other field and ordered per row the same way.
    """

    def __init__(self, enabled: bool, rows: Tensor, topk: int = 0):
        self.enabled = enabled
        self.rows = rows  # (b,) original row of each live row
        self.batch = len(rows)  # B0
        self.topk = topk
        fields = schema.TOKEN_FIELDS + (schema.TOPK_FIELDS if topk else ())
        self.cols: dict[str, list[Tensor]] = {k: [] for k in fields}
        self.emitted: list[Tensor] = []  # (B0,) bool per column: the row has an entry there

    def _put(self, field: str, v: Tensor) -> None:
        self.cols[field].append(self._full(v))

    def _full(self, v: Tensor) -> Tensor:
        """``v`` ``[b, ...]`` over the live rows → ``[B0, ...]``; dropped rows get a filler (never emitted)."""
        if len(v) == self.batch:
            return v
        return torch.zeros((self.batch, *v.shape[1:]), dtype=v.dtype, device=v.device).index_copy(0, self.rows, v)

    def add(self, token: Tensor, source: Tensor, called: Tensor, handoff: Tensor, s1: Tensor,
            s2: Tensor | None, accepted: Tensor | None = None, emitted: Tensor | None = None,
            base_handoff: Tensor | None = None) -> None:
        """Record one column; ``s1``/``s2`` are log-probs ``[b, V]`` (s2 only meaningful where ``called``);
        ``emitted`` ``[b]`` bool: the rows this column is a token of (default: every live row).

        ``base_handoff`` ``[b]`` (int8: 1/0, -1 without a base model) is proxy tuning's count against the
        untuned base's greedy token. The columns are ``columns.trace_columns`` of both models'
        ``model_columns`` (statistics only when traces are enabled), as replay builds them."""
        self.emitted.append(self._full(emitted if emitted is not None else torch.ones_like(token, dtype=torch.bool)))
        c1 = model_columns(s1, self.topk, self.enabled)
        c2 = model_columns(s2, self.topk, self.enabled) if s2 is not None else None
        for k, v in trace_columns(token, source, called, handoff, c1, c2, accepted, base_handoff).items():
            self._put(k, v)

    def _entry_order(self) -> Tensor | None:
        """Columns ``[B0, N']`` holding each row's entries first, in order (``None``: every row has every
        column); N' is the most entries of any row, the rest of a shorter row is filler."""
        if not self.emitted:
            return None
        emitted = torch.stack(self.emitted, 1)  # (B0, N)
        if bool(emitted.all()):
            return None
        order = torch.sort((~emitted).to(torch.uint8), dim=1, stable=True).indices
        return order[:, : int(emitted.sum(1).max())]

    def stacked(self, field: str, order: Tensor | None) -> Tensor | None:
        """Field ``field``'s columns as ``[B0, N', ...]`` in each row's entry order (``None``: not recorded)."""
        col = self.cols[field]
        if not col:
            return None
        arr = torch.stack(col, 1)  # (B0, N, ...)
        if order is None:
            return arr
        idx = order.view(*order.shape, *[1] * (arr.dim() - 2)).expand(-1, -1, *arr.shape[2:])
        return arr.gather(1, idx)

    def finish(self, batch: int) -> dict[str, np.ndarray]:
        """Stack to ``[B, N]`` numpy arrays with the schema's dtypes (one device→CPU copy per field);
        top-K fields ``[B, N, K]`` (int32 ids, float32 probabilities)."""
        order = self._entry_order()
        n = len(self.cols["token_id"]) if order is None else order.shape[1]
        out = {}
        for k in schema.TOKEN_FIELDS:
            arr = self.stacked(k, order)
            if arr is None:
                out[k] = np.full((batch, n), np.nan if schema.FIELD_DTYPES[k] is np.float32 else 0)
            else:
                out[k] = arr.cpu().numpy()
            out[k] = out[k].astype(schema.FIELD_DTYPES[k])
        for k in schema.TOPK_FIELDS if self.topk else ():
            arr = self.stacked(k, order)
            out[k] = (arr.cpu().numpy() if arr is not None else
                      np.zeros((batch, 0, self.topk), np.int32 if k.endswith("ids") else np.float32))
        return out


@dataclass
class RowResult:
    token_ids: list[int]  # generated tokens (EOS included if emitted), trimmed at a stop string
    text: str  # decoded generation (special tokens skipped), trimmed at the stop string
    trace: schema.Trace  # per-token arrays, one entry per token_ids entry
    counters: dict[str, int]  # drafted_tokens, accepted_tokens, verification_steps
    emitted: list[int]  # every token this call emitted, untrimmed (``Resume.past_end``'s included)
    finish: int  # tokens generated where the finishing rule ended the row (a ``Resume``'s counted)




def collect_rows(pair: ModelPair, st: "DecodeState", cfg: DecodeConfig) -> list[RowResult]:
    """One :class:`RowResult` per original row: tokens, text and trace ``[T_r]`` trimmed at EOS and stop strings."""
    keep_final(st)
    trace = st.rec.finish(st.rec.batch)
    gen = trace["token_id"].tolist()  # the emitted columns, over the original rows
    new = (st.lengths - st.start).cpu().tolist()  # tokens emitted here (a Resume's given ones are not)
    ends = st.ends.cpu().tolist()
    cnt = st.counters.cpu().tolist()
    out = []
    for r, n in enumerate(new):
        ids, text = trim_at_stop(pair.tokenizer, gen[r][:n], cfg.stop)
        row_trace = {k: v[r, : len(ids)] for k, v in trace.items()}
        out.append(RowResult(ids, text, row_trace, dict(zip(schema.COUNTERS, cnt[r])), gen[r][:n], ends[r]))
    return out


# ------------------------------------------------------------------------------------------- state
@dataclass
class DecodeState:
    """Everything the loop carries between steps."""

    seq: Sequences
    small: Backend
    large: Backend
    small_base: Backend | None
    rec: Recorder
    fin: Finisher
    generator: torch.Generator | None
    rows: Tensor  # (b,) original row of each live row
    lengths: Tensor  # (B0,) final generated lengths, filled in as rows are dropped
    counters: Tensor  # (B0, 3) int64: drafted, accepted, verification steps
    start: Tensor  # (B0,) tokens each row had generated before the loop (a Resume's; else 0)
    ends: Tensor  # (B0,) where the finishing rule ended each row, filled in as rows are dropped

    def runners(self) -> list[Backend]:
        """The backends in use (``small_base``'s only for proxy tuning)."""
        return [r for r in (self.small, self.large, self.small_base) if r is not None]


def keep_final(st: DecodeState) -> None:
    """Copy the live rows' counts to the original rows' (before rows leave the batch, and at the end)."""
    st.lengths[st.rows] = st.seq.lengths
    st.ends[st.rows] = st.seq.ended


def drop_finished(st: DecodeState) -> None:
    """Take finished rows out of the batch and every cache, so they cost nothing while others go on."""
    keep = (~st.seq.finished).nonzero().flatten()
    if len(keep) in (0, len(st.rows)):
        return
    keep_final(st)
    for runner in st.runners():
        runner.select(keep)
    st.seq.select(keep)
    st.rows = st.rows[keep]
    st.rec.rows = st.rows


# masked columns (rejected drafts, padding left by dropped rows) may take up this fraction of a batch's
# columns before ``compact`` squeezes them out: each one costs attention and cache memory in every step,
# a compaction costs one copy of every cache
COMPACT_FRACTION = 0.25


def compact(st: DecodeState, fraction: float | None = None) -> None:
    """Squeeze masked columns out of the token columns and every cache once they exceed ``fraction``
    (default ``COMPACT_FRACTION``) of the columns.

    Columns a cache has not been fed yet are kept for every row, so each runner's cache stays a prefix of
    the columns (a runner that was never fed stays empty and later feeds the compacted columns).
    """
    fed = [r.fed for r in st.runners() if r.fed]
    if not fed or not all(r.compactable() for r in st.runners()):
        return
    length = st.seq.length
    index = st.seq.compact_index(min(fed), COMPACT_FRACTION if fraction is None else fraction)
    if index is None:
        return
    removed = length - index.shape[1]
    for runner in st.runners():
        if runner.fed:
            runner.compact(index[:, : runner.fed - removed])
    st.seq.compact(index)


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


def init_state(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig,
               gen: torch.Generator | None, small: Backend | None = None, resume: Resume | None = None) -> DecodeState:
    """The loop's state for a left-padded batch ``input_ids``/``attention_mask`` ``[B, T]``: no row finished,
    empty caches — except System 1's when ``small`` is given: a backend already holding the first
    ``small.fed`` columns (a shared prefix fed once and forked over the batch), which the loop then goes on
    from. ``resume``: rows that go on from tokens they generated already (:class:`Resume`)."""
    dev = pair.device
    ids, mask = input_ids.to(dev), attention_mask.to(dev)
    b = ids.shape[0]
    rows = torch.arange(b, device=dev)
    if small is not None and small.fed >= ids.shape[1]:
        raise ValueError(f"System 1's backend holds {small.fed} columns of a {ids.shape[1]}-column prompt: "
                         "the loop needs at least one column to feed")
    if resume is not None:
        resume.check(b)
    seq = Sequences.from_prompt(ids, mask, resume)
    fin = Finisher(pair, cfg.stop, cfg.max_new_tokens, resume.past_end if resume is not None else 0)
    if resume is not None and bool((seq.lengths >= fin.limit(seq)).any()):
        raise ValueError("Resume: a row has nothing left to decode (its given tokens reach its limit)")
    return DecodeState(
        seq, small if small is not None else pair.open("small"), pair.open("large"),
        pair.open("small_base") if pair.small_base is not None else None,
        Recorder(cfg.record_trace, rows, cfg.trace_topk), fin, gen, rows,
        seq.lengths.clone(), torch.zeros(b, 3, dtype=torch.long, device=dev), seq.lengths.clone(),
        torch.zeros(b, dtype=torch.long, device=dev),
    )
