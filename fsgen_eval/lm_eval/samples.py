"""System 2's generations for a replay: read from an lm-eval output folder, tokenized as ``HFLM`` encodes.

Two inputs (``fsgen-eval replay``; docs/replay.md):

- **trace** — a ``--model fsgen`` run whose emitted tokens are the large model's greedy tokens (method
  ``oracle`` or greedy ``speculative`` with router ``always``, or router ``never`` with System 1 the model
  itself): ``token_id`` of each ``generate_until`` trace record is exact. A trace record stores only the
  prompt's hash, so the prompt comes from lm-eval's samples file written beside it (``--log_samples``),
  matched by ``(task, doc_id, prompt_hash)``.
- **samples** — lm-eval's ``--log_samples`` files of any backend (``hf``, ``vllm``, ``fsgen``): the prompt
  is the request's first argument, the generation the unfiltered response ``resps[0][0]``, re-tokenized as
  ``HFLM._encode_pair`` does (encode context + continuation, keep what follows the context's tokens).

Every problem is a one-line ``ValueError`` / ``FileNotFoundError`` naming the file, raised before any model
weight is read. Needs a tokenizer, no torch model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs
from lm_eval.utils import hash_string

from fsgen_eval.core.guards import cut
from fsgen_eval.core.jsonl import read_json, read_jsonl
from fsgen_eval.core.runs import parse_model_args, recorded_trace, results_files
from fsgen_eval.core.schema import RunInfo, trace_from_json

# runs of --model fsgen whose emitted tokens are one model's greedy tokens: (method, router) -> the model
_GREEDY_TRAJECTORY = {("oracle", "always"): "large", ("speculative", "always"): "large"}
DEFAULT_MAX_GEN_TOKS = 256  # HFLM's and vLLM's default
MAX_GEN_TOKS = 1 << 20  # beyond any model's context: a larger max_gen_toks is a broken file, not a run


@dataclass
class Request:
    """One ``generate_until`` request of System 2's run."""

    task: str
    doc_id: int
    prompt_hash: str
    context: str
    until: list[str]  # lm-eval's stop strings, EOS's text added as HFLM adds it
    max_gen_toks: int
    text: str  # the unfiltered response
    token_ids: list[int] | None = None  # exact ids (trace input); None until tokenized (samples input)
    context_ids: list[int] = field(default_factory=list)
    retokenized_exactly: bool | None = None  # samples input: decode(ids) == text
    # trace input: the trajectory model's own statistics at each token, as its run recorded them
    # (argmax = the token, entropy, top1_prob, margin); None where the trace does not hold them
    model_stats: dict[str, Any] | None = None


@dataclass
class System2Run:
    """System 2's run: its results file (whole), which model it is, and its requests in file order."""

    folder: Path
    results_path: Path
    results: dict[str, Any]
    model: str  # System 2's model (path or hub id)
    backend: str  # lm-eval's model class: hf, vllm, fsgen, ...
    source: str  # "trace" or "samples"
    requests: list[Request]
    model_args: dict[str, Any]
    tokenizer_compared: bool | None = None  # replay: whether System 2's own tokenizer could be loaded and compared

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.requests})


def _model_args(path: Path, obj: Any) -> dict[str, Any]:
    """``config["model_args"]``: lm-eval writes an object (older versions the ``k=v,...`` string given on its
    command line, parsed by the one rule, :func:`fsgen_eval.core.runs.parse_model_args`); anything else, or a
    string with a part that is not ``key=value``, is refused rather than read as no arguments."""
    if obj is None:
        return {}
    if not isinstance(obj, (dict, str)):
        raise ValueError(f"{path}: config['model_args'] is a {type(obj).__name__}, not an object")
    try:
        return parse_model_args(obj)
    except ValueError as err:
        raise ValueError(f"{path}: config['model_args'] {cut(str(obj))!r}: {err}") from None


def _results_file(folder: Path) -> Path:
    if folder.is_file():
        return folder
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such file or folder")
    found = results_files(folder)
    if not found:
        raise ValueError(f"{folder}: no results_*.json below this folder (not an lm-eval output folder)")
    if len(found) > 1:
        raise ValueError(f"{folder}: {len(found)} results_*.json files below this folder; name one of them")
    return found[0]


def _stamp(results_path: Path) -> str:
    return results_path.stem[len("results_"):]


def _check_tasks(path: Path, results: dict[str, Any]) -> list[str]:
    configs = results.get("configs")
    if not isinstance(configs, dict) or not configs:
        raise ValueError(f"{path}: results file has no 'configs' (not written by lm-eval?)")
    for task, conf in sorted(configs.items()):
        kind = (conf or {}).get("output_type")
        if kind != "generate_until":
            raise ValueError(f"{path}: task {task!r} is a {kind} task, scored by log-likelihoods: nothing to "
                             "replay (a replay needs System 2's generated tokens; run it with --model fsgen)")
    return sorted(configs)


def read_samples_file(path: Path) -> list[dict[str, Any]]:
    """The lines of one ``samples_<task>_<ts>.jsonl`` (one per request and filter)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = []
    # split at "\n" only (read_jsonl): a generation may hold U+2028 or U+0085, which str.splitlines splits at
    for n, obj in read_jsonl(path, strict=True):
        args = obj.get("arguments") if isinstance(obj, dict) else None
        first = (args or {}).get("gen_args_0") if isinstance(args, dict) else None
        if not isinstance(first, dict) or "arg_0" not in first or "doc_id" not in obj or "resps" not in obj:
            raise ValueError(f"{path}:{n}: not an lm-eval samples line (needs doc_id, arguments.gen_args_0, resps)")
        out.append(obj)
    if not out:
        raise ValueError(f"{path}: samples file is empty")
    return out


def _request(path: Path, n: int, task: str, line: dict[str, Any], eos_text: str | None) -> Request:
    args = line["arguments"]["gen_args_0"]
    context, kwargs = args["arg_0"], args.get("arg_1")
    if not isinstance(context, str) or not isinstance(kwargs, dict):
        raise ValueError(f"{path}: doc_id {line['doc_id']}: not a generate_until request (arguments are not "
                         "a context and generation kwargs)")
    kw = normalize_gen_kwargs(kwargs, DEFAULT_MAX_GEN_TOKS)
    if kw.get("do_sample") or float(kw.get("temperature") or 0.0) > 0:
        raise ValueError(f"{path}: doc_id {line['doc_id']} was sampled (do_sample={kwargs.get('do_sample')}, "
                         f"temperature={kwargs.get('temperature')}): an oracle replay needs greedy System 2")
    resps = line["resps"]
    try:
        text = resps[0][0]
    except (IndexError, TypeError, KeyError):
        raise ValueError(f"{path}: doc_id {line['doc_id']}: 'resps' holds no response") from None
    if not isinstance(text, str):
        raise ValueError(f"{path}: doc_id {line['doc_id']}: the response is not text")
    until = handle_stop_sequences(list(kw.get("until") or []), eos=eos_text)
    max_gen = kw.get("max_gen_toks")
    if isinstance(max_gen, bool) or not isinstance(max_gen, (int, float)) or not 1 <= max_gen <= MAX_GEN_TOKS \
            or max_gen != int(max_gen):
        raise ValueError(f"{path}: doc_id {cut(line['doc_id'])}: max_gen_toks {cut(max_gen)} is not an integer in "
                         f"[1, {MAX_GEN_TOKS}]")
    doc_id = line["doc_id"]
    if isinstance(doc_id, bool) or not isinstance(doc_id, int) or doc_id < 0:
        raise ValueError(f"{path}: doc_id {cut(doc_id)} is not an integer >= 0")
    return Request(task, doc_id, line.get("prompt_hash") or hash_string(context), context,
                   until, int(max_gen), text)


def _samples_requests(results_path: Path, tasks: list[str], eos_text: str | None) -> list[Request]:
    stamp = _stamp(results_path)
    reqs = []
    for task in tasks:
        path = results_path.parent / f"samples_{task}_{stamp}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no samples file for task {task!r} beside {results_path.name} "
                                    "(run System 2 with --log_samples)")
        seen: set[tuple[int, str]] = set()
        for n, line in enumerate(read_samples_file(path), 1):
            req = _request(path, n, task, line, eos_text)
            key = (req.doc_id, req.prompt_hash)
            if key not in seen:  # one line per filter (gsm8k: strict-match and flexible-extract)
                seen.add(key)
                reqs.append(req)
    return reqs


def _trace_files(results_path: Path, run: RunInfo) -> list[Path]:
    """The trace files ``config.fsgen.traces`` names (found by :func:`fsgen_eval.core.runs.recorded_trace`). A
    replay needs every token, so a missing one is refused."""
    files = []
    for name in run.traces:
        recorded, hit = recorded_trace(results_path, name)
        if hit is None:
            raise FileNotFoundError(f"{results_path}: its trace file {recorded} is missing")
        if hit not in files:
            files.append(hit)
    return files


def _trace_records(path: Path, run_id: str | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(record, trace arrays)`` of ``run_id`` in one trace file (all of them for a run written before run
    ids); a file several runs appended to (``trace_append``) keeps the others' records out."""
    records = []
    for n, rec in read_jsonl(path, strict=True):  # a torn final line (a killed writer) is skipped with a warning
        if run_id is not None and rec.get("run_id") != run_id:
            continue
        try:
            records.append((rec, trace_from_json(rec)))  # the schema's checks of every field
        except ValueError as err:
            raise ValueError(f"{path}:{n}: {err}") from None
    if not records:
        raise ValueError(f"{path}: no trace record of run {run_id}" if run_id else f"{path}: trace file is empty")
    return records


def _trace_requests(results_path: Path, run: RunInfo, by_prompt: dict[tuple[str, int, str], Request],
                    trace_files: list[Path]) -> list[Request]:
    reqs = []
    prefix = _stats_prefix(run)
    for tf in trace_files:
        for rec, trace in _trace_records(tf, run.run_id):
            if rec.get("request_type") != "generate_until":
                raise ValueError(f"{tf}: a {rec.get('request_type')} record ({rec.get('task')} doc_id "
                                 f"{rec.get('doc_id')}): nothing to replay (only generations are)")
            key = (rec.get("task"), rec.get("doc_id"), rec.get("prompt_hash"))
            sample = by_prompt.pop(key, None)
            if sample is None:
                raise ValueError(f"{tf}: no samples line beside it for task {key[0]!r} doc_id {key[1]} "
                                 f"prompt_hash {key[2]}: the samples file does not belong to this trace")
            sample.token_ids = [int(t) for t in rec["token_id"]]
            sample.model_stats = _model_stats(trace, prefix)
            reqs.append(sample)
    if by_prompt:
        task, doc, _ = next(iter(by_prompt))
        raise ValueError(f"{results_path}: {len(by_prompt)} request(s) of the samples files have no trace "
                         f"record (e.g. {task} doc_id {doc}); was the run killed?")
    return reqs


def _stats_prefix(run: RunInfo) -> str | None:
    """Which trace fields hold the trajectory model's own distribution: ``s1_`` where it ran alone as System 1
    (router ``never``), ``s2_`` for the oracle with router ``always`` (System 2 is the large model at every
    token); ``None`` for a speculative run (System 2 evaluated at verified positions only)."""
    if run.router == "never":
        return "s1_"
    return "s2_" if (run.method, run.router) == ("oracle", "always") else None


def _model_stats(trace: dict[str, Any], prefix: str | None) -> dict[str, Any] | None:
    """``argmax`` (the emitted token: the trajectory is greedy), ``entropy``, ``top1_prob``, ``margin`` of one
    record, or ``None`` without them (a run with ``trace=false`` statistics, or NaN anywhere)."""
    if prefix is None:
        return None
    out = {"argmax": trace["token_id"]}
    for k in ("entropy", "top1_prob", "margin"):
        v = trace[prefix + k]
        if np.isnan(v).any():
            return None
        out[k] = v
    return out


def read_system2_run(folder: Path, source: str = "auto") -> System2Run:
    """System 2's run in ``folder`` (an lm-eval output folder or its ``results_*.json``).

    ``source``: ``trace`` (a ``--model fsgen`` run's trace files, prompts from the samples files), ``samples``
    (lm-eval's samples files of any backend), or ``auto`` (trace files if there are, else samples).
    """
    results_path = _results_file(Path(folder))
    results = read_json(results_path)
    if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
        raise ValueError(f"{results_path}: not an lm-eval results file (no 'config' object)")
    tasks = _check_tasks(results_path, results)
    config = results["config"]
    backend = str(config.get("model"))
    margs = _model_args(results_path, config.get("model_args"))
    if source not in ("trace", "samples", "auto"):
        raise ValueError(f"unknown replay source {source!r} (trace, samples or auto)")
    fsgen = None
    if config.get("fsgen") is not None:  # a --model fsgen run: its run record (core.schema.RunInfo)
        fsgen = RunInfo.from_json(config["fsgen"], where=f"{results_path}: config['fsgen']")
    trace_files = _trace_files(results_path, fsgen) if fsgen is not None and source != "samples" else []
    if source == "auto":
        source = "trace" if trace_files else "samples"
    if source == "trace":
        if fsgen is None or not trace_files:
            raise ValueError(f"{results_path}: no --model fsgen trace files beside it (use --from samples)")
        model = _trajectory_model(results_path, fsgen)
    else:
        model = margs.get("pretrained") or (fsgen and _trajectory_model(results_path, fsgen))
        if not model:
            raise ValueError(f"{results_path}: config['model_args'] names no 'pretrained' model")
    eos_text = results.get("tokenizer_eos_token")
    eos_text = eos_text[0] if isinstance(eos_text, list) else eos_text
    reqs = _samples_requests(results_path, tasks, eos_text)
    if source == "trace":
        reqs = _trace_requests(results_path, fsgen, {(r.task, r.doc_id, r.prompt_hash): r for r in reqs},
                               trace_files)
    return System2Run(results_path.parent, results_path, results, str(model), backend, source, reqs, margs)


def _trajectory_model(path: Path, fsgen: RunInfo) -> str:
    """The model whose greedy tokens a ``--model fsgen`` run emitted; refuses runs that mix models."""
    method, router = fsgen.method, fsgen.router
    if router == "never":
        return fsgen.small
    role = _GREEDY_TRAJECTORY.get((method, router))
    if role is None:
        raise ValueError(f"{path}: method={method}, router={router}: its tokens are not one model's greedy "
                         "tokens, so no oracle can be replayed from it (oracle or speculative with router "
                         "always, or router never)")
    return str(getattr(fsgen, role))


# ------------------------------------------------------------------------------------------ tokenizing
def _special_kwargs(tokenizer: Any, text: str, add_bos_token: bool | None) -> dict[str, Any]:
    """``HFLM.tok_batch_encode``'s choice of ``add_special_tokens`` for a causal model."""
    if has_bos_prefix(text, getattr(tokenizer, "bos_token", None)):
        return {"add_special_tokens": False}
    return {} if add_bos_token is None else {"add_special_tokens": add_bos_token}


def context_ids(tokenizer: Any, context: str, add_bos_token: bool | None = None) -> list[int]:
    """The prompt as ``HFLM.generate_until`` encodes it (``tok_batch_encode``, before truncation)."""
    return list(tokenizer(context, **_special_kwargs(tokenizer, context, add_bos_token))["input_ids"])


def generated_ids(tokenizer: Any, context: str, text: str, add_bos_token: bool | None = None) -> list[int]:
    """The generated text's tokens as a ``generate_until`` backend emitted them: after the whole prompt, its
    trailing whitespace included (MBPP's prompt ends in ``"[BEGIN]\\n"``), never merged into it.

    Unlike ``HFLM._encode_pair`` (loglikelihood: the context's trailing whitespace moves to the continuation),
    nothing moves: context + text is encoded whole and the context's own tokens cut off, which keeps the
    text's first-token segmentation of tokenizers that mark word starts (SentencePiece); where the text's
    first token would merge with the context's last one (the prefix then differs), the text is encoded alone.
    """
    kw = _special_kwargs(tokenizer, context, add_bos_token)
    ctx = tokenizer(context, **kw)["input_ids"]
    whole = tokenizer(context + text, **kw)["input_ids"]
    if list(whole[: len(ctx)]) == list(ctx):
        return list(whole[len(ctx):])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# lm-eval model classes built on HFLM, which cut a long prompt to its last max_length - max_gen_toks tokens
HFLM_BACKENDS: tuple[str, ...] = ("hf", "fsgen")


def tokenize_run(run: System2Run, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Fill each request's ``context_ids`` (and, for samples input, ``token_ids``), checking truncation.

    Returns per-task counts: requests, and (samples input) how many re-tokenize to exactly the generated
    text (``decode(ids) == text``); the others are kept, with their ids as encoded, and listed. A prompt
    longer than ``max_length - max_gen_toks`` was cut from the left by an HFLM backend (``hf``, ``fsgen``):
    cut here the same way and listed (``truncated_doc_ids``); any other backend's cut is not known, so
    such a run is refused.
    """
    add_bos = run.model_args.get("add_bos_token")
    add_bos = None if add_bos is None else str(add_bos).lower() == "true"
    counts: dict[str, Any] = {}
    for r in run.requests:
        r.context_ids = context_ids(tokenizer, r.context, add_bos)
        room = max_length - r.max_gen_toks
        c = counts.setdefault(r.task, {"requests": 0, "retokenized_exactly": 0, "mismatched_doc_ids": [],
                                       "truncated_doc_ids": []})
        if len(r.context_ids) > room:
            if run.backend not in HFLM_BACKENDS:
                raise ValueError(f"{run.results_path}: {r.task} doc_id {r.doc_id}: the prompt has "
                                 f"{len(r.context_ids)} tokens, more than max_length {max_length} - max_gen_toks "
                                 f"{r.max_gen_toks} = {room}: the {run.backend} backend cut it in a way the replay "
                                 "does not know, so System 2 saw another prompt")
            r.context_ids = r.context_ids[-room:]  # HFLM.tok_batch_encode(left_truncate_len=room)
            c["truncated_doc_ids"].append(r.doc_id)
        c["requests"] += 1
        if r.token_ids is None:
            r.token_ids = generated_ids(tokenizer, r.context, r.text, add_bos)
            r.retokenized_exactly = tokenizer.decode(r.token_ids, skip_special_tokens=True) == r.text
            if r.retokenized_exactly:
                c["retokenized_exactly"] += 1
            else:
                c["mismatched_doc_ids"].append(r.doc_id)
    if run.source == "trace":
        for c in counts.values():
            del c["retokenized_exactly"], c["mismatched_doc_ids"]
    return counts
