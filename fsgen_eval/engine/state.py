"""What the decoding loop carries between steps: token columns, stop handling, the trace recorder, rows.

Layout of a batch: rows are left-padded to a common length and advance in lockstep, one column per emitted
token (finished rows receive pad tokens). Each model keeps a ``DynamicCache`` and a count ``fed`` of the
sequence positions already in it. System 1 is fed every token; the large model (and ``small_base``) only
when a router asks for System 2 — it then catches up on every skipped token in one forward pass. Because
rows advance in lockstep, ``fed`` is the same for every row and no cache ever needs per-row surgery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fsgen_eval.core import schema
from fsgen_eval.engine.config import DecodeConfig
from fsgen_eval.engine.pair import ModelPair
from fsgen_eval.engine.runner import Runner
from fsgen_eval.core.sampling import stats


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
        """Columns of the prompt ``[B, T]`` (left-padded), nothing generated yet."""
        b, t = input_ids.shape
        return cls(input_ids.long(), attention_mask.long(), positions_from_mask(attention_mask), t,
                   torch.zeros(b, dtype=torch.bool, device=input_ids.device),
                   torch.zeros(b, dtype=torch.long, device=input_ids.device))

    @property
    def length(self) -> int:
        """L, the number of columns (prompt and generation)."""
        return self.tokens.shape[1]

    @property
    def generated(self) -> int:
        """Columns emitted after the prompt."""
        return self.length - self.prompt_len

    def push(self, tok: Tensor) -> None:
        """Append one column ``[B]`` (no finishing logic: used for speculative drafts)."""
        self.tokens = torch.cat([self.tokens, tok[:, None]], 1)
        self.mask = torch.cat([self.mask, torch.ones_like(tok)[:, None]], 1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], 1)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` columns (drops rejected drafts)."""
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


def trim_at_stop(tokenizer, ids: list[int], stop: tuple[str, ...]) -> tuple[list[int], str]:
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


def collect_rows(pair: ModelPair, st: "DecodeState", cfg: DecodeConfig) -> list[RowResult]:
    """One :class:`RowResult` per original row: tokens, text and trace ``[T_r]`` trimmed at EOS and stop strings."""
    st.lengths[st.rows] = st.seq.lengths
    trace = st.rec.finish(st.rec.batch, st.seq.tokens.device)
    gen = trace["token_id"].tolist()  # the emitted columns, over the original rows
    lengths = st.lengths.cpu().tolist()
    cnt = st.counters.cpu().tolist()
    out = []
    for r, n in enumerate(lengths):
        ids, text = trim_at_stop(pair.tokenizer, gen[r][:n], cfg.stop)
        row_trace = {k: v[r, : len(ids)] for k, v in trace.items()}
        out.append(RowResult(ids, text, row_trace, dict(zip(schema.COUNTERS, cnt[r]))))
    return out


# ------------------------------------------------------------------------------------------- state
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
        """The runners in use (``small_base``'s only for proxy tuning)."""
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


def init_state(pair: ModelPair, input_ids: Tensor, attention_mask: Tensor, cfg: DecodeConfig,
          gen: torch.Generator | None) -> DecodeState:
    """The loop's state for a left-padded batch ``input_ids``/``attention_mask`` ``[B, T]``: empty caches, no
    row finished."""
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
