"""``fsgen-eval label`` on one run: read an oracle (router ``always``) run, lockstep or replayed, check it, find
System 1's token at each handoff, sample, continue with System 2 and score with the task's own filter and metric.

Everything that can be checked without weights is checked first (:func:`read_label_run`): the run is method
``oracle`` with router ``always``; every task is ``generate_until`` and greedy (lm-eval's samples lines, read by
:func:`fsgen_eval.lm_eval.samples.read_system2_run`, refuse a sampled or loglikelihood task); the prompts come from
the samples files beside the results or, for a replayed run, beside the System 2 run it names
(``config.fsgen.replay.system2_results``; a relative path is tried against the folders above the results file).

System 1's token: the trace records System 1's statistics but not its argmax token, so System 1 is
teacher-forced once over the prompt and System 2's tokens of each request holding a sampled handoff
(:func:`fsgen_eval.engine.replay.score_trajectories`); a handoff where that argmax equals System 2's token
(the trace's flag and the recomputation disagree) cannot be labelled and is counted, not dropped silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.core.jsonl import read_json, read_jsonl
from fsgen_eval.core.schema import RunInfo, trace_from_json
from fsgen_eval.experiments import label as LB

SIGNALS = ("s1_entropy", "s1_top1_prob", "s1_margin")


@dataclass
class LabelRun:
    """One oracle run to label: its identity, its requests and every handoff (System 1's token unknown: -1)."""

    results_path: Path
    info: RunInfo
    prompt_source: Path  # the results file whose samples files hold the prompts
    docs: dict[LB.DocKey, LB.Doc]
    handoffs: list[LB.Handoff]
    signals: dict[tuple[str, int, int], tuple[float, float, float]]  # (task, doc, position) -> SIGNALS
    tokens: dict[LB.DocKey, int]  # generated tokens per request
    system2_seconds: float | None  # the System 2 run's own wall time (lm-eval's total_evaluation_time_seconds)
    system2_tokens: int | None
    own_recorded: dict[tuple[str, int, str], float] = field(default_factory=dict)  # (task, doc, filter) -> metric

    @property
    def run_id(self) -> str:
        return str(self.info.run_id)


def results_file(path: Path) -> Path:
    """``path`` itself, or the one ``results_*.json`` below the folder ``path``."""
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    found = sorted(path.rglob("results_*.json"))
    if len(found) != 1:
        raise ValueError(f"{path}: {len(found)} results_*.json files below this folder; name one of them")
    return found[0]


def _resolve(name: str, results_path: Path) -> Path | None:
    """A path a run recorded (absolute, relative to where it started, or to a folder above the results file)."""
    given = Path(name)
    for base in [Path.cwd(), *results_path.resolve().parents]:
        cand = given if given.is_absolute() else base / given
        if cand.is_file():
            return cand
    return None


def prompt_source(results_path: Path, info: RunInfo, prompts: Path | None) -> Path:
    """The results file whose samples files hold this run's prompts (module doc)."""
    if prompts is not None:
        return results_file(prompts)
    if any(results_path.parent.glob("samples_*.jsonl")):
        return results_path
    named = (info.replay or {}).get("system2_results")
    found = _resolve(str(named), results_path) if named else None
    if found is None:
        raise FileNotFoundError(f"{results_path}: no samples files beside it and no System 2 run found "
                                f"({named or 'not a replay'}); give the prompts' run with --prompts")
    return found


def check_oracle(results_path: Path) -> RunInfo:
    """The run record, refusing anything but method ``oracle`` with router ``always`` (one line)."""
    res = read_json(results_path)
    if not isinstance(res, dict) or not isinstance((res.get("config") or {}).get("fsgen"), dict):
        raise ValueError(f"{results_path}: not a --model fsgen results file (no config['fsgen'])")
    info = RunInfo.from_json(res["config"]["fsgen"], where=f"{results_path}: config['fsgen']")
    if (info.method, info.router) != ("oracle", "always"):
        raise ValueError(f"{results_path}: method={info.method}, router={info.router}: labels need an oracle run "
                         "with router always (System 2's greedy tokens at every position)")
    if not info.traces:
        raise ValueError(f"{results_path}: the run wrote no trace files (run it with trace=true)")
    return info


def _trace_path(results_path: Path, name: str) -> Path:
    for cand in (results_path.parent / name, Path(name)):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{results_path}: its trace file {name} is missing")


def _recorded(path: Path) -> dict[tuple[str, int, str], float]:
    """lm-eval's own per-request metric (its first) per filter in the prompts' run, to check the scorer against:
    ``(task, doc_id, filter) -> value``."""
    stamp = path.stem[len("results_"):]
    out: dict[tuple[str, int, str], float] = {}
    for f in sorted(path.parent.glob(f"samples_*_{stamp}.jsonl")):
        task = f.name[len("samples_"):-len(f"_{stamp}.jsonl")]
        for _, line in read_jsonl(f):
            metric = (line.get("metrics") or [None])[0]
            if isinstance(line.get(metric), (int, float)) and not isinstance(line.get(metric), bool):
                out[(task, int(line["doc_id"]), str(line.get("filter")))] = float(line[metric])
    return out


def check_label_run(path: Path, prompts: Path | None = None, cache: dict[Path, Any] | None = None) -> Any:
    """The checks of :func:`read_label_run` that read no trace: the run record, and the prompts' run (its samples
    lines refuse a sampled or loglikelihood task, in one line); returns the prompts' run (``cache``d by file)."""
    from fsgen_eval.lm_eval.samples import read_system2_run

    rp = results_file(path)
    info = check_oracle(rp)
    src = prompt_source(rp, info, prompts)
    cache = {} if cache is None else cache
    if src.resolve() not in cache:
        cache[src.resolve()] = read_system2_run(src, "samples")
    return cache[src.resolve()]


def read_label_run(path: Path, prompts: Path | None = None, cache: dict[Path, Any] | None = None
                   ) -> tuple[LabelRun, Any]:
    """The run in ``path`` (folder or results file) and System 1's tokenizer; every check before a weight loads."""
    import copy

    from fsgen_eval.engine.pair import load_tokenizer
    from fsgen_eval.lm_eval.samples import tokenize_run

    rp = results_file(path)
    info = check_oracle(rp)
    src = prompt_source(rp, info, prompts)
    s2 = copy.deepcopy(check_label_run(rp, prompts, cache))  # tokenize_run fills it for this run's tokenizer
    tok = load_tokenizer(info.small, "small")
    max_length = s2.results.get("max_length") or read_json(rp).get("max_length")
    if not isinstance(max_length, int):
        raise ValueError(f"{src}: results file lacks 'max_length'")
    s2.results["max_length"] = max_length
    tokenize_run(s2, tok, max_length)
    by_key = {(r.task, r.doc_id): r for r in s2.requests}
    docs, handoffs, signals, tokens = {}, [], {}, {}
    for name in info.traces:
        tp = _trace_path(rp, name)
        for n, rec in read_jsonl(tp):
            if rec.get("run_id") != info.run_id:
                continue
            tr = trace_from_json(rec)
            key = (rec["task"], int(rec["doc_id"]))
            req = by_key.get(key)
            if req is None:
                raise ValueError(f"{tp}:{n}: {key[0]} doc_id {key[1]} has no request in {src}'s samples files")
            if rec.get("prompt_hash") and req.prompt_hash and rec["prompt_hash"] != req.prompt_hash:
                raise ValueError(f"{tp}:{n}: {key[0]} doc_id {key[1]}: its prompt hash differs from {src}'s")
            ids = [int(t) for t in tr["token_id"]]
            docs[key] = LB.Doc(list(req.context_ids), ids, req.max_gen_toks, tuple(req.until))
            tokens[key] = len(ids)
            for pos in np.flatnonzero(np.asarray(tr["handoff"], bool)):
                handoffs.append(LB.Handoff(info.run_id, key[1], int(pos), -1, ids[pos], len(ids), key[0]))
                signals[(key[0], key[1], int(pos))] = tuple(float(tr[s][pos]) for s in SIGNALS)
    if not docs:
        raise ValueError(f"{rp}: its trace files hold no record of run {info.run_id}")
    s2res = read_json(src)
    s2_tokens = None
    s2info = (s2res.get("config") or {}).get("fsgen")
    if isinstance(s2info, dict):
        s2_tokens = (s2info.get("summary") or {}).get("generated_tokens")
    return LabelRun(rp, info, src, docs, handoffs, signals, tokens, s2res.get("total_evaluation_time_seconds"),
                    s2_tokens, _recorded(src)), tok


def system1_tokens(backend: Any, tok: Any, run: LabelRun, handoffs: list[LB.Handoff], batch_size: int
                   ) -> tuple[list[LB.Handoff], list[LB.Handoff]]:
    """(handoffs with System 1's teacher-forced argmax token filled in, handoffs where it equals System 2's);
    ``backend`` is System 1 on the engine's seam (``engine.pair.load_backend``), scored as replay scores it."""
    from fsgen_eval.engine.replay import Trajectory, score_trajectories

    keys = sorted({(h.task, h.doc_id) for h in handoffs})
    trajs = [Trajectory(run.docs[k].prompt, run.docs[k].generation, len(run.docs[k].generation),
                        len(run.docs[k].generation), run.docs[k].max_gen_toks) for k in keys]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    stats = dict(zip(keys, score_trajectories(backend, trajs, pad, batch_size)))
    good, bad = [], []
    for h in handoffs:
        s1 = int(stats[(h.task, h.doc_id)]["argmax"][h.position])
        (bad if s1 == h.s2_token else good).append(LB.Handoff(h.run_id, h.doc_id, h.position, s1, h.s2_token,
                                                               h.length, h.task))
    return good, bad


class TaskScorer:
    """The task's own first filter and first metric over a text (lm-eval's public task API:
    ``build_filter_ensemble`` from the task's ``filter_list``, ``Task.process_results``); code tasks score
    through the metric their task loads, as the lm-eval run scored them (``fsgen_mbpp``: the project's sandbox;
    lm-eval's ``mbpp`` offline: the sandboxed ``code_eval`` in evaluate's cache, docs/lm_eval.md)."""

    def __init__(self, tasks: list[str], include_path: str | None):
        from lm_eval.tasks import TaskManager, get_task_dict

        flat: dict[str, Any] = {}

        def walk(d: Any) -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v)
                else:
                    flat[getattr(v, "config").task] = v
        walk(get_task_dict(tasks, TaskManager(verbosity="ERROR", include_path=include_path)))
        self.tasks = flat
        self.docs = {t: list(task.eval_docs) for t, task in flat.items()}
        self._built: dict[str, tuple[Any, str]] = {}

    def filter_and_metric(self, task: str) -> tuple[Any, str]:
        """(the first filter's ensemble, the first metric's name) of ``task``."""
        from lm_eval.filters import build_filter_ensemble

        if task in self._built:
            return self._built[task]
        cfg = self.tasks[task].config
        flist = cfg.filter_list or [{"name": "none", "filter": [{"function": "take_first"}]}]
        first = flist[0]
        comps = [[f["function"], {k: v for k, v in f.items() if k != "function"}] for f in first["filter"]]
        metric = cfg.metric_list[0]["metric"]  # a name, or a function (MBPP's !function utils.pass_at_1)
        self._built[task] = (build_filter_ensemble(first["name"], comps),
                             metric if isinstance(metric, str) else metric.__name__)
        return self._built[task]

    def __call__(self, key: LB.DocKey, text: str) -> tuple[float, str]:
        from lm_eval.api.instance import Instance

        task, doc_id = key
        t = self.tasks[task]
        doc = self.docs[task][doc_id]
        ens, metric = self.filter_and_metric(task)
        inst = Instance("generate_until", doc, ("", {}), doc_id, (task, doc_id, 1))
        inst.resps = [text]
        ens.apply([inst])
        got = inst.filtered_resps[ens.name]
        value = t.process_results(doc, [got])[metric]
        # the answer tells two wrong outcomes apart only where the metric compares answers (exact match): two
        # different failing programs (MBPP's pass@1) are one outcome, "wrong"
        answer = str(got) if metric == "exact_match" else ""
        return float(np.mean(value) if isinstance(value, (list, tuple)) else value), answer


def label_run(run: LabelRun, tok: Any, backend_s1: Any, model_s2: Any, score: TaskScorer, out: Path, n: int | None,
              seed: int, batch_size: int) -> dict[str, Any]:
    """Sample, find System 1's tokens, label (resumable); returns this run's record for ``runs.json``."""
    t0 = time.perf_counter()
    sample = LB.sample_handoffs(run.handoffs, n, seed)
    have = {LB.record_key(r) for r in LB.read_labels(out)}
    todo = [h for h in sample if h.key not in have]
    filled, unknown = system1_tokens(backend_s1, tok, run, todo, batch_size) if todo else ([], [])
    t1 = time.perf_counter()

    def extra(h: LB.Handoff) -> dict[str, Any]:
        return dict(zip(SIGNALS, run.signals[(h.task, h.doc_id, h.position)])) | {
            "stratum": LB.stratum(h.position, h.length)}
    cost = LB.label_handoffs(model_s2, tok, filled, run.docs, score, out, batch_size, extra)
    own_check = own_mismatches(run, tok, score) if cost["labelled"] else []
    return {"run_id": run.run_id, "results": str(run.results_path), "prompts": str(run.prompt_source),
            "small": run.info.small, "large": run.info.large, "sample": n, "seed": seed,
            "handoffs": len(run.handoffs), "sampled": len(sample),
            "strata": np.bincount([LB.stratum(h.position, h.length) for h in run.handoffs], minlength=10).tolist(),
            "sampled_strata": np.bincount([LB.stratum(h.position, h.length) for h in sample], minlength=10).tolist(),
            "tokens": {f"{t}|{d}": c for (t, d), c in sorted(run.tokens.items())},
            "handoffs_per_request": _per_request(run.handoffs),
            "s1_token_equals_s2": len(unknown), "unlabelled_keys": [list(h.key) for h in unknown],
            "own_score_mismatches": len(own_check), "own_score_mismatch_keys": [list(k) for k in own_check[:20]],
            "cost": {"labelled": cost["labelled"], "s2_tokens_decoded": cost["s2_tokens_decoded"],
                     "continuation_seconds": cost["seconds"], "system1_seconds": t1 - t0,
                     "system2_run_seconds": run.system2_seconds, "system2_run_tokens": run.system2_tokens}}


def own_mismatches(run: LabelRun, tok: Any, score: "TaskScorer") -> list[LB.DocKey]:
    """Requests where the scorer's value of System 2's own text differs from what lm-eval recorded for it."""
    bad = []
    for k, d in sorted(run.docs.items()):
        rec = run.own_recorded.get((k[0], k[1], score.filter_and_metric(k[0])[0].name))
        if rec is not None and score(k, LB.cut_at_stop(tok.decode(d.generation), d.stop))[0] != rec:
            bad.append(k)
    return bad


def _per_request(handoffs: list[LB.Handoff]) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in handoffs:
        out[f"{h.task}|{h.doc_id}"] = out.get(f"{h.task}|{h.doc_id}", 0) + 1
    return out
