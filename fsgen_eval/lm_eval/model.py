"""``lm_eval --model fsgen``: a thin ``HFLM`` subclass that decodes with a small/large model pair.

lm-eval's ``HFLM`` owns everything around the model: loading the large model (devices, ``parallelize``,
data parallelism), tokenisation, truncation and padding, batch-size detection, stop handling and caching.
This class owns the three request loops, each built on lm-eval's ``Collator`` exactly as ``HFLM`` builds
its own, so that every batch carries the identity of the requests it holds:

- ``generate_until`` (GSM8K, MBPP): each batch is decoded by the engine's ``decode_batch``;
- ``_loglikelihood_tokens`` (``loglikelihood``: MMLU) and ``loglikelihood_rolling``: each batch is
  scored by System 2's teacher-forced distribution (the engine's ``score_batch``);
- ``_model_call`` serves only ``HFLM._detect_batch_size`` (``batch_size=auto``): one forward pass of
  each model, which is what the engine holds in memory per row.

One trace line per request is appended to the trace file as soon as its batch finishes. The
constructor's keywords are the ``--model_args`` schema (see docs/lm_eval.md).
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.models.utils_hf import pad_and_concat
from lm_eval.utils import get_rolling_token_windows, hash_string, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from fsgen_eval.core.guards import writable_folder
from fsgen_eval.core.schema import RunInfo
from fsgen_eval.lm_eval import args as margs
from fsgen_eval.lm_eval.args import ModelArgsError
from fsgen_eval.lm_eval.code_eval import sandbox_layers
from fsgen_eval.lm_eval.traces import (
    SummaryBook,
    TraceWriter,
    all_rank_paths,
    conventions_note,
    make_record,
    timestamp,
    trace_path,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------- request identity
@dataclass
class _Request:
    """One request whose trace record is being assembled (several parts for rolling windows)."""

    meta: dict[str, Any]
    n_parts: int
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, part: int, piece: dict[str, Any]) -> bool:
        """Store one scored part; ``True`` once every part is in."""
        self.parts[part] = piece
        return len(self.parts) == self.n_parts

    def joined(self) -> tuple[dict[str, np.ndarray], float, bool]:
        """The parts' traces concatenated in order, the summed log-prob and whether all were greedy."""
        parts = [self.parts[i] for i in range(self.n_parts)]
        trace = {k: np.concatenate([p["trace"][k] for p in parts]) for k in parts[0]["trace"]}
        return trace, sum(p["logprob"] for p in parts), all(p["is_greedy"] for p in parts)


# A scored item's owner: the request it is part ``k`` of, or None (no trace: padding copies, or a caller
# of ``_loglikelihood_tokens`` that is not one of ours).
Owner = tuple[_Request, int] | None


@dataclass(frozen=True)
class _Tag:
    """The first element of an item handed to ``Collator``: lm-eval's cache key plus the item's index.

    ``Collator`` treats that element as opaque and hands it back with every result (including the extra
    results of its one-token-continuation cache), so the index travels with the batch.
    """

    index: int
    cache_key: Any  # (context, continuation) for loglikelihood; None for rolling windows


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


def _scored_part(lp: torch.Tensor, trace: dict[str, np.ndarray], positions: slice, cont: list[int],
                 logprob: float, greedy: bool) -> dict[str, Any]:
    """A continuation's slice of one scored row's trace (``positions`` predict ``cont``)."""
    sliced = {k: np.asarray(v)[positions] for k, v in trace.items()}
    sliced["token_id"] = np.asarray(cont, dtype=np.int64)  # the last one is not in the row itself
    return {"trace": sliced, "logprob": logprob, "is_greedy": greedy}


# ------------------------------------------------------------------------------------------- state
@dataclass
class AdapterState:
    """What an fsgen model keeps between lm-eval's calls (everything else is ``HFLM``'s)."""

    run: RunInfo  # the run record: setup now, summary and trace names at the end
    config: Any  # the run's engine.config.DecodeConfig, made once (per-request settings derive from it)
    method_params: dict[str, Any]  # the method and router parameters the user set, threshold aside
    trace_arg: str | None  # trace=: a path, "false", or None (unset: no location, no traces)
    trace_append: bool  # trace_append=true: an existing trace file is appended to, not refused
    run_ts: str  # the run's start, shared by every rank: names the trace files
    book: SummaryBook = field(default_factory=SummaryBook)  # this rank's records, for the summary
    engine_seconds: float = 0.0  # time spent in the engine (throughput)
    warned_no_trace: bool = False  # the "no trace location" warning is given once
    writer: TraceWriter | None = None
    auto_batch_sizes: list[int] = field(default_factory=list)  # what batch_size=auto picked, in order


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
        trace_append: bool = False,  # append to an existing trace=FILE.jsonl instead of refusing it
        trace_topk: int = 0,  # > 0: top-K ids/probabilities of both systems per token, in a Parquet side file
        **params: Any,  # the method's and router's parameters (threshold, num_draft, alpha, ...): the registry's
    ) -> None:
        # everything that can be wrong is checked before a weight is read (the Python API too, not only
        # create_from_arg_obj: FSGenLM(batch_size="x") names the key as --model_args does)
        self._load(_check_run(small=small, large=large, small_base=small_base, method=method, router=router,
                              dtype=dtype, device=device, batch_size=batch_size, max_batch_size=max_batch_size,
                              max_length=max_length, trust_remote_code=trust_remote_code, parallelize=parallelize,
                              trace=trace, trace_append=trace_append, trace_topk=trace_topk, **params))

    @classmethod
    def _from_run(cls, run: dict[str, Any]) -> "FSGenLM":
        """A model loaded for arguments ``_check_run`` has checked already (checked once per run)."""
        obj = cls.__new__(cls)
        obj._load(run)
        return obj

    def _load(self, run: dict[str, Any]) -> None:
        """Load the checked ``run``'s models (HFLM the large one, then System 1 and the base) and start it."""
        from fsgen_eval.engine.pair import ModelPair

        load = run["load"]
        large = load["large"]

        # HFLM loads the large model (devices, parallelize, accelerate ranks) with System 1's tokenizer
        super().__init__(pretrained=large, tokenizer=load["small"], device=load["device"], dtype=load["dtype"],
                         batch_size=load["batch_size"], max_batch_size=load["max_batch_size"],
                         max_length=load["max_length"], trust_remote_code=load["trust_remote_code"],
                         parallelize=load["parallelize"])
        if self.backend != "causal":
            raise ModelArgsError(f"large={large!r} is not a causal (decoder-only) language model")
        loaded = {role: self._load_small(role, path, load["dtype"], load["trust_remote_code"])
                  for role, path in run["roles"].items() if role != "large"}
        self.pair = ModelPair.from_models(loaded["small"], self.model, run["toks"]["small"],
                                          small_base=loaded.get("small_base"), names=dict(run["roles"]))
        self._load_key = _load_key(load)
        self._start_run(run)

    def _start_run(self, run: dict[str, Any]) -> None:
        """A fresh run record and state (run id, stamp, summary, trace file, the run's one DecodeConfig, made
        when the arguments were checked) on the loaded models."""
        load = run["load"]
        # lm-eval records, from this public attribute, the sizes really used as config.batch_sizes and in its
        # header ("batch_size: 8 (8)"); batch_size=auto fills it as it detects (a fresh dict: a copy's own)
        self.batch_sizes = {0: load["batch_size"]} if isinstance(load["batch_size"], int) else {}
        run_ts, run_id = self._shared_run_stamp()
        info = RunInfo(small=load["small"], large=load["large"], small_base=load["small_base"], method=run["method"],
                       router=run["router"], threshold=run["threshold"], run_id=run_id, batch_size=load["batch_size"],
                       trace_topk=run["trace_topk"])
        cfg = run["config"]  # the run's one DecodeConfig; each batch derives its decoding settings from it
        self.state = AdapterState(run=info, config=cfg, method_params=run["method_params"],
                                  trace_arg=run["trace_arg"], trace_append=run["trace_append"], run_ts=run_ts)
        info.params, info.router_params = dict(cfg.params), dict(cfg.router_params)

    def for_run(self, **model_args: Any) -> "FSGenLM":
        """Another run (method, router, parameters, trace) on the models this one loaded: a copy sharing the
        weights, with its own run id, summary and trace file. The load's own arguments (the models, dtype,
        device, batch size, ...) must be this model's; every argument is checked as the constructor checks it."""
        return self._with_run(_check_run(**model_args))

    def _with_run(self, run: dict[str, Any]) -> "FSGenLM":
        if _load_key(run["load"]) != self._load_key:
            raise ValueError("for_run: the models or their loading arguments differ from this model's")
        new = copy.copy(self)
        new._start_run(run)
        return new

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def model_arg_names(cls) -> list[str]:
        """Every ``--model_args`` key ``fsgen`` accepts: its own arguments, HFLM's and the registries'."""
        fixed = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                 if n != "self" and p.kind is not p.VAR_KEYWORD]
        return margs.model_arg_names(fixed)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "FSGenLM":
        """lm-eval's entry for ``--model_args k=v,...``."""
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> "FSGenLM":
        """lm-eval's entry for a dict of model_args; lm-eval's device/batch_size defaults lose to them."""
        given = margs.check_values(margs.merge_args(arg_dict, additional_config, cls.model_arg_names()))
        # --gen_kwargs reach the model only with the requests: `fsgen-eval run` checks them before this
        held = _REUSE.get()
        if held is None:
            return cls(**given)
        run = _check_run(**given)
        key = _load_key(run["load"])
        if key not in held:
            held.clear()  # one pair held at a time: a group's cells share it, the next group loads its own
            held[key] = cls._from_run(run)  # the arguments checked once, above
            return held[key]
        return held[key]._with_run(run)

    @staticmethod
    @contextmanager
    def reusing_weights() -> Iterator[None]:
        """Within this block, ``--model fsgen`` runs whose models and loading arguments equal the previous
        one's run on that one's loaded weights (:meth:`for_run`) instead of loading them again: the sweep's
        in-process cells (:mod:`fsgen_eval.experiments.cells`). Outside it, every run loads its models."""
        token = _REUSE.set({})
        try:
            yield
        finally:
            _REUSE.reset(token)

    def _load_small(self, role: str, path: str, dtype: str, trust_remote_code: bool) -> transformers.PreTrainedModel:
        from fsgen_eval.engine.pair import load_model

        return load_model(path, role, dtype, str(self.device), trust_remote_code)

    def _shared_run_stamp(self) -> tuple[str, str]:
        """Rank 0's start time (names every rank's trace file, so rank 0 can find them all) and run id."""
        stamp = [timestamp(), uuid.uuid4().hex[:12]]
        if self.world_size > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(stamp, from_process=0)
        return stamp[0], stamp[1]

    def _decode_config(self, **decoding: Any) -> Any:
        """The engine's config: this run's, with a batch's decoding settings (if any)."""
        return self.state.config.for_request(**decoding) if decoding else self.state.config

    @property
    def run_ts(self) -> str:
        """The run's start stamp in trace file names."""
        return self.state.run_ts

    @property
    def process_index(self) -> int:
        """The global rank for file names (HFLM's ``rank`` is the local one: it repeats on every node)."""
        accelerator = getattr(self, "accelerator", None)
        return int(accelerator.process_index) if accelerator is not None else self.rank

    # ------------------------------------------------------------------------------------ traces
    def trace_target(self) -> Path | None:
        """The file or folder traces go to: ``trace=PATH`` (``fsgen-eval run --output_path OUT`` sets it to
        ``OUT/<pair>``, beside the results), or ``None`` (``trace=false``, or no location given)."""
        arg = self.state.trace_arg
        return Path(arg) if arg not in (None, "false") else None

    def _trace_writer(self) -> TraceWriter | None:
        st = self.state
        if st.writer is None:
            target = self.trace_target()
            if target is None:
                if st.trace_arg != "false" and not st.warned_no_trace:
                    log.warning("fsgen: no trace=PATH in --model_args (fsgen-eval run sets it from --output_path): "
                                "per-token traces are not written")
                    st.warned_no_trace = True
                return None
            path = trace_path(target, st.run_ts, self.process_index, self.world_size)
            st.writer = TraceWriter(path, append=st.trace_append)
        return st.writer

    def _meta(self, inst: Any, request_type: str) -> dict[str, Any]:
        return {
            "run_id": self.state.run.run_id,
            "task": inst.task_name,
            "doc_id": inst.doc_id,
            "prompt_hash": hash_string(inst.arguments[0]),  # as lm-eval's samples file: sha256 of the context
            "request_type": request_type,
            "method": self.state.run.method,
            "router": self.state.run.router,
            "rank": self.process_index,
        }

    def _emit(self, records: list[dict[str, Any]]) -> None:
        """Count the batch in the summary and append it to the trace file, flushed."""
        for rec in records:
            self.state.book.add_record(rec)
        writer = self._trace_writer()
        if writer is not None:
            writer.write_batch(records)

    def _timed(self, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.state.engine_seconds += time.perf_counter() - start

    # ------------------------------------------------------------------------------- batch size
    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` → the large model's logits ``[B, T, V]``, as ``HFLM``'s, after the small models' bodies.

        Only ``HFLM._detect_batch_size`` calls this (``batch_size=auto``): it probes five times with ones
        of the longest length. A batch of ours also holds the small models' activations, so their
        transformer bodies run too (``base_model``: no vocabulary head, a small share of the cost). The full
        collaboration with its statistics over the vocabulary is left out: it made the probe many times
        dearer than ``--model hf``'s (issue 13: 693 s against 25 s for the run it sized).
        """
        with torch.no_grad():
            for small in (self.pair.small, self.pair.small_base):
                if small is not None:
                    small.base_model(input_ids=inps.to(small.device))
            return self.model(inps).logits

    def _detect_batch_size(self, requests: Any = None, pos: int = 0) -> int:
        size = super()._detect_batch_size(requests, pos)
        self.state.auto_batch_sizes.append(int(size))
        return size

    # ------------------------------------------------------------------------------- generation
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """``HFLM.generate_until`` with the engine decoding each batch; a trace record per request."""
        pads = padding_flags(requests, self.world_size)
        metas = [None if pad else self._meta(inst, "generate_until") for inst, pad in zip(requests, pads, strict=True)]
        batch_size = self._generation_batch_size()
        # as HFLM: longest first, one group per generation kwargs; the index rides along with each request
        collator = Collator([(*inst.args, i) for i, inst in enumerate(requests)],
                            sort_fn=lambda x: (-len(self.tok_encode(x[0])), x[0]),
                            group_by="gen_kwargs", group_fn=lambda x: x[1])
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        res: list[str] = []
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or self.rank != 0),
                    desc="Running generate_until requests")
        for chunk in collator.get_batched(n=batch_size):
            contexts, all_gen_kwargs, indices = zip(*chunk, strict=True)
            texts = self._generate_batch(list(contexts), all_gen_kwargs[0], eos, [metas[i] for i in indices])
            for context, text in zip(contexts, texts, strict=True):
                res.append(text)
                self.cache_hook.add_partial("generate_until", (context, all_gen_kwargs[0]), text)
                pbar.update(1)
        pbar.close()
        return collator.get_original(res)

    def _generation_batch_size(self) -> int:
        """As HFLM: ``batch_size=auto`` (and ``auto:N``) is detected once for the whole call."""
        if self.batch_size != "auto":
            return self.batch_size
        print("Passed argument batch_size = auto. Detecting largest batch size")
        size = self._detect_batch_size()
        print(f"Determined Largest batch size: {size}")
        return size

    def _generate_batch(self, contexts: list[str], gen_kwargs: dict, eos: str,
                        metas: list[dict[str, Any] | None]) -> list[str]:
        """One batch of contexts → their generations, cut at the stop strings as HFLM cuts them."""
        if not isinstance(gen_kwargs, dict):
            raise ValueError(f"Expected `kwargs` to be of type `dict` but got {type(gen_kwargs)}")
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen_toks = kwargs.pop("max_gen_toks")
        max_ctx_len = self.max_length - max_gen_toks  # room for the generated tokens
        if max_ctx_len <= 0:
            raise ValueError(f"Invalid configuration: requested max tokens to generate ({max_gen_toks}) must be "
                             f"less than model's maximum sequence length ({self.max_length}).")
        context_enc, attn_masks = self.tok_batch_encode(contexts, left_truncate_len=max_ctx_len,
                                                        truncation=self.truncation)  # [B, T] left-padded
        if "max_length" in kwargs:
            log.warning("`max_length` in generation kwargs. Please use `max_gen_toks` instead.")
        max_length = kwargs.pop("max_length", context_enc.shape[1] + max_gen_toks)
        cfg = self._decode_config(**self._sampling(kwargs), max_new_tokens=max_length - context_enc.shape[1],
                                  stop=until)
        from fsgen_eval.engine.decode import decode_batch

        rows = self._timed(decode_batch, self.pair, context_enc.to(self.device), attn_masks.to(self.device), cfg)
        self._emit([make_record(meta, row.trace, row.counters) for meta, row in zip(metas, rows, strict=True)
                    if meta is not None])
        return [postprocess_generated_text(self._row_text(row), stop=until,
                                           think_end_token=self.think_end_token
                                           if isinstance(self.think_end_token, str) else None)
                for row in rows]

    def _row_text(self, row: Any) -> str:
        """The engine's text (already cut before the stop string); HFLM's integer think-end token handling."""
        if isinstance(self.think_end_token, int) and self.think_end_token in row.token_ids:
            last = len(row.token_ids) - 1 - row.token_ids[::-1].index(self.think_end_token)
            return self.tok_decode(row.token_ids[last + 1:]).lstrip()
        return row.text

    def _sampling(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """lm-eval's generation kwargs → the engine's (temperature 0 = greedy); bad ones are refused."""
        return margs.sampling(kwargs)

    # -------------------------------------------------------------------------------- scoring
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``TemplateLM.loglikelihood``'s tokenisation, then our scoring with each request's identity."""
        if getattr(self, "enable_thinking", False):  # HFLM of lm-eval 0.4.10 has no enable_thinking
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)  # HFLM refuses it
        items, owners = [], []
        for inst, pad in zip(requests, padding_flags(requests, self.world_size), strict=True):
            context, continuation = inst.args
            items.append(((context, continuation), *self._encode_request(context, continuation)))
            owners.append(None if pad else (_Request(self._meta(inst, "loglikelihood"), 1), 0))
        return self._score(items, owners, disable_tqdm=disable_tqdm)

    def _encode_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """As ``TemplateLM.loglikelihood``: an empty context becomes the prefix (BOS/EOS) token."""
        if context != "":
            return split_pair(self.tok_encode, context, continuation)
        cont = self.tok_encode(continuation, add_special_tokens=False)
        return ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """HFLM's hook for ``(cache_key, context_ids, continuation_ids)`` triples; no trace for these."""
        return self._score(requests, [None] * len(requests), disable_tqdm=disable_tqdm, override_bs=override_bs)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """``HFLM.loglikelihood_rolling``: disjoint windows of each text, scored in batches, summed."""
        batch_size = self.batch_size
        if self.batch_size == "auto":
            print("Passed argument batch_size = auto. Detecting largest batch size")
            batch_size = self._detect_batch_size()
            print(f"Determined Largest batch size: {batch_size}")
        windows: list[tuple[int, tuple]] = []  # (request index, (None, context_ids, continuation_ids))
        owners: list[Owner] = []
        counts = []
        pads = padding_flags(requests, self.world_size)
        for i, (inst, pad) in enumerate(zip(tqdm(requests, disable=(disable_tqdm or self.rank != 0)), pads,
                                            strict=True)):
            mine = [(None, *make_disjoint_window(w)) for w in get_rolling_token_windows(
                token_list=self.tok_encode(inst.args[0]), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            req = None if pad else _Request(self._meta(inst, "loglikelihood_rolling"), len(mine))
            windows += [(i, w) for w in mine]
            owners += [None if req is None else (req, k) for k in range(len(mine))]
            counts.append(len(mine))
        pad_amount = self._pad_windows(windows, owners)
        scores = []
        for start in range(0, len(windows), batch_size):
            batch = [w for _, w in windows[start:start + batch_size]]
            scores += self._score(batch, owners[start:start + batch_size], override_bs=len(batch))
        if pad_amount:
            scores = scores[:-pad_amount]
        totals, at = [], 0
        for inst, n in zip(requests, counts, strict=True):
            totals.append(sum(s[0] for s in scores[at:at + n]))
            at += n
            self.cache_hook.add_partial("loglikelihood_rolling", (inst.args[0],), totals[-1])
        return totals

    def _pad_windows(self, windows: list, owners: list[Owner]) -> int:
        """As HFLM: every rank scores as many windows as the busiest one (copies of the first, untraced)."""
        if self.world_size <= 1:
            return 0
        gathered = self.all_gather(torch.tensor(len(windows), device=self.device)).cpu().tolist()
        pad = max(gathered) - gathered[self.rank]
        windows += pad * [windows[0]]
        owners += pad * [None]
        return pad

    def _score(self, requests: list[Any], owners: list[Owner], disable_tqdm: bool = False,
               override_bs: int | None = None) -> list[tuple[float, bool]]:
        """``HFLM._loglikelihood_tokens`` (causal) with the engine's System 2 log-probs; ``owners[i]``
        receives the trace of ``requests[i]``, written once the request is complete."""
        collator = Collator([(_Tag(i, r[0]), r[1], r[2]) for i, r in enumerate(requests)],
                            sort_fn=lambda r: (-len(r[1] + r[2]), tuple(r[1] + r[2])),
                            group_by="contexts" if self.logits_cache else None,
                            group_fn=lambda r: r[-2] + r[-1][:-1])  # as HFLM: one row per context
        batch_size = self.batch_size if self.batch_size != "auto" else override_bs if override_bs is not None else 0
        batch_fn = None
        if self.batch_size == "auto" and len(collator) > 0 and not override_bs:
            self.batch_sizes = {}  # as HFLM: detect again for this set of requests
            batch_fn = self._scheduled_batch_size
        res: list[tuple[float, bool]] = []
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or self.rank != 0),
                    desc="Running loglikelihood requests")
        for chunk in collator.get_batched(n=batch_size, batch_fn=batch_fn):
            done = self._score_batch(chunk, collator, owners, res)
            self._emit([self._score_record(req) for req in done])
            pbar.update(len(res) - pbar.n)
        pbar.close()
        return collator.get_original(res)

    def _scheduled_batch_size(self, pos: int, requests: Sequence[Any]) -> int:
        """``batch_size=auto:N`` as ``--model hf`` schedules it, through ``Collator.get_batched``'s documented
        ``batch_fn(pos, requests)``: the sorted requests (longest first) fall into N equal parts, and the size
        is detected at the first batch of each part, unless the part before already reached ``max_batch_size``
        (shorter rows cannot need a smaller batch). Each part's size is kept in ``batch_sizes`` (lm-eval reports
        it as ``config.batch_sizes``)."""
        part = pos // int(len(requests) / self.batch_schedule)
        if part not in self.batch_sizes:
            if len(self.batch_sizes) > 1 and self.batch_sizes.get(part - 1) == self.max_batch_size:
                self.batch_sizes[part] = self.max_batch_size
            else:
                print(f"Passed argument batch_size = auto:{self.batch_schedule}. Detecting largest batch size")
                self.batch_sizes[part] = self._detect_batch_size(requests, pos)
                print(f"Determined largest batch size: {self.batch_sizes[part]}")
        return self.batch_sizes[part]

    def _score_batch(self, chunk: list, collator: Collator, owners: list[Owner],
                     res: list[tuple[float, bool]]) -> list[_Request]:
        """Score one batch; append each answer to ``res``; return the requests now complete."""
        inps, inplens = [], []
        for _, ctx, cont in chunk:
            assert len(ctx) > 0 and len(cont) > 0 and len(cont) <= self.max_length
            if len(ctx) + len(cont) > self.max_length + 1:
                log.warning(f"Combined length of context ({len(ctx)}) and continuation ({len(cont)}) exceeds "
                            f"model's maximum length ({self.max_length}). Truncating {len(ctx) + len(cont) - self.max_length + 1} tokens from the left.")
            inp = torch.tensor((ctx + cont)[-(self.max_length + 1):][:-1], dtype=torch.long, device=self.device)
            inps.append(inp)
            inplens.append(inp.shape[0])
        padding_len = max(inplens)
        batched = pad_and_concat(padding_len, inps, padding_side="right")  # [B, T] right-padded
        from fsgen_eval.engine.score import score_batch

        # HFLM masks nothing either: pads only follow the scored positions
        sc = self._timed(score_batch, self.pair, batched, torch.ones_like(batched), self._decode_config())
        multi = F.log_softmax(sc.logprobs, dim=-1, dtype=self.softmax_dtype)  # [B, T, V], as HFLM's
        done = []
        for b, ((tag, ctx, cont), logits, inplen) in enumerate(zip(chunk, multi, inplens, strict=True)):
            end = inplen + (logits.shape[0] - padding_len)
            selected = logits[end - len(cont): end].unsqueeze(0)  # [1, C, V]
            greedy = selected.argmax(-1)
            row_trace = {k: v[b] for k, v in sc.trace.items()}
            for hit, hit_cont, hit_logits in collator.get_cache(req_str=tag, cxt_toks=ctx, cont_toks=cont,
                                                               logits=selected):
                target = torch.tensor(hit_cont, dtype=torch.long, device=self.device).unsqueeze(0)  # [1, C']
                answer = (float(torch.gather(hit_logits, 2, target.unsqueeze(-1)).sum()),
                          bool((greedy[:, -target.shape[1]:] == target).all()))
                res.append(answer)
                if hit.cache_key is not None:
                    self.cache_hook.add_partial("loglikelihood", hit.cache_key, answer)
                owner = owners[hit.index]
                if owner is not None:
                    piece = _scored_part(logits, row_trace, slice(end - len(hit_cont), end), hit_cont, *answer)
                    if owner[0].add(owner[1], piece):
                        done.append(owner[0])
        return done

    def _score_record(self, req: _Request) -> dict[str, Any]:
        trace, logprob, greedy = req.joined()
        return make_record(req.meta, trace, None, logprob=logprob, is_greedy=greedy)

    # ------------------------------------------------------------------------------------ results
    def fsgen_info(self) -> dict[str, Any]:
        """``config["fsgen"]`` of the results: the run record, with the summary over every rank."""
        st = self.state
        target = self.trace_target()
        paths = all_rank_paths(target, st.run_ts, self.world_size) if target else []
        book = st.book
        if self.world_size > 1:
            if paths:
                book = SummaryBook.from_files(paths, run_id=st.run.run_id)  # the ranks are synchronised by now
            else:
                log.warning("fsgen: without trace files the summary covers rank %d only", self.rank)
        summary = book.summary()
        own_tokens = st.book.summary()["summary"]["generated_tokens"]
        run = st.run
        run.summary, run.per_task = summary["summary"], summary["per_task"]
        # this rank's throughput: its tokens over the time it spent in the engine
        run.tokens_per_second = own_tokens / st.engine_seconds if st.engine_seconds else None
        # as written; readers look for each by name beside the results file first (the folder may move)
        run.traces = [str(p) for p in paths if p.exists()]
        run.auto_batch_sizes = list(st.auto_batch_sizes)
        # code tasks (MBPP): the sandbox layers this run's generated programs get on this machine, probed now
        # (None: code evaluation not allowed, no program could run); lm-eval's task configs say which tasks ran any
        run.code_eval_sandbox = sandbox_layers()
        # where a number follows FS-GEN's convention instead of ours (lossy variant, margin's factor 2)
        run.conventions = conventions_note(run.to_json())
        return run.to_json()

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info plus ``fsgen``: lm-eval puts it into the results' ``config``."""
        info = super().get_model_info()
        info["fsgen"] = self.fsgen_info()
        if self.state.writer is not None:
            self.state.writer.close()
        return info


def split_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """loglikelihood's (context, continuation) token split, the rule ``--model hf`` follows (lm-eval's
    ``TemplateLM`` documents it): the context's trailing whitespace moves to the continuation (so " 7" after
    "Answer:" stays one word), and the continuation's tokens are what follows the context's own tokens in the
    encoding of the whole text. ``context`` is not empty (the caller gives an empty one the prefix token)."""
    kept = context.rstrip()
    continuation = context[len(kept):] + continuation
    context_ids = encode(kept)
    return context_ids, encode(kept + continuation)[len(context_ids):]


# ------------------------------------------------------------------------------------- run arguments
# The models and how they are loaded; a run's other arguments (method, router, parameters, trace) may change
# between runs on one load (FSGenLM.for_run)
_LOAD_ARGS = ("small", "large", "small_base", "dtype", "device", "batch_size", "max_batch_size", "max_length",
              "trust_remote_code", "parallelize")
_REUSE: ContextVar[dict[tuple, "FSGenLM"] | None] = ContextVar("fsgen_reuse", default=None)


def _check_run(small: str | None = None, large: str | None = None, small_base: str | None = None,
               method: str = "oracle", router: str = "always", dtype: str = "auto", device: str = "cuda",
               batch_size: int | str = 1, max_batch_size: int = 64, max_length: int | None = None,
               trust_remote_code: bool = False, parallelize: bool = False, trace: str | bool | None = None,
               trace_append: bool = False, trace_topk: int = 0, **params: Any) -> dict[str, Any]:
    """Every check of FSGenLM's arguments that needs no weight (the defaults are the constructor's); returns the
    checked values: ``load`` (the load's own arguments), the roles and their tokenizers, and the run's."""
    own = {"batch_size": batch_size, "max_batch_size": max_batch_size, "max_length": max_length,
           "dtype": dtype, "trust_remote_code": trust_remote_code, "parallelize": parallelize,
           "trace_append": trace_append}
    checked = margs.check_values({**own, **params})  # booleans: true/false, 1/0, yes/no, on/off only
    params = {k: checked[k] for k in params}
    margs.check_launch()
    threshold = params.get("threshold")
    method_params = margs.method_params(params)
    trace_arg = margs.check_trace_arg(trace)
    margs.check_trace_file(trace_arg, checked["trace_append"])
    check_output(trace_arg)  # an unwritable trace location is refused before the weights
    trace_topk = margs.check_trace_topk(trace_topk, trace_arg)
    roles, toks, config = check_pair(small, large, small_base, method, router, threshold, method_params,
                                     checked["trust_remote_code"], trace_topk)
    load = {"small": small, "large": large, "small_base": small_base,
            "device": margs.resolve_device(device, torch.cuda.is_available()),
            **{k: checked[k] for k in own if k != "trace_append"}}
    return {"load": load, "roles": roles, "toks": toks, "method": method, "router": router, "threshold": threshold,
            "method_params": method_params, "trace_arg": trace_arg, "trace_append": checked["trace_append"],
            "trace_topk": trace_topk, "config": config}


def _load_key(load: dict[str, Any]) -> tuple:
    return tuple(str(load[k]) for k in _LOAD_ARGS)


def check_output(trace_arg: str | None) -> None:
    """Refuse, in one line, a trace location that cannot be written (a file given as folder, under ``/proc``,
    read-only): the first batch would find out only after the models loaded. (``fsgen-eval run`` checks
    ``--output_path`` itself; lm-eval alone finds an unwritable one when it writes the results.)"""
    if trace_arg in (None, "false"):
        return
    path = Path(trace_arg)
    try:
        writable_folder(path.parent if path.suffix in (".json", ".jsonl") else path, "trace=")
    except ValueError as err:
        raise ModelArgsError(str(err)) from None


def check_pair(small: Any, large: Any, small_base: str | None, method: str, router: str, threshold: Any,
               method_params: dict[str, Any], trust_remote_code: bool, trace_topk: int = 0
               ) -> tuple[dict[str, str], dict[str, Any], Any]:
    """Validate the pair and the method before any weight is read; return the roles, their tokenizers and the
    run's one ``DecodeConfig`` (made here, where it is checked; each batch derives its settings from it).

    Every problem is a one-line ``ModelArgsError``: a missing model, a path that is not a model, a model
    with custom code without ``trust_remote_code=true``, a method lacking what it needs (or given parameters
    it does not use), tokenizers that differ.
    """
    from fsgen_eval.engine.config import make_config
    from fsgen_eval.engine.pair import pair_tokenizers

    margs.require_pair(small, large)
    margs.check_distinct_pair(small, large, method, router)
    try:
        config = make_config(method=method, router=router, threshold=threshold, has_small_base=bool(small_base),
                             trace_topk=trace_topk, **method_params)
    except ValueError as err:
        raise ModelArgsError(str(err)) from None
    roles = {"small": small, "large": large, **({"small_base": small_base} if small_base else {})}
    for role, path in roles.items():
        margs.check_remote_code(role, path, trust_remote_code)
    try:
        return roles, pair_tokenizers(roles, trust_remote_code), config
    except ValueError as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:  # a hub model with custom code
            raise ModelArgsError(f"{str(err).splitlines()[0]}: it runs custom code; pass trust_remote_code=true "
                                 "in --model_args if you trust it") from None
        raise ModelArgsError(str(err)) from None
