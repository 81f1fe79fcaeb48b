"""``lm_eval --model fsgen``: a thin ``HFLM`` subclass that decodes with a small/large model pair.

lm-eval's ``HFLM`` owns everything around the model: loading the large model (devices, ``parallelize``,
data parallelism), tokenisation, padding, truncation, batching with its ``Collator``, stop handling and
caching. This class overrides only its hooks:

- ``_model_generate`` (``generate_until``: GSM8K, MBPP) runs the engine's ``decode_batch``;
- ``_model_call`` (``loglikelihood``: MMLU, and ``loglikelihood_rolling``) returns System 2's log-probs
  from the engine's teacher-forced ``score_batch``;
- the request-level methods only note which request each batch row belongs to, so that one trace line per
  request can be written as soon as its batch finishes.

The constructor's keywords are the ``--model_args`` schema (see docs/lm_eval.md).
"""

from __future__ import annotations

import atexit
import bisect
import inspect
import logging
import sys
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import get_rolling_token_windows, hash_string, make_disjoint_window, simple_parse_args_string

from fsgen_eval.lm_eval import args as margs
from fsgen_eval.lm_eval.args import ModelArgsError
from fsgen_eval.lm_eval.traces import (
    SummaryBook,
    TraceWriter,
    all_rank_paths,
    format_summary,
    make_record,
    timestamp,
    trace_path,
)

log = logging.getLogger(__name__)

def _one_line_errors(previous):
    """An uncaught ``ModelArgsError`` (bad --model_args) prints one line instead of a traceback."""

    def hook(exc_type, exc, tb):
        if isinstance(exc, ModelArgsError):
            print(f"lm_eval --model fsgen: error: {exc}", file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    return hook


sys.excepthook = _one_line_errors(sys.excepthook)


# ------------------------------------------------------------------------------------ request ledger
@dataclass
class _Request:
    """One request whose trace record is being assembled (several parts for rolling windows)."""

    meta: dict[str, Any]
    n_parts: int
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)


def _meta(inst: Any, request_type: str, rank: int, method: str, router: str) -> dict[str, Any]:
    return {
        "task": inst.task_name,
        "doc_id": inst.doc_id,
        "prompt_hash": hash_string(inst.arguments[0]),  # as lm-eval's samples file: sha256 of the context
        "request_type": request_type,
        "method": method,
        "router": router,
        "rank": rank,
    }


def padding_flags(requests: list[Any], world_size: int) -> list[bool]:
    """Mark lm-eval's data-parallel padding: copies of a request beyond its ``repeats`` (no trace for them).

    lm-eval evens out the ranks by appending ``[req] * req.repeats`` again for the last request; the same
    ``Instance`` object then appears more often than its ``repeats``.
    """
    if world_size <= 1:
        return [False] * len(requests)
    seen: dict[int, int] = defaultdict(int)
    flags = []
    for inst in requests:
        seen[id(inst)] += 1
        flags.append(seen[id(inst)] > (inst.repeats or 1))
    return flags


class _ScoreLedger:
    """Matches the rows ``HFLM`` hands to ``_model_call`` back to the requests they score.

    A row is the request's ``(context + continuation)[-(max_length+1):][:-1]``, right-padded with zeros.
    Causal attention makes a row's log-probs at its first ``len(key)`` positions depend only on ``key``, so
    any row that starts with a request's key scores that request exactly (this also covers lm-eval's
    one-token-continuation cache, where one row serves several requests).
    """

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.by_key: dict[tuple[int, ...], list[tuple[_Request, int, list[int]]]] = defaultdict(list)
        self.lengths: list[int] = []  # distinct key lengths, sorted

    def add(self, req: _Request, part: int, ctx: list[int], cont: list[int]) -> None:
        key = tuple((ctx + cont)[-(self.max_length + 1):][:-1])
        self.by_key[key].append((req, part, list(cont)))
        i = bisect.bisect_left(self.lengths, len(key))
        if i == len(self.lengths) or self.lengths[i] != len(key):
            self.lengths.insert(i, len(key))

    def resolve(self, rows: torch.Tensor, logprobs: torch.Tensor, trace: dict[str, np.ndarray]) -> list[_Request]:
        """Fill the parts scored by this batch; return the requests now complete."""
        done = []
        rows = rows.cpu()
        nonzero = (rows != 0).long()
        # a key cannot end before the row's last non-pad token
        firsts = (nonzero * torch.arange(1, rows.shape[1] + 1)).amax(1).tolist()
        for b, row in enumerate(rows.tolist()):
            start = bisect.bisect_left(self.lengths, firsts[b])
            for n in self.lengths[start: bisect.bisect_right(self.lengths, len(row))]:
                for req, part, cont in self.by_key.pop(tuple(row[:n]), ()):
                    req.parts[part] = _part(logprobs[b], {k: v[b] for k, v in trace.items()}, n, cont)
                    if len(req.parts) == req.n_parts:
                        done.append(req)
        return done


def _part(lp: torch.Tensor, trace: dict[str, np.ndarray], n: int, cont: list[int]) -> dict[str, Any]:
    """A continuation's slice of one scored row: positions ``n-len(cont) .. n-1`` predict ``cont``."""
    pos = torch.arange(n - len(cont), n)
    target = torch.tensor(cont, dtype=torch.long)
    rows = lp[pos.to(lp.device)].float().cpu()  # (C, V)
    sliced = {k: np.asarray(v)[n - len(cont): n] for k, v in trace.items()}
    sliced["token_id"] = np.asarray(cont, dtype=np.int64)  # the last one is not in the row itself
    return {
        "trace": sliced,
        "logprob": float(rows.gather(1, target[:, None]).sum()),
        "is_greedy": bool((rows.argmax(-1) == target).all()),
    }


def _joined(req: _Request) -> tuple[dict[str, np.ndarray], float, bool]:
    parts = [req.parts[i] for i in range(req.n_parts)]
    trace = {k: np.concatenate([p["trace"][k] for p in parts]) for k in parts[0]["trace"]}
    return trace, sum(p["logprob"] for p in parts), all(p["is_greedy"] for p in parts)


# ------------------------------------------------------------------------------------------- model
@register_model("fsgen")
class FSGenLM(HFLM):
    """FS-GEN collaborative decoding (System 1 = ``small``, System 2 computed from ``large``) for lm-eval."""

    def __init__(
        self,
        small: str | None = None,  # System 1: path or hub id
        large: str | None = None,  # the large model System 2 is computed from
        small_base: str | None = None,  # proxy tuning: the untuned base of `small`
        method: str = "oracle",  # a name in core.registry.METHODS
        router: str = "always",  # a name in core.registry.ROUTERS
        dtype: str = "auto",  # as --model hf: the checkpoints' dtype
        device: str = "cuda",
        batch_size: int | str = 1,  # an int, or auto / auto:N as --model hf
        max_batch_size: int = 64,  # upper bound for batch_size=auto
        max_length: int | None = None,  # context window (default: the large model's)
        trust_remote_code: bool = False,
        parallelize: bool = False,  # device_map="auto" for the large model
        trace: str | bool | None = None,  # a path (file.jsonl or folder), false, or unset: beside results
        **params: Any,  # the method's and router's parameters (threshold, num_draft, alpha, ...): the registry's
    ) -> None:
        from fsgen_eval.engine.config import make_config
        from fsgen_eval.engine.pair import ModelPair

        # everything that can be wrong is checked before a weight is read
        threshold = params.get("threshold")
        self.method_params = margs.method_params(params)
        roles, toks = check_pair(small, large, small_base, method, router, threshold, self.method_params,
                                 bool(trust_remote_code))
        self.trace_arg = margs.check_trace_arg(trace)
        device = margs.resolve_device(device, torch.cuda.is_available())

        # HFLM loads the large model (devices, parallelize, accelerate ranks) with System 1's tokenizer
        super().__init__(pretrained=large, tokenizer=small, device=device, dtype=dtype, batch_size=batch_size,
                         max_batch_size=max_batch_size, max_length=max_length,
                         trust_remote_code=bool(trust_remote_code), parallelize=bool(parallelize))
        if self.backend != "causal":
            raise ModelArgsError(f"large={large!r} is not a causal (decoder-only) language model")
        loaded = {role: self._load_small(role, path, dtype, bool(trust_remote_code))
                  for role, path in roles.items() if role != "large"}
        self.pair = ModelPair.from_models(loaded["small"], self.model, toks["small"],
                                          small_base=loaded.get("small_base"), names=dict(roles))
        self.fsgen = {"small": small, "large": large, "small_base": small_base, "method": method,
                      "router": router, "threshold": threshold}
        self._make_config = make_config
        self.book = SummaryBook()
        self.engine_seconds = 0.0
        self.run_ts = self._shared_timestamp()
        self._writer: TraceWriter | None | bool = None  # None: not decided yet; False: no traces
        self._texts: dict[tuple[int, ...], str] = {}
        self._batch_contexts: list[str] = []
        self._gen_pending: dict[str, deque] = {}
        self._ledger: _ScoreLedger | None = None
        self._ll_requests: list[_Request | None] | None = None

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def model_arg_names(cls) -> list[str]:
        fixed = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                 if n != "self" and p.kind is not p.VAR_KEYWORD]
        return margs.model_arg_names(fixed)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "FSGenLM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> "FSGenLM":
        # lm-eval passes device/batch_size both here and in model_args: the user's model_args win
        given = margs.check_values(margs.merge_args(arg_dict, additional_config, cls.model_arg_names()))
        margs.check_gen_kwargs(margs.running_gen_kwargs())  # they reach the model only with the requests
        return cls(**given)

    def _load_small(self, role: str, path: str, dtype: str, trust_remote_code: bool) -> transformers.PreTrainedModel:
        from fsgen_eval.engine.pair import load_model

        return load_model(path, role, dtype, str(self.device), trust_remote_code)

    def _shared_timestamp(self) -> str:
        """One stamp for every rank's trace file (rank 0's), so rank 0 can find them all."""
        stamp = [timestamp()]
        if self.world_size > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(stamp, from_process=0)
        return stamp[0]

    def _decode_config(self, **decoding: Any) -> Any:
        """The engine's config: this run's method and router, plus a batch's decoding settings."""
        return self._make_config(method=self.fsgen["method"], router=self.fsgen["router"],
                                 threshold=self.fsgen["threshold"], has_small_base=self.pair.small_base is not None,
                                 **self.method_params, **decoding)

    # ------------------------------------------------------------------------------------ traces
    def trace_target(self) -> Path | None:
        """The file or folder traces go to: ``trace=PATH``, else beside lm-eval's results (if any)."""
        if self.trace_arg == "false":
            return None
        if self.trace_arg:
            return Path(self.trace_arg)
        from fsgen_eval.lm_eval.hook import latest_tracker

        tracker = latest_tracker()
        out = getattr(tracker, "output_path", None)
        if not out:
            return None
        out = Path(out)
        if out.suffix == ".json":  # lm-eval then writes results_<stem>_<ts>.json beside it
            return out.parent
        return out / margs.pair_name(self.fsgen["small"], self.fsgen["large"])

    def _trace_writer(self) -> TraceWriter | None:
        if self._writer is None:
            target = self.trace_target()
            if target is None:
                if self.trace_arg != "false":
                    log.warning("fsgen: no --output_path and no trace=PATH: per-token traces are not written")
                self._writer = False
            else:
                self._writer = TraceWriter(trace_path(target, self.run_ts, self.process_index, self.world_size))
        return self._writer or None

    @property
    def process_index(self) -> int:
        """The global rank for file names (HFLM's ``rank`` is the local one: it repeats on every node)."""
        accelerator = getattr(self, "accelerator", None)
        return int(accelerator.process_index) if accelerator is not None else self.rank

    def _emit(self, records: list[dict[str, Any]]) -> None:
        """Count the batch in the summary and append it to the trace file, flushed."""
        for rec in records:
            self.book.add_record(rec)
        writer = self._trace_writer()
        if writer is not None:
            writer.write_batch(records)

    # ------------------------------------------------------------------------------- generation
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        self._gen_pending = defaultdict(deque)
        for inst, pad in zip(requests, padding_flags(requests, self.world_size), strict=True):
            meta = None if pad else _meta(inst, "generate_until", self.process_index, **self._names())
            self._gen_pending[inst.args[0]].append(meta)
        try:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        finally:
            self._gen_pending, self._texts = {}, {}

    def tok_batch_encode(self, strings: list[str], *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self._batch_contexts = list(strings)  # generate_until encodes each batch right before generating it
        return super().tok_batch_encode(strings, *args, **kwargs)

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any) -> torch.Tensor:
        mask = kwargs.pop("attention_mask", None)
        mask = torch.ones_like(context) if mask is None else mask
        cfg = self._decode_config(**self._sampling(kwargs), max_new_tokens=max_length - context.shape[1], stop=stop)
        from fsgen_eval.engine.decode import decode_batch

        start = time.perf_counter()
        rows = decode_batch(self.pair, context, mask, cfg)
        self.engine_seconds += time.perf_counter() - start
        self._emit(self._generation_records(rows))
        return self._as_hf_output(context, rows)

    def _sampling(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """lm-eval's generation kwargs → the engine's (temperature 0 = greedy); bad ones are refused."""
        return margs.sampling(kwargs)

    def _generation_records(self, rows: list[Any]) -> list[dict[str, Any]]:
        records = []
        for context, row in zip(self._batch_contexts, rows, strict=True):
            queue = self._gen_pending.get(context)
            if not queue:
                log.warning("fsgen: a generated row matches no pending request; its trace is not written")
                continue
            meta = queue.popleft()
            if meta is not None:  # None: a data-parallel padding copy
                records.append(make_record(meta, row.trace, row.counters))
        return records

    def _as_hf_output(self, context: torch.Tensor, rows: list[Any]) -> torch.Tensor:
        """``[B, T + N]`` like ``generate``: the prompt, then each row's tokens, then padding.

        HFLM decodes the new tokens itself; ``tok_decode`` hands back the engine's text for them, which is
        already cut before the stop string (its tokens may end inside the stop string).
        """
        width = max([len(r.token_ids) for r in rows] + [0])
        pad = self.pair.pad_token_id
        out = torch.full((context.shape[0], context.shape[1] + width), pad, dtype=torch.long)
        out[:, : context.shape[1]] = context.cpu()
        start = context.shape[1]
        for b, row in enumerate(rows):
            out[b, start: start + len(row.token_ids)] = torch.tensor(row.token_ids, dtype=torch.long)
            self._texts[tuple(out[b, start:].tolist())] = row.text
        return out

    def tok_decode(self, tokens: Any, skip_special_tokens: bool = True) -> str:
        if skip_special_tokens and isinstance(tokens, list):
            text = self._texts.pop(tuple(tokens), None)
            if text is not None:
                return text
        return super().tok_decode(tokens, skip_special_tokens=skip_special_tokens)

    # -------------------------------------------------------------------------------- scoring
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        flags = padding_flags(requests, self.world_size)
        rank = self.process_index
        self._ll_requests = [None if pad else _Request(_meta(inst, "loglikelihood", rank, **self._names()), 1)
                             for inst, pad in zip(requests, flags, strict=True)]
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._ll_requests = None
            self._finish_ledger()

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self._ll_requests is not None:  # called from loglikelihood: one request per entry, same order
            self._ledger = _ScoreLedger(self.max_length)
            for req, (_, ctx, cont) in zip(self._ll_requests, requests, strict=True):
                if req is not None:
                    self._ledger.add(req, 0, ctx, cont)
        return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        self._ledger = _ScoreLedger(self.max_length)
        for inst, pad in zip(requests, padding_flags(requests, self.world_size), strict=True):
            if pad:
                continue
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(inst.args[0]), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            req = _Request(_meta(inst, "loglikelihood_rolling", self.process_index, **self._names()), len(windows))
            for part, (ctx, cont) in enumerate(windows):
                self._ledger.add(req, part, ctx, cont)
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        finally:
            self._finish_ledger()

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """System 2's log-probs ``[B, T, V]`` for HFLM's right-padded rows (HFLM masks nothing either:
        pads only follow the scored positions)."""
        from fsgen_eval.engine.score import score_batch

        cfg = self._decode_config()
        start = time.perf_counter()
        sc = score_batch(self.pair, inps, torch.ones_like(inps), cfg)
        self.engine_seconds += time.perf_counter() - start
        if self._ledger is not None:
            done = self._ledger.resolve(inps, sc.logprobs, sc.trace)
            self._emit([self._score_record(req) for req in done])
        return sc.logprobs

    def _score_record(self, req: _Request) -> dict[str, Any]:
        trace, logprob, greedy = _joined(req)
        return make_record(req.meta, trace, None, logprob=logprob, is_greedy=greedy)

    def _finish_ledger(self) -> None:
        if self._ledger is not None and self._ledger.by_key:
            missing = sum(len(v) for v in self._ledger.by_key.values())
            log.warning("fsgen: %d scored request part(s) got no trace record", missing)
        self._ledger = None

    # ------------------------------------------------------------------------------------ results
    def _names(self) -> dict[str, str]:
        return {"method": self.fsgen["method"], "router": self.fsgen["router"]}

    def fsgen_info(self) -> dict[str, Any]:
        """``config["fsgen"]`` of the results: the setup and the summary over every rank."""
        target = self.trace_target()
        paths = all_rank_paths(target, self.run_ts, self.world_size) if target else []
        book = self.book
        if self.world_size > 1:
            if paths:
                book = SummaryBook.from_files(paths)  # lm-eval has synchronised the ranks by now
            else:
                log.warning("fsgen: without trace files the summary covers rank %d only", self.rank)
        own_tokens = self.book.summary()["summary"]["generated_tokens"]
        return {
            **self.fsgen,
            "params": dict(self._decode_config().params),
            "router_params": dict(self._decode_config().router_params),
            **book.summary(),
            # this rank's throughput: its tokens over the time it spent in the engine
            "tokens_per_second": own_tokens / self.engine_seconds if self.engine_seconds else None,
            # beside the results: bare names (the folder may move); trace=PATH: as given
            "traces": [p.name if self.trace_arg is None else str(p) for p in paths if p.exists()],
        }

    def get_model_info(self) -> dict[str, Any]:
        info = super().get_model_info()
        info["fsgen"] = self.fsgen_info()
        if self._writer:
            self._writer.close()
        if "lm_eval.__main__" in sys.modules:  # the CLI prints its tables after this returns
            atexit.register(print, format_summary(info["fsgen"]))
        return info


def check_pair(small: Any, large: Any, small_base: str | None, method: str, router: str, threshold: Any,
               method_params: dict[str, Any], trust_remote_code: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """Validate the pair and the method before any weight is read; return the roles and their tokenizers.

    Every problem is a one-line ``ModelArgsError``: a missing model, a path that is not a model, a method
    lacking what it needs (or given parameters it does not use), tokenizers that differ.
    """
    from fsgen_eval.engine.config import make_config
    from fsgen_eval.engine.pair import pair_tokenizers

    margs.require_pair(small, large)
    try:
        make_config(method=method, router=router, threshold=threshold, has_small_base=bool(small_base),
                    **method_params)
    except ValueError as err:
        raise ModelArgsError(str(err)) from None
    roles = {"small": small, "large": large, **({"small_base": small_base} if small_base else {})}
    try:
        return roles, pair_tokenizers(roles, trust_remote_code)
    except ValueError as err:
        raise ModelArgsError(str(err)) from None
