"""Shared names of per-token trace fields and summaries, and the summary arithmetic.

Every layer (decoding, lm-eval adapter, analysis) uses these exact words; see ../shared/STYLE.md.
This module is numpy-only so the analysis layer can import it without torch.

A *trace* describes one generation (or one teacher-forced continuation) as parallel per-token arrays:

=================  =======  ===========================================================================
field              dtype    meaning
=================  =======  ===========================================================================
``token_id``       int64    the emitted (or teacher-forced) token
``source``         int8     1 = System 1 chose this token, 2 = System 2 did
``llm_called``     bool     System 2 was evaluated at this token
``handoff``        bool     System 2's token differs from System 1's greedy token (False where not called)
``s1_entropy``     float32  entropy (nats) of System 1's next-token distribution (temperature 1)
``s1_top1_prob``   float32  System 1's top-1 probability
``s1_margin``      float32  System 1's top-1 minus top-2 probability
``s2_entropy``     float32  the same for System 2's distribution; NaN where System 2 was not evaluated
``s2_top1_prob``   float32  ″
``s2_margin``      float32  ″
``accepted``       int8     speculative decoding: 1 = accepted draft, 0 = token that replaced a rejected
                            draft, -1 = not a draft position (bonus token, or another method)
``base_handoff``   int8     proxy tuning: 1 = System 2's token differs from the untuned base's
                            (``small_base``) greedy token, 0 = it does not or System 2 was not called;
                            -1 = no base model (every other method). FS-GEN's proxy-tuning count.
=================  =======  ===========================================================================

Top-K traces (``trace_topk=K``): per token ``s1_topk_ids`` / ``s1_topk_probs`` ``[K]`` (System 1's K most
likely tokens, descending) and ``s2_topk_ids`` / ``s2_topk_probs`` (System 2's; ids -1 and probs NaN where
System 2 was not evaluated). They are kept out of the JSON record and written to a Parquet side file
(:func:`topk_path`, columns :data:`TOPK_COLUMNS`).

Per-generation counters (speculative decoding only, 0 otherwise): ``drafted_tokens``,
``accepted_tokens``, ``verification_steps``.

In JSON (trace files) NaN and -1 become ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

TOKEN_FIELDS: tuple[str, ...] = (
    "token_id",
    "source",
    "llm_called",
    "handoff",
    "s1_entropy",
    "s1_top1_prob",
    "s1_margin",
    "s2_entropy",
    "s2_top1_prob",
    "s2_margin",
    "accepted",
    "base_handoff",
)
FIELD_DTYPES: dict[str, Any] = {
    "token_id": np.int64,
    "source": np.int8,
    "llm_called": np.bool_,
    "handoff": np.bool_,
    "s1_entropy": np.float32,
    "s1_top1_prob": np.float32,
    "s1_margin": np.float32,
    "s2_entropy": np.float32,
    "s2_top1_prob": np.float32,
    "s2_margin": np.float32,
    "accepted": np.int8,
    "base_handoff": np.int8,
}
# fields a trace file written before they existed may lack, and the value they then take
OPTIONAL_FIELDS: dict[str, int] = {"base_handoff": -1}
TOPK_FIELDS: tuple[str, ...] = ("s1_topk_ids", "s1_topk_probs", "s2_topk_ids", "s2_topk_probs")
# the Parquet side file: one row per token, keyed to the JSONL record by its 0-based line number
TOPK_COLUMNS: tuple[str, ...] = ("record", "token", *TOPK_FIELDS, "doc_id", "task")
COUNTERS: tuple[str, ...] = ("drafted_tokens", "accepted_tokens", "verification_steps")
SUMMARY_KEYS: tuple[str, ...] = (
    "generated_tokens",
    "collaboration_rate",
    "llm_call_rate",
    "acceptance_rate",
    "mean_acceptance_length",
    # FS-GEN's own conventions, beside ours (docs/analysis.md maps each to the paper's quantity)
    "handoffs_per_call",
    "rejections_per_round",
    "base_collaboration_rate",
)

Trace = dict[str, np.ndarray]


def empty_trace() -> Trace:
    """A trace of zero tokens with the right dtypes."""
    return {k: np.zeros(0, dtype=FIELD_DTYPES[k]) for k in TOKEN_FIELDS}


def topk_path(jsonl: str | Path) -> Path:
    """The top-K side file of a trace file: the same path with ``.jsonl`` (or a Parquet trace's ``.parquet``)
    replaced by ``.topk.parquet``, so a trace converted to Parquet keeps its side file."""
    jsonl = Path(jsonl)
    if jsonl.suffix not in (".jsonl", ".parquet") or jsonl.name.endswith(".topk.parquet"):
        raise ValueError(f"{jsonl}: a trace file ends in .jsonl or .parquet")
    return jsonl.with_suffix(".topk.parquet")


def summarize(
    traces: Iterable[Mapping[str, Any]],
    counters: Iterable[Mapping[str, int]] | None = None,
) -> dict[str, float | int | None]:
    """Pool per-token traces into the shared summary.

    Args:
        traces: per-generation mappings holding at least ``handoff`` and ``llm_called`` arrays (shape [T_i]);
            ``accepted`` and ``base_handoff`` where present.
        counters: per-generation speculative counters (``drafted_tokens``, ``accepted_tokens``,
            ``verification_steps``); omit or pass zeros for non-speculative methods.

    Returns:
        ``generated_tokens`` (sum of T_i); ``collaboration_rate`` = handoffs / tokens; ``llm_call_rate`` =
        tokens where System 2 was evaluated / tokens; ``acceptance_rate`` = accepted / drafted and
        ``mean_acceptance_length`` = 1 + accepted / verification steps (vLLM's definition), ``None`` where
        nothing was drafted. Rates are ``None`` when no token was generated.

        FS-GEN's conventions: ``handoffs_per_call`` = handoffs / tokens where System 2 was evaluated
        (``None`` without a call); ``rejections_per_round`` = verification rounds that rejected a draft
        (tokens with ``accepted`` 0: one per such round) / verification rounds (``None`` when nothing was
        verified); ``base_collaboration_rate`` = tokens whose ``base_handoff`` is 1 / tokens (``None`` when
        no token has a base model, i.e. every method but proxy tuning).
    """
    n = handoffs = calls = rejected = base = 0
    has_base = False
    for t in traces:
        h = np.asarray(t["handoff"], dtype=bool)
        n += int(h.size)
        handoffs += int(h.sum())
        calls += int(np.asarray(t["llm_called"], dtype=bool).sum())
        if t.get("accepted") is not None:
            rejected += int((as_ints(t["accepted"]) == 0).sum())
        if t.get("base_handoff") is not None:
            b = as_ints(t["base_handoff"])
            has_base |= bool((b >= 0).any())
            base += int((b == 1).sum())
    drafted = accepted = steps = 0
    for c in counters or ():
        drafted += int(c.get("drafted_tokens", 0))
        accepted += int(c.get("accepted_tokens", 0))
        steps += int(c.get("verification_steps", 0))
    return {
        "generated_tokens": n,
        "collaboration_rate": handoffs / n if n else None,
        "llm_call_rate": calls / n if n else None,
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_acceptance_length": 1.0 + accepted / steps if steps else None,
        "handoffs_per_call": handoffs / calls if calls else None,
        "rejections_per_round": rejected / steps if steps else None,
        "base_collaboration_rate": base / n if n and has_base else None,
    }


def as_ints(values: Any) -> np.ndarray:
    """An int8-style field as ints, from arrays or JSON lists (``None`` = -1, ``True``/``False`` = 1/0)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.int64)
    return np.asarray([-1 if v is None else int(v) for v in values], dtype=np.int64)


def _json_list(field: str, values: np.ndarray) -> list:
    """One field's array as JSON values, a whole array at a time (a trace file holds millions): ints, bools,
    ``None`` for -1 in ``accepted``/``base_handoff`` and for NaN, floats rounded to 6 decimals."""
    a = np.asarray(values)
    if field in ("accepted", "base_handoff"):
        return [None if v < 0 else bool(v) for v in a.astype(np.int64).tolist()]
    if field in ("llm_called", "handoff"):
        return a.astype(bool).tolist()
    if field in ("token_id", "source"):
        return a.astype(np.int64).tolist()
    f = a.astype(np.float64)
    out = np.round(f, 6).tolist()
    nan = np.isnan(f)
    return [None if m else v for v, m in zip(out, nan.tolist())] if nan.any() else out


def trace_to_json(trace: Mapping[str, np.ndarray]) -> dict[str, list]:
    """Per-token arrays → JSON-ready lists (NaN and -1 become ``None``)."""
    return {k: _json_list(k, trace[k]) for k in TOKEN_FIELDS}


# Version of the trace record layout. Records without ``schema_version`` (written before it existed) are read as
# version 1; any other version is refused rather than misread.
SCHEMA_VERSION = 1
_PROB_FIELDS = ("s1_top1_prob", "s1_margin", "s2_top1_prob", "s2_margin")
MAX_TOKEN_ID = 2**31  # no vocabulary is larger; a bigger id would overflow the arrays it is read into
_EPS = 1e-5  # values are written rounded to 6 digits


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_value(field: str, v: Any) -> str | None:
    """Why ``v`` is not a valid JSON value of ``field``, or None."""
    if field == "token_id":
        ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_TOKEN_ID
        ok = ok or (isinstance(v, float) and v.is_integer() and 0 <= v < MAX_TOKEN_ID)
        return None if ok else "a token id (an integer in [0, 2**31))"
    if field == "source":
        return None if _is_number(v) and v in (1, 2) else "1 or 2"
    if field in ("llm_called", "handoff", "accepted", "base_handoff"):
        ok = isinstance(v, bool) or (_is_number(v) and v in (0, 1)) or (v is None and field != "llm_called")
        return None if ok else ("true, false, 0, 1" + ("" if field == "llm_called" else " or null"))
    if v is None:
        return None
    if not _is_number(v) or not math.isfinite(v):
        return "a finite number or null"
    if field in _PROB_FIELDS and not -_EPS <= v <= 1 + _EPS:
        return "in [0, 1]"
    if field.endswith("_entropy") and v < -_EPS:
        return "a number >= 0"
    return None


def check_record(obj: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the field (and token) of a trace record with a wrong version, type or range."""
    version = obj.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {version!r} is not one this fsgen_eval reads ({SCHEMA_VERSION})")
    missing = [k for k in TOKEN_FIELDS if k not in obj and k not in OPTIONAL_FIELDS]
    if missing:
        raise ValueError(f"trace record lacks field(s) {', '.join(missing)}")
    if not isinstance(obj["token_id"], list):
        raise ValueError("trace field 'token_id' must be a list")
    _check_meta(obj)
    n = len(obj["token_id"])
    for k in TOKEN_FIELDS:
        if k not in obj:  # an optional field, from a file written before it existed
            continue
        vals = obj[k]
        if not isinstance(vals, list):
            raise ValueError(f"trace field {k!r} must be a list")
        if len(vals) != n:
            raise ValueError(f"trace field {k!r} has {len(vals)} values, token_id has {n}")
        for i, v in enumerate(vals):
            why = _check_value(k, v)
            if why is not None:
                raise ValueError(f"trace field {k!r}, token {i}: {v!r} is not {why}")


def _non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_meta(obj: Mapping[str, Any]) -> None:
    """A record's request fields: ``doc_id`` an integer >= 0, ``task`` a string, the speculative counters
    integers >= 0 (each where present: hand-made and older files may lack them)."""
    if "doc_id" in obj and obj["doc_id"] is not None and not _non_negative_int(obj["doc_id"]):
        raise ValueError(f"doc_id {str(obj['doc_id'])[:40]} is not an integer >= 0")
    if "task" in obj and obj["task"] is not None and not isinstance(obj["task"], str):
        raise ValueError(f"task is a {type(obj['task']).__name__}, not a string")
    for k in COUNTERS:
        if k in obj and not _non_negative_int(obj[k]):
            raise ValueError(f"counter {k!r} is {str(obj[k])[:40]}, not an integer >= 0")


def trace_from_json(obj: Mapping[str, Any]) -> Trace:
    """Inverse of :func:`trace_to_json`; raises ``ValueError`` naming the field of a record that
    :func:`check_record` refuses."""
    check_record(obj)
    n = len(obj["token_id"])
    out: Trace = {}
    for k in TOKEN_FIELDS:
        if k not in obj:  # a file from before the field existed
            out[k] = np.full(n, OPTIONAL_FIELDS[k], dtype=FIELD_DTYPES[k])
            continue
        vals = obj[k]
        if k in ("accepted", "base_handoff"):
            vals = [-1 if v is None else int(bool(v)) for v in vals]
        elif k == "handoff":
            vals = [bool(v) for v in vals]  # null: not called, so no handoff
        elif FIELD_DTYPES[k] is np.float32:
            vals = [math.nan if v is None else v for v in vals]
        out[k] = np.asarray(vals, dtype=FIELD_DTYPES[k])
    return out


# ----------------------------------------------------------------------------------------- run record
@dataclass
class RunInfo:
    """One ``lm_eval --model fsgen`` run: written by the adapter as the results' ``config["fsgen"]`` and
    read back by the analysis. JSON keys are the field names."""

    small: str  # System 1: path or hub id
    large: str  # the large model System 2 is computed from
    method: str  # oracle | speculative | contrastive | proxy | a registered method
    router: str  # always | never | max_prob | margin | entropy | a registered router
    small_base: str | None = None  # proxy tuning: the untuned base of `small`
    threshold: float | None = None  # the router's threshold
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters, defaults filled in
    router_params: dict[str, Any] = field(default_factory=dict)  # the router's parameters (threshold aside)
    run_id: str | None = None  # also in every trace record of the run (None: written before run ids)
    summary: dict[str, Any] = field(default_factory=dict)  # SUMMARY_KEYS over every task and rank
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> SUMMARY_KEYS
    tokens_per_second: float | None = None  # rank 0's generated tokens / its seconds in the engine
    traces: list[str] = field(default_factory=list)  # this run's trace files (names beside the results)
    batch_size: int | str | None = None  # as given: an int, auto or auto:N
    auto_batch_sizes: list[int] = field(default_factory=list)  # what batch_size=auto picked, in order
    code_eval_sandbox: list[str] | None = None  # the sandbox layers generated programs get (None: none may run)
    replay: dict[str, Any] | None = None  # `fsgen-eval replay`: which System 2 run, how faithful (None: lockstep)
    speculative: dict[str, Any] | None = None  # replay --draft-lengths: greedy speculative counters per draft length
    trace_topk: int = 0  # K > 0: top-K ids and probabilities per token in each trace's Parquet side file
    conventions: list[str] = field(default_factory=list)  # where its numbers follow FS-GEN's conventions

    REQUIRED = ("small", "large", "method", "router")

    def task_summary(self, task: str) -> dict[str, Any]:
        """The summary of one task (the overall one when the run has no per-task entry for it)."""
        return self.per_task.get(task) or self.summary

    def to_json(self) -> dict[str, Any]:
        """The ``config["fsgen"]`` object."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, where: str = "config['fsgen']") -> "RunInfo":
        """Read ``config["fsgen"]``; a ``ValueError`` naming ``where`` and the key for a missing or
        mistyped field. Keys this version does not know are ignored (newer writers may add some)."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"{where} is not an object")
        for key in cls.REQUIRED:
            if not isinstance(obj.get(key), str):
                raise ValueError(f"{where} lacks {key!r}" if key not in obj else f"{where}[{key!r}] is not a string")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in obj.items() if k in known and v is not None}
        for key, kind in (("params", dict), ("router_params", dict), ("summary", dict), ("per_task", dict),
                          ("traces", list), ("auto_batch_sizes", list), ("code_eval_sandbox", list),
                          ("conventions", list), ("replay", dict), ("speculative", dict)):
            if not isinstance(values.get(key, kind()), kind):
                raise ValueError(f"{where}[{key!r}] is not a{'n object' if kind is dict else ' list'}")
        for name, summ in [("summary", values.get("summary", {})), *((f"per_task[{t!r}]", v) for t, v in
                                                                   values.get("per_task", {}).items())]:
            tokens = summ.get("generated_tokens") if isinstance(summ, Mapping) else None
            if not isinstance(summ, Mapping) or (tokens is not None and not _non_negative_int(tokens)):
                raise ValueError(f"{where}: {name} is not a summary with generated_tokens an integer >= 0")
        for key in ("threshold", "tokens_per_second"):
            if key in values and (isinstance(values[key], bool) or not isinstance(values[key], (int, float))):
                raise ValueError(f"{where}[{key!r}] is not a number")
        return cls(**values)
