"""The paper's figures: handoff positions as FS-GEN normalises them, top-K side files (synthetic Parquet in
the side-file contract), one generation's top-10 probabilities, and the t-SNE with its cluster scores."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis_helpers import make_trace, random_traces, write_run
from fsgen_eval.analysis import paper
from fsgen_eval.analysis.files import find_runs, read_trace_file
from fsgen_eval.analysis.params import ParamCount, ParamTable
from fsgen_eval.analysis.report import build_report, write_report
from test_analysis_report import CHROMIUM, _PROBE, _boxes, _chromium

K = 100


def _probs(rng: np.random.Generator, handoff: bool) -> list[float]:
    """A sorted top-K distribution: peaked (top-1 ~ 0.85) at agreements, flat (~ 0.25) at handoffs."""
    top1 = rng.uniform(0.15, 0.35) if handoff else rng.uniform(0.75, 0.95)
    rest = np.sort(rng.dirichlet(np.ones(K - 1)))[::-1] * (1 - top1)
    return [float(top1), *map(float, np.minimum(rest, top1))]


def write_side_file(trace_file: Path, seed: int = 0, drop_uncalled: bool = False) -> Path:
    """The contract: one row per token; record = 0-based JSONL line, token = index in its lists."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("record", "token", "s1_topk_ids", "s1_topk_probs", "s2_topk_ids",
                                             "s2_topk_probs", "doc_id", "task")}
    for line, text in enumerate(Path(trace_file).read_text().splitlines()):
        rec = json.loads(text)
        for t, (h, called) in enumerate(zip(rec["handoff"], rec["llm_called"])):
            cols["record"].append(line)
            cols["token"].append(t)
            cols["s1_topk_ids"].append(list(range(t, t + K)))
            cols["s1_topk_probs"].append(_probs(rng, bool(h)))
            cols["s2_topk_ids"].append(list(range(K)) if called else None)
            cols["s2_topk_probs"].append([1.0 / K] * K if called else None)
            cols["doc_id"].append(rec["doc_id"])
            cols["task"].append(rec["task"])
    schema = pa.schema([("record", pa.int64()), ("token", pa.int32()), ("s1_topk_ids", pa.list_(pa.int32())),
                        ("s1_topk_probs", pa.list_(pa.float32())), ("s2_topk_ids", pa.list_(pa.int32())),
                        ("s2_topk_probs", pa.list_(pa.float32())), ("doc_id", pa.int64()), ("task", pa.string())])
    out = paper.topk_path(trace_file)
    pq.write_table(pa.table(cols, schema=schema), out)
    return out


def test_side_file_path_follows_the_contract():
    assert paper.topk_path(Path("/a/traces_2026.jsonl")) == Path("/a/traces_2026.topk.parquet")


def test_position_distribution_by_hand():
    # ten tokens, handoffs at positions 0 and 9 and 8: deciles 0, 8, 9 each hold a third of the handoffs
    t = make_trace([1.0] * 10, [True] + [False] * 7 + [True, True])
    share, n = paper.handoff_position_distribution([t])
    assert n == 3 and share == pytest.approx([1 / 3] + [0] * 7 + [1 / 3, 1 / 3])
    # tokens System 2 did not evaluate hold no handoff: only the called one at decile 5 counts
    t2 = make_trace([1.0] * 10, [True] * 10, llm_called=[False] * 5 + [True] + [False] * 4)
    share2, n2 = paper.handoff_position_distribution([t2])
    assert n2 == 1 and share2[5] == 1 and share2.sum() == 1


@pytest.fixture
def traced_run(tmp_path) -> Path:
    run = write_run(tmp_path / "runs" / "a", "org/s1", "org/l1",
                    traces={"gsm8k": random_traces(12, 30, seed=3, shift=0.1)})
    return run


def test_read_topk_labels_each_token_by_its_record(traced_run):
    trace = next(traced_run.glob("traces_*.jsonl"))
    write_side_file(trace)
    records = read_trace_file(trace)
    topk = paper.read_topk(trace, records)
    assert topk.probs.shape == (12 * 30, K) and topk.ids.shape == (12 * 30, K)
    for i in (0, 45, 359):
        r, t = int(topk.record[i]), int(topk.token[i])
        assert topk.handoff[i] == bool(records[r]["trace"]["handoff"][t])
    # the synthetic handoffs are flat, agreements peaked: the labels and the vectors stay together
    assert topk.probs[topk.handoff, 0].max() < 0.4 < 0.7 < topk.probs[~topk.handoff, 0].min()


def test_read_topk_keeps_only_evaluated_tokens(tmp_path):
    run = write_run(tmp_path / "r", "org/s1", "org/l1",
                    traces={"gsm8k": random_traces(4, 20, seed=1, router="entropy")})
    trace = next(run.glob("traces_*.jsonl"))
    write_side_file(trace)
    records = read_trace_file(trace)
    topk = paper.read_topk(trace, records)
    assert len(topk.record) == sum(int(np.sum(r["trace"]["llm_called"])) for r in records) < 4 * 20


def test_read_topk_rejects_a_row_past_its_record(traced_run):
    trace = next(traced_run.glob("traces_*.jsonl"))
    side = write_side_file(trace)
    table = pq.read_table(side)
    tokens = table.column("token").to_numpy().copy()
    tokens[5] = 999
    pq.write_table(table.set_column(1, "token", pa.array(tokens, pa.int32())), side)
    with pytest.raises(ValueError, match=r"row 5 points at record 0, token 999"):
        paper.read_topk(trace, read_trace_file(trace))


def test_pick_generation_and_windows():
    topk = paper.TopK(record=np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]), token=np.array([2, 0, 1, 0, 1, 2, 3, 4, 5]),
                      probs=np.arange(9 * 3, dtype=float).reshape(9, 3), ids=np.zeros((9, 3), int),
                      handoff=np.array([0, 0, 0, 0, 1, 0, 0, 0, 1], bool), task=np.array(["t"] * 9, object))
    # record 0 has no handoff: record 1 is drawn, in token order
    assert list(paper.pick_generation(topk)) == [3, 4, 5, 6, 7, 8]
    x, y = paper.window_features(topk, k=3, window=5)
    # record 0 is too short for a 5-token window; record 1 gives two: tokens 0-4 and 1-5
    assert x.shape == (2, 15) and list(y) == [False, True]
    assert list(x[1]) == list(topk.probs[4:9].ravel())


def test_embedding_separates_what_differs_and_names_labels_rightly(traced_run):
    from fsgen_eval.analysis import plots

    trace = next(traced_run.glob("traces_*.jsonl"))
    write_side_file(trace)
    topk = paper.read_topk(trace, read_trace_file(trace))
    single, windows = paper.embed_topk(topk, n_per_class=60)
    assert single.n_features == K and windows.n_features == 5 * K
    assert single.ari > 0.8 and single.silhouette > 0.3  # flat vs peaked vectors: two clear clusters
    assert -1 <= windows.silhouette <= 1 and windows.davies_bouldin >= 0
    assert int(single.handoff.sum()) == int((~single.handoff).sum()) == 60  # balanced sample
    fig = plots.embedding_figure([single])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["agreement (match), n=60", "handoff (mismatch), n=60"]
    # the points drawn as handoffs are the flat ones
    handoff_pts = fig.axes[0].collections[1].get_offsets()
    assert np.allclose(np.asarray(handoff_pts), single.xy[single.handoff])


def test_embedding_needs_both_classes():
    x = np.random.default_rng(0).random((30, 4))
    with pytest.raises(ValueError, match="needs >= 5 handoffs and >= 5 agreements, got 2 and 28"):
        paper.embed("x", x, np.array([True, True] + [False] * 28))


def _report(root: Path, with_side_files: bool):
    for i, (s, l) in enumerate([("org/s1", "org/l1"), ("org/s1", "org/l2"), ("org/s2", "org/l2")]):
        run = write_run(root / f"r{i}", s, l, traces={"gsm8k": random_traces(8, 24, seed=i, shift=0.1)})
        if with_side_files:
            write_side_file(next(run.glob("traces_*.jsonl")), seed=i)
    params = ParamTable([ParamCount(k, k, v) for k, v in {"org/s1": 1000, "org/s2": 3000, "org/l1": 20000,
                                                            "org/l2": 90000}.items()])
    return build_report(find_runs([root]), params, n_boot=10)


def test_report_draws_the_paper_figures_with_their_tables(tmp_path):
    rep = _report(tmp_path / "runs", with_side_files=True)
    by_title = {f.title: f for f in rep.figures}
    for title in ("Collaboration rate over model sizes (3-D)",
                  "Handoff position: P(handoff | decile) and P(decile | handoff)",
                  "System 1's top-10 probabilities along one generation",
                  "t-SNE of System 1's top-100 probabilities: handoffs vs agreements"):
        assert title in by_title and by_title[title].data is not None, title
    head, rows = by_title["Handoff position: P(handoff | decile) and P(decile | handoff)"].data
    shares = [[float(v) for v in r[12:22]] for r in rows]
    assert len(rows) == 3 and all(sum(s) == pytest.approx(1, abs=6e-3) for s in shares)  # 3 decimals each
    head, rows = by_title["t-SNE of System 1's top-100 probabilities: handoffs vs agreements"].data
    assert [r[0] for r in rows] == ["single tokens (top-100 probabilities)", "5-token windows (5 x top-100)"]
    assert float(rows[0][7]) > 0.8  # ARI of the separable synthetic vectors
    head, rows = by_title["System 1's top-10 probabilities along one generation"].data
    assert head[:3] == ["position", "top-1 token id", "handoff"] and len(head) == 13 and "yes" in {r[2] for r in rows}
    md, page = write_report(rep, tmp_path / "out")
    text = md.read_text()
    assert "| features | dimensions | points |" in text and "P(d0\\|h)" in text  # the pipe escaped in Markdown
    assert page.read_text().count("data:image/png;base64,") == len(rep.figures)


def test_report_without_side_files_says_so(tmp_path):
    rep = _report(tmp_path / "runs", with_side_files=False)
    titles = [f.title for f in rep.figures]
    assert not any("top-10" in t or "t-SNE" in t for t in titles)
    assert any("no top-K side files" in n for n in rep.notes)


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)")
def test_paper_figures_render_in_chromium(tmp_path):
    import matplotlib.image

    rep = _report(tmp_path / "runs", with_side_files=True)
    _, page = write_report(rep, tmp_path / "out")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    sizes = re.search(r'data-img-sizes="([^"]*)"', dom).group(1).split()
    assert len(sizes) == len(rep.figures) and all(int(w) > 100 and int(h) > 100 for w, h in (s.split("x") for s in sizes))
    shot = tmp_path / "shot.png"
    _chromium("--virtual-time-budget=10000", f"--screenshot={shot}", probe.as_uri())
    img = matplotlib.image.imread(str(shot))[..., :3]
    colour = (img.max(axis=2) - img.min(axis=2)) > 0.25
    boxes = _boxes(dom, "data-img-boxes")
    titles = [f.title for f in rep.figures]
    for title in ("Collaboration rate over model sizes (3-D)", "System 1's top-10 probabilities along one generation",
                  "t-SNE of System 1's top-100 probabilities: handoffs vs agreements"):
        x, y, w, h = boxes[titles.index(title)]
        assert y + h <= img.shape[0], f"{title}: below the screenshot"
        assert colour[y:y + h, x:x + w].sum() > 300, f"{title}: no coloured marks on screen"
    # each figure's data table is in the page, after its image
    assert dom.count("<table class=\"data\">") == sum(f.data is not None for f in rep.figures)
