"""The data behind the FS-GEN paper's figures, computed from our results, traces and top-K side files.

* :func:`handoff_position_distribution` — where in a generation the handoffs fall: P(decile | handoff), the
  share of a pair's handoffs in each tenth of the generation, as the paper normalises its position heatmap
  (FS-GEN's mismatch_position_heatmap.py); our other heatmap is P(handoff | decile), the handoff rate within each tenth.
* :func:`read_topk` — a trace's top-K side file (``traces_*.topk.parquet`` beside ``traces_*.jsonl``: one row
  per token; ``record`` = 0-based line of the record in the JSONL, ``token`` = index in its token lists,
  ``s1_topk_ids`` / ``s1_topk_probs`` and ``s2_topk_ids`` / ``s2_topk_probs``, null where System 2 was not
  evaluated), joined with the records' handoff labels.
* :func:`pick_generation` — one generation for the per-token top-10 plot (FS-GEN's mismatch_sample.py, output fig5-*.pdf).
* :func:`embed_topk` — t-SNE of System 1's top-100 probability vectors, of single tokens and of 5-token
  windows (the vectors of a token and the 4 before it, concatenated), coloured by handoff, with k-means
  (k = 2) clusters and their silhouette, Davies–Bouldin index and adjusted Rand index against the handoff
  labels (FS-GEN's kde_scattar_1&5_tokens.py, outputs fig6.pdf and fig7.pdf).

Labels are named for what they are: a *handoff* is a token where System 2's token differs from System 1's
greedy token (FS-GEN: "mismatch"), an *agreement* one where they are equal ("match"). FS-GEN's own t-SNE
script indexes its label names the wrong way round (its mismatches are drawn as "Match"); ours cannot, since
each point carries its boolean handoff and the legend is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsgen_eval.analysis.signals import called_tokens
from fsgen_eval.core.schema import topk_path  # the writer's own naming (lm_eval/traces.py)
from fsgen_eval.core.traces_io import TraceTable

WINDOW = 5


# ---------------------------------------------------------------- where the handoffs fall


def handoff_position_distribution(traces: TraceTable | list[dict[str, np.ndarray]]) -> tuple[np.ndarray, int]:
    """P(decile | handoff) [10] over generations' traces (handoffs where System 2 was evaluated), and the
    number of handoffs; NaN [10] when there is none."""
    tok = called_tokens(traces)
    n = int(tok.handoff.sum())
    if n == 0:
        return np.full(10, np.nan), 0
    return np.bincount(tok.rel_decile[tok.handoff], minlength=10)[:10] / n, n


# ---------------------------------------------------------------- top-K side files


@dataclass
class TopK:
    """System 1's top-K probabilities of the tokens of one trace file where System 2 was evaluated.

    ``record`` [M], ``token`` [M]: where each token sits; ``probs`` [M, K] System 1's top-K probabilities
    (descending), ``ids`` [M, K] their token ids; ``handoff`` [M] bool; ``task`` [M].
    """

    record: np.ndarray
    token: np.ndarray
    probs: np.ndarray
    ids: np.ndarray
    handoff: np.ndarray
    task: np.ndarray


TOPK_COLUMNS = ("handoff", "llm_called")  # the trace fields :func:`read_topk` labels the side file's rows with


def read_topk(trace_file: Path, records: TraceTable, run_id: str | None = None) -> TopK:
    """Read ``trace_file``'s side file and label each token by its record's ``handoff`` (``records``: the
    file's records as :func:`files.read_trace_file` returns them, with at least :data:`TOPK_COLUMNS`). Only
    tokens where System 2 was evaluated are kept (a handoff is defined only there), and with ``run_id`` only
    that run's (an appended file). Raises naming the file when a column is missing, a row points past its
    record, or the top-K lists are ragged."""
    import pyarrow.parquet as pq

    path = topk_path(trace_file)
    cols = ("record", "token", "s1_topk_ids", "s1_topk_probs", "task", "doc_id")
    try:
        table = pq.read_table(path, columns=list(cols))
    except (OSError, ValueError, KeyError) as err:  # pyarrow raises ArrowInvalid (a ValueError) or KeyError
        raise ValueError(f"{path}: not a top-K side file with columns {', '.join(cols)} ({err})") from None
    rec = table.column("record").to_numpy()
    tok = table.column("token").to_numpy()
    probs = _ragged_check(path, table.column("s1_topk_probs").to_pylist(), "s1_topk_probs")
    ids = _ragged_check(path, table.column("s1_topk_ids").to_pylist(), "s1_topk_ids")
    # the side file's ``record`` is the record's 0-based line in the JSONL (records.line, ascending)
    which = np.searchsorted(records.line, rec)
    found = (which < len(records)) & (records.line[np.minimum(which, max(len(records) - 1, 0))] == rec) \
        if len(records) else np.zeros(len(rec), bool)
    which = np.minimum(which, max(len(records) - 1, 0))
    inside = found & (tok >= 0) & (tok < np.where(found, records.lengths[which] if len(records) else 0, 0))
    if not inside.all():
        i = int(np.flatnonzero(~inside)[0])
        raise ValueError(f"{path}: row {i} points at record {rec[i]}, token {tok[i]}, which {trace_file} does not hold")
    docs, tasks = table.column("doc_id").to_pylist(), table.column("task").to_pylist()
    rec_docs, rec_tasks = records.get("doc_id"), records.get("task")
    for i in np.flatnonzero((np.asarray(docs, dtype=object) != rec_docs[which]) |
                            (np.asarray(tasks, dtype=object) != rec_tasks[which]))[:1]:
        _check_row(path, int(i), {"doc_id": rec_docs[which[i]], "task": rec_tasks[which[i]]}, docs[i], tasks[i])
    at = records.offsets[which] + tok
    handoff = records.tokens["handoff"][at].astype(bool)
    called = records.tokens["llm_called"][at].astype(bool)
    if run_id is not None:
        called &= records.get("run_id")[which] == run_id
    task = np.array(table.column("task").to_pylist(), dtype=object)
    return TopK(rec[called], tok[called], probs[called], ids[called], handoff[called], task[called])


def _check_row(path: Path, i: int, rec: dict[str, Any], doc: Any, task: Any) -> None:
    """A side-file row must describe the JSONL record it points at: its document and task (rows of two runs
    appending at once pointed at each other's lines)."""
    if doc != rec.get("doc_id") or task != rec.get("task"):
        raise ValueError(f"{path}: row {i} (task {task!r}, doc_id {doc!r}) does not match the record it points at "
                         f"(task {rec.get('task')!r}, doc_id {rec.get('doc_id')!r}): the side file and its JSONL "
                         "disagree (two runs appended at once?)")


def _ragged_check(path: Path, lists: list[Any], name: str) -> np.ndarray:
    widths = {len(v) for v in lists if v is not None}
    if len(widths) > 1 or any(v is None for v in lists):
        raise ValueError(f"{path}: column {name} must hold one list of one length per row (got lengths "
                         f"{sorted(widths)[:5]}{' and nulls' if any(v is None for v in lists) else ''})")
    return np.asarray(lists, float if "probs" in name else np.int64).reshape(len(lists), -1)


def concat_topk(parts: list[TopK]) -> TopK:
    """The tokens of several side files as one (``record`` stays per file: use it only within a part)."""
    return TopK(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                  ("record", "token", "probs", "ids", "handoff", "task")))


# ---------------------------------------------------------------- one generation


def pick_generation(topk: TopK, max_len: int = 64) -> np.ndarray:
    """Indices [T] into ``topk`` of one generation, in token order: the first record (lowest line) with a
    handoff among those of at most ``max_len`` evaluated tokens, else the shortest with a handoff, else the
    first record. Empty when ``topk`` holds no token."""
    if len(topk.record) == 0:
        return np.zeros(0, int)
    recs = np.unique(topk.record)
    info = [(r, int(np.sum(topk.record == r)), bool(topk.handoff[topk.record == r].any())) for r in recs]
    short = [r for r, n, h in info if h and n <= max_len]
    with_handoff = sorted((n, r) for r, n, h in info if h)
    chosen = short[0] if short else (with_handoff[0][1] if with_handoff else recs[0])
    idx = np.flatnonzero(topk.record == chosen)
    return idx[np.argsort(topk.token[idx], kind="stable")][:max_len]


# ---------------------------------------------------------------- t-SNE of top-100 vectors


@dataclass
class Embedding:
    """A 2-D t-SNE embedding [M, 2] of feature vectors with their ``handoff`` labels [M] and k-means
    (k = 2) clusters [M]; ``silhouette`` and ``davies_bouldin`` judge the clusters on the embedding,
    ``ari`` compares them with the handoff labels (0: no better than chance, 1: the same partition)."""

    name: str
    xy: np.ndarray
    handoff: np.ndarray
    cluster: np.ndarray
    silhouette: float
    davies_bouldin: float
    ari: float
    n_features: int


def window_features(topk: TopK, k: int = 100, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Per token with ``window - 1`` evaluated tokens before it in its record: the top-k probability
    vectors of those ``window`` tokens, concatenated ([M', window * k]), and the last token's handoff [M']."""
    feats, labels = [], []
    p = _pad(topk.probs, k)
    for r in np.unique(topk.record):
        idx = np.flatnonzero(topk.record == r)
        idx = idx[np.argsort(topk.token[idx], kind="stable")]
        for j in range(window - 1, len(idx)):
            feats.append(p[idx[j - window + 1:j + 1]].ravel())
            labels.append(topk.handoff[idx[j]])
    return np.asarray(feats, float).reshape(len(feats), window * k), np.asarray(labels, bool)


def _pad(probs: np.ndarray, k: int) -> np.ndarray:
    """[M, k]: the first k probabilities, zero-padded when the side file holds fewer."""
    out = np.zeros((len(probs), k))
    out[:, :min(k, probs.shape[1])] = probs[:, :k]
    return out


def balanced_sample(labels: np.ndarray, n_per_class: int, random_state: int) -> np.ndarray:
    """Indices of up to ``n_per_class`` points of each label, drawn without replacement (seeded) — rather
    than FS-GEN's over-sampling, which repeats minority points and so draws them as tight clumps in t-SNE."""
    rng = np.random.default_rng(random_state)
    picks = [rng.choice(np.flatnonzero(labels == v), min(n_per_class, int(np.sum(labels == v))), replace=False)
             for v in (False, True)]
    return np.sort(np.concatenate(picks)).astype(int)


def embed(name: str, x: np.ndarray, handoff: np.ndarray, n_per_class: int = 400,
          random_state: int = 0) -> Embedding:
    """Balanced sample -> PCA (to at most 10 dimensions, as FS-GEN reduces before t-SNE) -> 2-D t-SNE ->
    k-means (k = 2) and its scores. x: [M, F] features, handoff: [M]. Raises when either class has fewer
    than 5 points (no picture of two classes can be drawn)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score

    counts = int(np.sum(handoff)), int(np.sum(~handoff))
    if min(counts) < 5:
        raise ValueError(f"t-SNE of {name}: needs >= 5 handoffs and >= 5 agreements, got {counts[0]} and {counts[1]}")
    idx = balanced_sample(handoff, n_per_class, random_state)
    xs, hs = x[idx], handoff[idx]
    reduced = PCA(n_components=min(10, xs.shape[1], len(xs) - 1), random_state=random_state).fit_transform(xs)
    xy = TSNE(n_components=2, perplexity=min(30.0, (len(xs) - 1) / 3), init="pca",
              random_state=random_state).fit_transform(reduced)
    cluster = KMeans(n_clusters=2, n_init=10, random_state=random_state).fit_predict(xy)
    if len(np.unique(cluster)) < 2:  # every point in one cluster: the scores are undefined
        sil = dbi = float("nan")
    else:
        sil, dbi = float(silhouette_score(xy, cluster)), float(davies_bouldin_score(xy, cluster))
    return Embedding(name, xy, hs, cluster, sil, dbi, float(adjusted_rand_score(hs, cluster)), x.shape[1])


def embed_topk(topk: TopK, k: int = 100, n_per_class: int = 400, random_state: int = 0) -> list[Embedding]:
    """The single-token and the 5-token-window embeddings of System 1's top-k probability vectors."""
    single = embed(f"single tokens (top-{k} probabilities)", _pad(topk.probs, k), topk.handoff, n_per_class,
                   random_state)
    xw, hw = window_features(topk, k)
    windows = embed(f"{WINDOW}-token windows ({WINDOW} x top-{k})", xw, hw, n_per_class, random_state)
    return [single, windows]
