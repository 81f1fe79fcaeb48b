"""``fsgen-eval replay``: System 2's run in, one lockstep-shaped results folder per System 1 out.

Each output folder ``OUT/<small>__<large>/`` holds ``results_<ts>.json`` (System 2's lm-eval results — its
metrics are the oracle's, since the oracle emits System 2's tokens — with ``config["fsgen"]`` as a lockstep
``--model fsgen method=oracle,router=always`` run writes it, plus ``replay``) and ``traces_<ts>.jsonl`` in
the trace schema, so ``fit``, ``analyze``, ``report`` and ``check`` read it unchanged. Every file is
written to a temporary name and renamed; the results file comes last (it marks the folder finished).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsgen_eval.core import guards
from fsgen_eval.core.guards import cut
from fsgen_eval.core.schema import TOPK_FIELDS, RunInfo
from fsgen_eval.lm_eval.args import pair_name
from fsgen_eval.lm_eval.samples import System2Run, read_system2_run, tokenize_run
from fsgen_eval.lm_eval.traces import SummaryBook, TraceWriter, make_record, timestamp

log = logging.getLogger(__name__)


@dataclass
class ReplaySetup:
    """What a replay needs besides System 2's run."""

    smalls: list[str]
    large: str | None  # None: --no-large (s2_* null, handoffs against the emitted token)
    output: Path
    draft_lengths: list[int]
    dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = 8
    trust_remote_code: bool = False
    trace_topk: int = 0  # K > 0: both systems' top-K per token in the Parquet side file, as trace_topk=K
    rescore_large: bool = False  # teacher-force the large model even where System 2's trace has its statistics
    scoring: str = "transformers"  # or "vllm": teacher-forced passes from vLLM's prompt_logprobs
    scoring_topk: int = 0  # --scoring vllm: log-probs per position (0 = the whole vocabulary: exact)
    vllm_args: dict[str, Any] = field(default_factory=dict)  # --scoring vllm: engine arguments (max_logprobs, ...)

    def vllm_spec(self) -> Any:
        from fsgen_eval.engine.backends.vllm_backend import ScoringSpec

        return ScoringSpec(self.scoring_topk, dict(self.vllm_args))


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a crash leaves no torn file; a full
    disk, one line naming the ``.tmp`` left)."""
    guards.atomic_write(path, text)


def check_inputs(run: System2Run, setup: ReplaySetup) -> tuple[Any, dict[str, Any], int]:
    """Every check that needs no weights: tokenizers against System 1's, prompts against HFLM's window.

    Returns System 1's tokenizer, the per-task tokenization counts and the max_length used.
    """
    from fsgen_eval.engine.pair import check_same_vocab, load_tokenizer, pair_tokenizers

    if not setup.smalls:
        raise ValueError("--small names no model")
    if setup.scoring not in ("transformers", "vllm"):
        raise ValueError(f"unknown --scoring {setup.scoring!r} (transformers or vllm)")
    if setup.scoring == "vllm":
        from fsgen_eval.engine.backends.vllm_backend import require_vllm

        require_vllm()
    if run.backend == "vllm" and setup.large is not None and not _same_model(run.model, setup.large):
        raise ValueError(f"{run.results_path}: System 2's vLLM run is of {run.model}, not --large {setup.large}: "
                         "its tokens are another model's greedy tokens")
    if any(k < 1 for k in setup.draft_lengths):
        raise ValueError(f"--draft-lengths must be >= 1, got {setup.draft_lengths}")
    toks = {s: load_tokenizer(s, "small", setup.trust_remote_code) for s in setup.smalls}
    first = setup.smalls[0]
    for s in setup.smalls[1:]:
        check_same_vocab(toks[first], toks[s], f"small={first}", f"small={s}")
    if setup.large is not None:
        pair_tokenizers({"small": first, "large": setup.large}, setup.trust_remote_code)
    tok = toks[first]
    if setup.scoring == "vllm":
        # a max_logprobs below the K asked for, or a trace top-K beyond it, before any engine starts
        setup.vllm_spec().check(len(tok), setup.trace_topk)
    system2_tok = run.model_args.get("tokenizer") or run.model
    try:
        other = load_tokenizer(system2_tok, "System 2", setup.trust_remote_code)
    except ValueError as err:
        other = None  # not on this machine (e.g. a hub id run elsewhere): the token checks below remain
        log.warning("%s: System 2's tokenizer %s cannot be loaded here (%s): it is NOT compared with small=%s's; "
                    "the results record tokenizer_compared=false", run.results_path, cut(system2_tok),
                    cut(str(err), 200), first)
    run.tokenizer_compared = other is not None
    if other is not None:
        try:
            check_same_vocab(tok, other, f"small={first}", f"System 2 ({system2_tok})")
        except ValueError as err:
            raise ValueError(f"{run.results_path}: written with another tokenizer than the pair's: {err}") from None
    eot = run.results.get("eot_token_id")
    if eot is not None and tok.eos_token_id is not None and int(eot) != int(tok.eos_token_id):
        raise ValueError(f"{run.results_path}: System 2's EOS id is {eot} but small={first}'s is "
                         f"{tok.eos_token_id}: another tokenizer than the pair's")
    max_length = run.results.get("max_length")
    if not isinstance(max_length, int):
        raise ValueError(f"{run.results_path}: results file lacks 'max_length' (HFLM's context window)")
    counts = tokenize_run(run, tok, max_length)
    _check_token_ids(run, len(tok), first)
    return tok, counts, max_length


def _check_token_ids(run: System2Run, vocab: int, small: str) -> None:
    """Every given token inside System 1's vocabulary (checked before a model loads: past it, scoring would
    index outside the logits)."""
    for r in run.requests:
        ids = r.token_ids or []
        if ids and max(ids) >= vocab:
            raise ValueError(f"{run.results_path}: {r.task} doc_id {r.doc_id}: token_id {max(ids)} is outside "
                             f"small={small}'s vocabulary of {vocab}: another tokenizer than the pair's")


def _eos_ids(tok: Any, large: str | None) -> list[int]:
    """The engine's EOS ids: the tokenizer's and the large model's generation config's (read without weights)."""
    from transformers import GenerationConfig

    ids = {int(tok.eos_token_id)} if tok.eos_token_id is not None else set()
    try:
        gen = GenerationConfig.from_pretrained(large).eos_token_id if large is not None else None
    except OSError:  # no generation_config.json: the tokenizer's EOS is all there is
        gen = None
    if gen is not None:
        ids.update([gen] if isinstance(gen, int) else gen)
    return sorted(ids)


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    return pa.resolve() == pb.resolve() if pa.exists() and pb.exists() else a == b


def _own_statistics(run: System2Run, setup: ReplaySetup) -> bool:
    """Whether System 2's trace already holds the large model's statistics at every token (a ``--model fsgen``
    run of the large model itself, traced), so no teacher-forced pass of it is needed; ``--rescore-large``
    and top-K (the trace has no large-model top-K to reuse) ask for the pass anyway."""
    return (setup.large is not None and not setup.rescore_large and not setup.trace_topk and run.source == "trace"
            and _same_model(run.model, setup.large) and all(r.model_stats is not None for r in run.requests))


def _needs_tail(r: Any, tok: Any, eos: list[int], lookahead: int) -> bool:
    """Whether the engine decoded past request ``r``'s given tokens: to complete a stop string, or the
    speculative look-ahead after where it stopped."""
    from fsgen_eval.engine.finish import finish_index

    given = r.token_ids or []
    fin = finish_index(tok, given, eos, tuple(r.until), r.max_gen_toks)
    return fin is None or fin < len(given) or (lookahead > 0 and fin < r.max_gen_toks)


def scoring_backend(setup: ReplaySetup, path: str, role: str, vocab: int) -> Any:
    """The backend that scores ``role``'s model (``small`` or ``large``) at ``path``: the engine's
    transformers backend (a scoring-only backend with the seam's ``score`` plugs in here)."""
    from fsgen_eval.engine.pair import load_backend

    return load_backend(path, role, vocab, setup.dtype, setup.device, setup.trust_remote_code)


def _system2_side(run: System2Run, setup: ReplaySetup, own: bool, tok: Any, eos: list[int], vocab: int,
                  pad: int) -> tuple[list[Any], list[dict] | None]:
    """Every generation's trajectory (tails decoded where the large model is given) and System 2's statistics
    at its tokens: from System 2's own trace (``own``), a teacher-forced pass of the large model, or none
    (``--no-large``). The large model is loaded only if it has something to do."""
    from fsgen_eval.engine import replay as rp

    reqs, look = run.requests, max(setup.draft_lengths, default=0)
    if setup.large is None:
        return [rp.complete(r.token_ids or [], r.context_ids, tok, eos, tuple(r.until), r.max_gen_toks, None,
                            look) for r in reqs], None
    todo = [i for i, r in enumerate(reqs) if _needs_tail(r, tok, eos, look)] if own else list(range(len(reqs)))
    # a generation needing no tail ended exactly at its given tokens (EOS or max_gen_toks), as complete() has it
    trajs = [rp.Trajectory(r.context_ids, list(r.token_ids or []), len(r.token_ids or []), len(r.token_ids or []),
                           r.max_gen_toks) for r in reqs]
    s2 = [r.model_stats for r in reqs] if own else None
    if todo:  # one scoring pass per batch, and the tails
        with _backend(setup, setup.large, "large", vocab) as large:
            done, stats = _steps(setup, vocab, pad)[1](
                large, [reqs[i].token_ids or [] for i in todo], [reqs[i].context_ids for i in todo], tok, eos,
                [tuple(reqs[i].until) for i in todo], [reqs[i].max_gen_toks for i in todo], look,
                0 if own else setup.trace_topk)
        for i, t in zip(todo, done):
            trajs[i] = t
        s2 = s2 if own else stats
    return trajs, s2


def replay(folder: Path, setup: ReplaySetup, source: str = "auto") -> list[Path]:
    """Replay System 2's run in ``folder`` for every System 1; returns the results files written."""
    run = read_system2_run(folder, source)
    tok, counts, _ = check_inputs(run, setup)  # everything checked before a weight is read
    vocab, pad = len(tok), tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    own = _own_statistics(run, setup)
    eos = _eos_ids(tok, setup.large)
    start = time.perf_counter()
    trajs, s2 = _system2_side(run, setup, own, tok, eos, vocab, pad)
    large_seconds = time.perf_counter() - start
    reqs = run.requests
    decoded = {"large_statistics": "system2_trace" if own else ("teacher_forced" if setup.large else None),
               "tails_decoded": sum(len(t.tokens) > len(r.token_ids or []) for r, t in zip(reqs, trajs)),
               "tails_unknown": sum(not t.tail_known for t in trajs)}
    not_greedy = None if own else _not_greedy(run, trajs, s2)
    written = []
    if setup.scoring == "vllm":
        decoded["scoring"] = setup.vllm_spec().describe(vocab)
    for small in setup.smalls:
        s1, seconds = _score_small(small, setup, trajs, vocab, pad)
        written.append(_write_small(run, setup, small, trajs, s1, s2, counts, {"not_large_greedy": not_greedy,
                                    **decoded, "seconds": {"large": round(large_seconds, 3),
                                                           "small": round(seconds, 3)}}))
    return written


@contextlib.contextmanager
def _backend(setup: ReplaySetup, name: str, role: str, vocab: int) -> Iterator[Any]:
    """``name`` loaded for ``--scoring``: a transformers model (the engine wraps it in its
    ``TransformersBackend``) or vLLM's scoring-only backend (``engine.backends.vllm_backend``), closed after."""
    if setup.scoring == "vllm":
        from fsgen_eval.engine.backends.vllm_backend import VLLMBackend

        backend = VLLMBackend.load(name, vocab, setup.vllm_spec(), setup.dtype)
        try:
            yield backend
        finally:
            backend.close()
        return
    yield scoring_backend(setup, name, role, vocab)


def _steps(setup: ReplaySetup, vocab: int, pad: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The replay's two steps for ``--scoring``'s backend, one signature for both:
    ``score_trajectories(model, trajs, topk)`` and ``score_and_complete(model, given, prompts, tokenizer, eos,
    stops, max_new, lookahead, topk)``."""
    from fsgen_eval.engine import replay as rp
    from fsgen_eval.engine.backends import vllm_backend as vs  # imports no vLLM

    batch = vs.SCORE_BATCH if setup.scoring == "vllm" else setup.batch_size  # vLLM batches within a call

    def score(model: Any, trajs: Any, topk: int) -> Any:  # teacher forcing: the engine's, on either backend
        return rp.score_trajectories(model, trajs, pad, batch, topk)

    if setup.scoring == "vllm":
        return score, vs.score_and_complete

    def score_and_complete(model: Any, given: Any, prompts: Any, tok: Any, eos: Any, stops: Any, max_new: Any,
                           look: int, topk: int) -> Any:
        return rp.score_and_complete(model, given, prompts, tok, eos, stops, max_new, pad, look,
                                     setup.batch_size, topk)

    return score, score_and_complete


def _score_small(small: str, setup: ReplaySetup, trajs: list[Any], vocab: int, pad: int
                 ) -> tuple[list[dict], float]:
    """System 1's statistics at every trajectory's tokens on ``--scoring``'s backend, and the seconds the
    scoring took (the model's load not counted)."""
    with _backend(setup, small, "small", vocab) as model:
        t0 = time.perf_counter()
        return _steps(setup, vocab, pad)[0](model, trajs, setup.trace_topk), time.perf_counter() - t0


def _not_greedy(run: System2Run, trajs: list[Any], s2: list[dict] | None) -> dict[str, list[int]] | None:
    """Per task, the doc_ids whose given tokens are not all the large model's teacher-forced argmax."""
    if s2 is None:
        return None
    out: dict[str, list[int]] = defaultdict(list)
    for r, t, s in zip(run.requests, trajs, s2, strict=True):
        n = len(r.token_ids or [])
        if n and (s["argmax"][:n] != t.tokens[:n]).any():
            out[r.task].append(r.doc_id)
    return {task: out.get(task, []) for task in run.tasks}


def _write_small(run: System2Run, setup: ReplaySetup, small: str, trajs: list[Any], s1: list[dict],
                 s2: list[dict] | None, counts: dict[str, Any], facts: dict[str, Any]) -> Path:
    from fsgen_eval.engine import replay as rp

    large_name = setup.large or run.model
    folder = setup.output / pair_name(small, large_name)
    ts, run_id = timestamp(), uuid.uuid4().hex[:12]  # as the adapter's: one id in the record and every line
    book = SummaryBook()
    records, spec = [], {k: defaultdict(list) for k in setup.draft_lengths}
    for r, t, a, b in zip(run.requests, trajs, s1, s2 or [None] * len(trajs), strict=True):
        meta = {"run_id": run_id, "task": r.task, "doc_id": r.doc_id, "prompt_hash": r.prompt_hash,
                "request_type": "generate_until", "method": "oracle", "router": "always", "rank": 0}
        if "scoring" in facts:  # vLLM's scoring, exact or top-K (named in every record, never silently)
            meta["scoring"] = facts["scoring"]
        rec = make_record(meta, rp.oracle_trace(t, a, b), None)
        book.add_record({k: v for k, v in rec.items() if k not in TOPK_FIELDS})
        records.append(rec)
        match = a["argmax"] == t.tokens
        for k in setup.draft_lengths:
            spec[k][r.task].append(rp.speculative_counters(match, t.finish, t.max_new_tokens, k))
    trace_file = folder / f"traces_{ts}.jsonl"
    writer = TraceWriter(trace_file)  # the adapter's writer: JSON lines, top-K rows in the Parquet side file
    try:
        writer.write_batch(records)
    finally:
        writer.close()
    summary = book.summary()
    info = RunInfo(small=small, large=large_name, method="oracle", router="always", run_id=run_id,
                   summary=summary["summary"], per_task=summary["per_task"], traces=[trace_file.name],
                   batch_size=setup.batch_size, replay=_replay_info(run, setup, counts, facts),
                   trace_topk=setup.trace_topk,
                   speculative=_spec_info(spec) if setup.draft_lengths else None)
    results = copy.deepcopy(run.results)
    results.pop("samples", None)
    results["config"]["model"] = "fsgen"
    results["config"]["model_args"] = {"small": small, "large": large_name, "method": "oracle",
                                       "router": "always", "dtype": setup.dtype}
    results["config"]["fsgen"] = info.to_json()
    results["model_name"] = pair_name(small, large_name)
    path = folder / f"results_{ts}.json"
    atomic_write(path, json.dumps(results, indent=2, ensure_ascii=False, default=str))
    return path


def _replay_info(run: System2Run, setup: ReplaySetup, counts: dict[str, Any], facts: dict[str, Any]
                 ) -> dict[str, Any]:
    """How this run was made: from which System 2 run, and how faithfully its tokens were recovered.

    ``large_statistics``: where the ``s2_*`` fields come from — ``system2_trace`` (System 2's own trace,
    a ``--model fsgen`` run of the large model), ``teacher_forced`` (a pass of the large model), or null
    (``--no-large``); ``not_large_greedy`` (teacher-forced only): per task, doc_ids whose given tokens are not
    all its teacher-forced argmax; ``tails_decoded``: generations the large model continued to where the engine
    would have stopped (stop strings, EOS, speculative look-ahead); ``tails_unknown`` (without it):
    generations whose end could not be re-created.
    """
    return {"replayed": True, "system2_results": str(run.results_path), "system2_model": run.model,
            "system2_tokenizer_compared": run.tokenizer_compared,
            "system2_backend": run.backend, "source": run.source, "large_loaded": setup.large is not None,
            "tokenization": counts, **facts}


def _spec_info(spec: dict[int, dict[str, list[dict]]]) -> dict[str, Any]:
    from fsgen_eval.engine import replay as rp

    out = {}
    for k, per_task in spec.items():
        every = [c for cs in per_task.values() for c in cs]
        out[str(k)] = {"summary": rp.speculative_profile(every, k),
                       "per_task": {t: rp.speculative_profile(cs, k) for t, cs in sorted(per_task.items())}}
    return {"method": "speculative", "temperature": 0.0, "batch_size": 1, "draft_lengths": out}
