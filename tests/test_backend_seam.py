"""The backend seam: a model the engine has never seen (a logits table) plugged in as one class.

``TableBackend`` is a bigram model with a position term: the next-token logits at a column are
``table[last real token up to it] + bias[its position]``. It keeps its own "cache" (the tokens and positions
it was fed), so a batch row the engine forgot to ``select``, a column it forgot to ``rewind`` or ``compact``,
or a skipped column never fed changes its answers or breaks its shapes. Every expected result below is
computed by hand from the tables, one prompt at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from fsgen_eval.engine.api import generate_ids, loglikelihood_ids
from fsgen_eval.engine.backend import Backend, TransformersBackend
from fsgen_eval.engine.config import make_config
from fsgen_eval.engine.pair import ModelPair

POSITIONS = 64  # rows of the position term; later positions share the last row


class TableBackend:
    """A logits table behind the ``Backend`` protocol (``model`` = ``(table [V, V], bias [P, V])``)."""

    exact = True
    device = torch.device("cpu")

    def __init__(self, model: tuple[Tensor, Tensor], vocab_size: int):
        self.table, self.bias = model
        self.vocab_size = vocab_size
        self.tokens = torch.zeros(0, 0, dtype=torch.long)  # (B, fed) the cache: what was fed
        self.positions = torch.zeros(0, 0, dtype=torch.long)
        self.fed = 0
        self.forwards = 0  # advance calls, to see that the large model is skipped

    @classmethod
    def for_role(cls, model: tuple[Tensor, Tensor], role: str, vocab_size: int) -> "TableBackend":
        if model[0].shape[-1] < vocab_size:
            raise ValueError(f"{role} table has {model[0].shape[-1]} columns, the tokenizer {vocab_size} tokens")
        return cls(model, vocab_size)

    def empty(self) -> "TableBackend":
        return TableBackend((self.table, self.bias), self.vocab_size)

    def _logp(self, tokens: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        """``[B, L, V]`` log-probs at every column of ``tokens``/``mask``/``positions`` ``[B, L]``."""
        cols = torch.arange(tokens.shape[1]).expand_as(tokens)
        last = torch.where(mask.bool(), cols, -1).cummax(-1).values.clamp_min(0)  # last real column <= c
        logits = self.table[tokens.gather(1, last)] + self.bias[positions.clamp(max=POSITIONS - 1)]
        return logits[..., :self.vocab_size].log_softmax(-1)

    def advance(self, tokens: Tensor, mask: Tensor, positions: Tensor, keep: int) -> Tensor:
        if self.fed == 0:
            self.tokens, self.positions = tokens[:, :0], positions[:, :0]
        assert self.tokens.shape == (len(tokens), self.fed)  # the cache holds every row, every fed column
        self.tokens = torch.cat([self.tokens, tokens[:, self.fed:]], 1)
        self.positions = torch.cat([self.positions, positions[:, self.fed:]], 1)
        self.fed = tokens.shape[1]
        self.forwards += 1
        return self._logp(self.tokens, mask, self.positions)[:, -keep:]  # from the cache, not the arguments

    def score(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None, keep: int | None = None) -> Tensor:
        if mask is None:  # right-padded rows from column 0
            mask = torch.ones_like(ids)
            positions = torch.arange(ids.shape[1]).expand_as(ids)
        return self._logp(ids, mask, positions)[:, -(keep or ids.shape[1]):]

    def fork(self, rows: Tensor) -> "TableBackend":
        new = self.empty()
        new.tokens, new.positions, new.fed = self.tokens[rows], self.positions[rows], self.fed
        return new

    def select(self, rows: Tensor) -> None:
        if self.fed:
            self.tokens, self.positions = self.tokens[rows], self.positions[rows]

    def rewind(self, length: int) -> None:
        self.tokens, self.positions = self.tokens[:, :length], self.positions[:, :length]
        self.fed = min(self.fed, length)

    def compactable(self) -> bool:
        return True

    def compact(self, index: Tensor) -> None:
        self.tokens, self.positions = self.tokens.gather(1, index), self.positions.gather(1, index)
        self.fed = index.shape[1]


@pytest.fixture(scope="module")
def tables(tokenizer) -> dict[str, tuple[Tensor, Tensor]]:
    """Small and large tables that agree on many next tokens and not on others (the large one is the small
    one plus noise), with a few extra output columns past the tokenizer (padded embedding rows)."""
    v = len(tokenizer)
    gen = torch.Generator().manual_seed(0)
    small = (3 * torch.randn(v, v + 3, generator=gen), torch.randn(POSITIONS, v + 3, generator=gen))
    large = (small[0] + 2 * torch.randn(v, v + 3, generator=gen), small[1] + torch.randn(POSITIONS, v + 3, generator=gen))
    # after one token in 8, both tables end the generation: rows finish at different steps and leave the batch
    ends = torch.rand(v, generator=gen) < 1 / 8
    for table, _ in (small, large):
        table[ends, tokenizer.eos_token_id] += 30.0
    return {"small": small, "large": large}


@pytest.fixture(scope="module")
def pair(tables, tokenizer) -> ModelPair:
    return ModelPair(small=tables["small"], large=tables["large"], tokenizer=tokenizer, backend=TableBackend.for_role)


PROMPTS = [[5, 17, 40, 41], [9], [100, 3, 77], [12, 200, 7, 7, 8, 250], [60, 61]]
N = 12


def next_logp(model: tuple[Tensor, Tensor], ids: list[int], v: int) -> Tensor:
    """The table's log-probs ``[V]`` after ``ids`` (one sequence, no padding)."""
    table, bias = model
    return (table[ids[-1]] + bias[min(len(ids) - 1, POSITIONS - 1)])[:v].log_softmax(-1)


def by_hand(pair: ModelPair, prompt: list[int], choose) -> list[int]:
    """Greedy decoding of one prompt, ``choose(s1, large) -> token`` per step, ending at EOS or N tokens."""
    v, eos, ids, out = pair.vocab_size, set(pair.eos_token_ids()), list(prompt), []
    while len(out) < N:
        tok = choose(next_logp(pair.small, ids, v), next_logp(pair.large, ids, v))
        out.append(tok)
        ids.append(tok)
        if tok in eos:
            break
    return out


def test_table_backend_is_a_backend_and_transformers_is_the_default(pair):
    assert isinstance(pair.backends["small"], Backend) and isinstance(pair.open("large"), TableBackend)
    assert ModelPair.__dataclass_fields__["backend"].default == TransformersBackend.for_role


def test_pair_refuses_a_table_narrower_than_the_vocabulary(tables, tokenizer):
    narrow = (tables["large"][0][:, :10], tables["large"][1][:, :10])
    with pytest.raises(ValueError, match="large table has 10 columns"):
        ModelPair(small=tables["small"], large=narrow, tokenizer=tokenizer, backend=TableBackend.for_role)


@pytest.mark.parametrize("method,params", [("oracle", {}), ("speculative", {"num_draft": 3})])
def test_oracle_and_greedy_speculative_equal_the_large_tables_greedy(pair, method, params):
    cfg = make_config(method, "always", max_new_tokens=N, **params)
    out = generate_ids(pair, PROMPTS, cfg, batch_size=3)  # ragged, left-padded batches
    want = [by_hand(pair, p, lambda s1, large: int(large.argmax())) for p in PROMPTS]
    assert len({len(w) for w in want}) > 2  # rows end at different steps (EOS) and leave the batch
    assert out.token_ids == want
    handoffs = sum(int(t["handoff"].sum()) for t in out.traces)
    assert handoffs == sum(int(next_logp(pair.small, p + w[:j], pair.vocab_size).argmax()) != w[j]
                           for p, w in zip(PROMPTS, want) for j in range(len(w)))
    assert 0 < handoffs < sum(len(w) for w in want)  # the tables agree on some tokens, not all
    if method == "speculative":
        assert sum(c["accepted_tokens"] for c in out.counters) > 0  # drafts were verified and kept


def test_router_never_equals_the_small_tables_greedy(pair):
    cfg = make_config("oracle", "never", max_new_tokens=N)
    out = generate_ids(pair, PROMPTS, cfg, batch_size=5)
    assert out.token_ids == [by_hand(pair, p, lambda s1, large: int(s1.argmax())) for p in PROMPTS]
    assert all(not t["llm_called"].any() for t in out.traces)


def test_entropy_router_mixes_the_tables_row_by_row(pair):
    """The large backend is fed only when a row's router fires, catching up on every skipped column."""
    def entropy(lp: Tensor) -> float:
        return float(-(lp.exp() * lp).sum())

    every = [entropy(next_logp(pair.small, p, pair.vocab_size)) for p in PROMPTS]
    every.sort()
    threshold = (every[len(every) // 2 - 1] + every[len(every) // 2]) / 2  # between two rows: no float tie
    cfg = make_config("oracle", "entropy", threshold, max_new_tokens=N)
    out = generate_ids(pair, PROMPTS, cfg, batch_size=5)
    want = [by_hand(pair, p, lambda s1, large: int((large if entropy(s1) > threshold else s1).argmax()))
            for p in PROMPTS]
    assert out.token_ids == want
    called = [t["llm_called"] for t in out.traces]
    assert any(c.any() for c in called) and not all(c.all() for c in called)


def test_loglikelihood_scores_with_the_large_table(pair):
    reqs = [([5, 17, 40], [41, 9, 3]), ([9], [100])]
    cfg = make_config("oracle", "always")
    out = loglikelihood_ids(pair, reqs, cfg, batch_size=2)
    for (ctx, cont), got in zip(reqs, out.logprobs):
        ids = list(ctx)
        want = 0.0
        for tok in cont:
            want += float(next_logp(pair.large, ids, pair.vocab_size)[tok])
            ids.append(tok)
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-5)


class ScoreOnly:
    """A scoring-only backend (what vLLM's ``prompt_logprobs`` gives): ``vocab_size``, ``exact``, ``score``."""

    exact = True

    def __init__(self, backend: TableBackend):
        self.inner, self.vocab_size = backend, backend.vocab_size

    def score(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None, keep: int | None = None) -> Tensor:
        return self.inner.score(ids, mask, positions, keep)


def test_replay_through_the_seam_equals_lockstep_exactly(pair):
    """Replay is a mode of the engine: given half of each oracle generation, the large table decodes the rest
    (tails, then a look-ahead), both tables are teacher-forced through the seam (a full backend and a
    scoring-only one), and the trace equals the lockstep loop's in every field, bit for bit (System 2's
    statistics too: the loop's System 2 under the oracle is the large model's log-probs as the backend
    returned them, ``decode.system2_logprobs``); the greedy speculative counters equal the engine's at
    batch 1."""
    from fsgen_eval.engine import replay as rp

    k = 3
    out = generate_ids(pair, PROMPTS, make_config("oracle", "always", max_new_tokens=N), batch_size=3)
    given = [ids[: max(1, len(ids) // 2)] for ids in out.token_ids]
    n = len(PROMPTS)
    trajs, s2 = rp.score_and_complete(pair.backends["large"], given, PROMPTS, pair.tokenizer, pair.eos_token_ids(),
                                      [()] * n, [N] * n, pair.pad_token_id, lookahead=k, batch_size=2)
    assert [t.tokens[:t.emitted] for t in trajs] == out.token_ids
    assert any(len(t.tokens) > t.finish for t in trajs)  # the look-ahead was decoded
    spec = make_config("speculative", "always", max_new_tokens=N, num_draft=k)
    for small in (pair.backends["small"], ScoreOnly(pair.backends["small"])):
        s1 = rp.score_trajectories(small, trajs, pair.pad_token_id, batch_size=2)
        for p, t, a, b, lock in zip(PROMPTS, trajs, s1, s2, out.traces):
            got = rp.oracle_trace(t, a, b)
            assert set(got) == set(lock)
            for field, v in lock.items():
                np.testing.assert_array_equal(got[field], v, err_msg=field)
            engine = generate_ids(pair, [p], spec, batch_size=1).counters[0]
            counters = rp.speculative_counters(a["argmax"] == t.tokens, t.finish, N, k)
            rounds = counters.pop("accepted_per_round")  # replay's finer record (core/spec_metrics.py)
            assert counters == engine
            assert sum(rounds) == engine["accepted_tokens"] and len(rounds) == engine["verification_steps"]


def greedy_past_eos(pair: ModelPair, prompt: list[int], n: int) -> list[int]:
    """The large table's ``n`` greedy tokens after ``prompt``, EOS treated as any token."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(next_logp(pair.large, ids, pair.vocab_size).argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("past_end", [0, 3])
def test_resumed_rows_count_their_given_tokens_and_decode_past_their_end(pair, tokenizer, past_end):
    """``Resume`` (replay's tails in the one loop): each row's given tokens — the last columns of its prompt —
    count against the budget and the stop window, a row whose given tokens ended already decodes only its
    look-ahead, and after its end a row goes on ``past_end`` tokens (EOS an ordinary token there, never past
    the budget). By hand: the row's greedy sequence ``seq`` (given tokens first), ended where the finishing
    rule over the whole of it says (``finish.finish_index``), emitting ``seq[g:min(fin + past_end, N)]``."""
    from fsgen_eval.engine.decode import decode_batch
    from fsgen_eval.engine.finish import finish_index
    from fsgen_eval.engine.replay import tail_pair
    from fsgen_eval.engine.state import Resume

    seqs = [greedy_past_eos(pair, p, 2 * N) for p in PROMPTS]
    eos = pair.eos_token_ids()
    # a stop string spanning row 2's last given token (its 4th) and its first new one: the last character of
    # the one's text and the first of the other's
    stop = (tokenizer.decode(seqs[2][3:4])[-1] + tokenizer.decode(seqs[2][4:5])[0],)
    cases = []
    for r, (p, seq) in enumerate(zip(PROMPTS, seqs)):
        fin = finish_index(tokenizer, seq, eos, stop, N)
        want = min(fin + past_end, N)
        g = min(2 + r % 3, want - 1)  # given tokens: 2..4, fewer where the row would have nothing left
        cases.append((p + seq[:g], g, fin if fin <= g else 0, seq[g:want], fin))
    assert any(e for _, _, e, _, _ in cases) or past_end == 0  # a row resumed after its end, where one can be
    assert cases[2][1] == 4 and cases[2][4] == 5 and seqs[2][4] not in eos  # row 2: ended by the spanning stop
    width = max(len(c[0]) for c in cases)
    ids = torch.tensor([[pair.pad_token_id] * (width - len(c[0])) + c[0] for c in cases])
    mask = torch.tensor([[0] * (width - len(c[0])) + [1] * len(c[0]) for c in cases])
    resume = Resume(torch.tensor([c[1] for c in cases]), torch.tensor([c[2] for c in cases]), past_end)
    cfg = make_config("oracle", "never", max_new_tokens=N, stop=list(stop) or None, record_trace=False)
    got = decode_batch(tail_pair(pair.backends["large"], tokenizer, eos), ids, mask, cfg, resume=resume)
    assert [r.emitted for r in got] == [c[3] for c in cases]
    assert [r.finish for r in got] == [c[4] for c in cases]


def test_tails_of_one_batch_with_other_stops_and_budgets(pair, tokenizer):
    """Rows of one scored batch with other stop strings and budgets (the fork per group): each trajectory is
    the large table's greedy sequence to where the rule over it ends (given tokens included), plus the
    look-ahead, never past the row's own budget."""
    from fsgen_eval.engine import replay as rp
    from fsgen_eval.engine.finish import finish_index

    k, eos = 2, pair.eos_token_ids()
    seqs = [greedy_past_eos(pair, p, 2 * N) for p in PROMPTS]
    spanning = (tokenizer.decode(seqs[2][3:4])[-1] + tokenizer.decode(seqs[2][4:5])[0],)
    stops = [(), spanning, spanning, (), spanning]
    budgets = [N, N, N - 3, N - 2, N]
    given = [seq[:1] for seq in seqs]
    trajs, _ = rp.score_and_complete(pair.backends["large"], given, PROMPTS, tokenizer, eos, stops, budgets,
                                     pair.pad_token_id, lookahead=k, batch_size=len(PROMPTS))
    for seq, stop, budget, t in zip(seqs, stops, budgets, trajs):
        fin = finish_index(tokenizer, seq, eos, stop, budget)
        assert (t.finish, t.tokens) == (fin, seq[:min(fin + k, budget)])
    assert len({(s, b) for s, b in zip(stops, budgets)}) > 1  # several groups in the one batch


def test_resume_that_does_not_fit_is_refused_in_one_line(pair, tokenizer):
    from fsgen_eval.engine.decode import decode_batch
    from fsgen_eval.engine.replay import tail_pair
    from fsgen_eval.engine.state import Resume

    lp = tail_pair(pair.backends["large"], tokenizer, pair.eos_token_ids())
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    cfg = make_config("oracle", "never", max_new_tokens=2, record_trace=False)
    with pytest.raises(ValueError, match="nothing left to decode"):
        decode_batch(lp, ids, mask, cfg, resume=Resume(torch.tensor([2]), torch.tensor([0])))
    with pytest.raises(ValueError, match="for a batch of 1 rows"):
        decode_batch(lp, ids, mask, cfg, resume=Resume(torch.tensor([1, 1]), torch.tensor([0, 0])))
    with pytest.raises(ValueError, match="cannot have ended after"):
        decode_batch(lp, ids, mask, cfg, resume=Resume(torch.tensor([1]), torch.tensor([2]), 3))


class CountingBackend(TableBackend):
    """A table backend that counts the real tokens fed into its caches (``fed`` counts columns, pad too),
    over every copy it ``empty``-s or ``fork``-s (a shared list)."""

    def __init__(self, model, vocab_size, fed_tokens: list[int] | None = None):
        super().__init__(model, vocab_size)
        self.fed_tokens = fed_tokens if fed_tokens is not None else [0]

    @classmethod
    def for_role(cls, model, role, vocab_size):
        return cls(model, vocab_size, COUNTED)

    def empty(self) -> "CountingBackend":
        return CountingBackend((self.table, self.bias), self.vocab_size, self.fed_tokens)

    def fork(self, rows: Tensor) -> "CountingBackend":
        new = self.empty()
        new.tokens, new.positions, new.fed = self.tokens[rows], self.positions[rows], self.fed
        return new

    def advance(self, tokens: Tensor, mask: Tensor, positions: Tensor, keep: int) -> Tensor:
        self.fed_tokens[0] += int(mask[:, self.fed:].sum())
        return super().advance(tokens, mask, positions, keep)


COUNTED = [0]  # real tokens fed by every CountingBackend that for_role built


def continuation_cases(pair: ModelPair) -> tuple[list[list[int]], list[tuple[int, int]], list[int]]:
    """Handoff-like prefixes: per prompt, the large table's greedy generation up to a position, then another
    token; request keys; how many leading tokens the rows of each request share (its prompt + the earliest
    position's tokens)."""
    prefixes, keys, shared = [], [], {}
    for r, p in enumerate(PROMPTS):
        gen = by_hand(pair, p, lambda s1, large: int(large.argmax()))
        positions = [j for j in (0, 1, 3, 4) if j < len(gen)]
        for j in positions:
            prefixes.append(p + gen[:j] + [(gen[j] + 1) % pair.vocab_size])
            keys.append((r, 0))
        shared[(r, 0)] = len(p) + positions[0]
    return prefixes, keys, [shared[k] for k in keys]


def test_continuations_through_the_seam_equal_plain_greedy_from_each_prefix(pair, tokenizer):
    """Any backend continues (here the logits table), the handoffs of one request forked from its prompt's
    cache, each row decoded by the engine's loop with its own budget: every row is the table's greedy
    decoding from its prefix, as if alone."""
    from fsgen_eval.engine.continuation import continue_greedy

    prefixes, keys, _ = continuation_cases(pair)
    budgets = [(3 * i) % (N + 1) for i in range(len(prefixes))]  # 0 (nothing) .. N, ragged within a batch
    large = pair.large
    for requests in (keys, None):
        got = continue_greedy(large, tokenizer, prefixes, budgets, batch_size=3, requests=requests,
                              backend=TableBackend.for_role)
        for p, b, (ids, text) in zip(prefixes, budgets, got):
            want = by_hand(pair, p, lambda s1, lg: int(lg.argmax()))[:b]  # EOS or N, then cut to the budget
            assert ids == want and text == tokenizer.decode(want, skip_special_tokens=True)
    assert len({len(w) for w, _ in got}) > 2  # rows end at different steps


def test_continuations_feed_each_requests_prompt_once(pair, tokenizer):
    """Counting every real token fed to the model: with request keys each request's shared prefix is fed
    once and each handoff only its own suffix, then its generated tokens; without them, every prefix whole."""
    from fsgen_eval.engine.continuation import continue_greedy

    prefixes, keys, shared = continuation_cases(pair)
    budgets = [N] * len(prefixes)
    fed = {}
    for name, requests in (("shared", keys), ("alone", None)):
        COUNTED[0] = 0
        got = continue_greedy(pair.large, tokenizer, prefixes, budgets, batch_size=3, requests=requests,
                              backend=CountingBackend.for_role)
        decoded = sum(max(len(ids) - 1, 0) for ids, _ in got)  # each emitted token but the last is fed back
        fed[name] = COUNTED[0] - decoded
    once = {k: s for k, s in zip(keys, shared)}
    assert fed["alone"] == sum(len(p) for p in prefixes)
    assert fed["shared"] == sum(once.values()) + sum(len(p) - s for p, s in zip(prefixes, shared))
    assert fed["shared"] < fed["alone"] - (len(prefixes) - len(once)) * min(len(p) for p in PROMPTS)
