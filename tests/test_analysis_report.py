"""The report: tables and figures, Markdown, and the standalone HTML rendered in headless Chromium."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis_helpers import random_traces, write_run
from fsgen_eval.analysis.files import find_runs
from fsgen_eval.analysis.params import ParamCount, ParamTable
from fsgen_eval.analysis.report import build_report, write_report
from fsgen_eval.cli import main

SIZES = {"org/s1": 1000, "org/s2": 3000, "org/l1": 20000, "org/l2": 90000}
ACC = {"exact_match,strict-match": 0.6, "exact_match_stderr,strict-match": 0.02}


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_run(root / "never", "org/s1", "org/l1", router="never", tasks={"gsm8k": {**ACC, "exact_match,strict-match": 0.3}})
    for i, (s, l) in enumerate([("org/s1", "org/l1"), ("org/s1", "org/l2"), ("org/s2", "org/l1"), ("org/s2", "org/l2")]):
        write_run(root / f"oracle{i}", s, l, traces={"gsm8k": random_traces(6, 30, seed=i, shift=0.05 * i)},
                  tasks={"gsm8k": ACC})
    write_run(root / "spec", "org/s1", "org/l1", method="speculative", router="entropy", threshold=1.0,
              traces={"gsm8k": random_traces(6, 30, seed=7, router="entropy")},
              tasks={"gsm8k": {**ACC, "exact_match,strict-match": 0.55}})
    return root


def _params() -> ParamTable:
    return ParamTable([ParamCount(k, k, v) for k, v in SIZES.items()])


def test_tables_roles_and_figures(runs_dir):
    rep = build_report(find_runs([runs_dir]), _params(), target_call_rate=0.3, n_boot=20)
    (table,) = rep.tables
    assert table.task == "gsm8k" and table.metrics == ["exact_match,strict-match"]
    # ranked by collaboration rate, lowest first; System 1 alone never calls System 2: unranked, last
    rates = [r["collaboration_rate"] for r in table.rows[:5]]
    assert [r["rank"] for r in table.rows] == [1, 2, 3, 4, 5, None] and rates == sorted(rates)
    assert table.rows[-1]["role"] == "System 1 alone"
    assert table.rows[-1]["metrics"]["exact_match,strict-match"] == (0.3, 0.02)
    spec = next(r for r in table.rows if r["config"] == "speculative/entropy@1.0")
    assert 0 < spec["llm_call_rate"] < 1
    lo, hi = spec["ci"]["collaboration_rate"]
    assert lo < spec["collaboration_rate"] < hi
    # a lowest collaboration rate is no quality ranking: never starred; four rows tie on the metric: no star
    assert table.best["collaboration_rate"] == [] and table.best["metric:exact_match,strict-match"] == []
    titles = [f.title for f in rep.figures]
    assert titles[:2] == ["Leaderboard gsm8k: collaboration rate with 95 % intervals",
                          "Collaboration rate gsm8k: pair × configuration"]
    assert len(titles) == 7 and titles[2].startswith("Collaboration rate vs parameter ratio")
    assert titles[3] == "Collaboration rate over model sizes (3-D)"
    assert rep.figures[0].data[1][0][:3] == ["1", table.rows[0]["pair"], table.rows[0]["config"]]
    assert all(f.png.startswith(b"\x89PNG") for f in rep.figures)
    assert any("llm_called" in n for n in rep.notes)


def test_markdown_and_plot_files(runs_dir, tmp_path):
    md, page = write_report(build_report(find_runs([runs_dir]), _params(), n_boot=20), tmp_path / "out")
    text = md.read_text()
    assert text.count("| System 2 alone (oracle) |") == 4 and "| System 1 alone |" in text
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (md.parent / link).read_bytes().startswith(b"\x89PNG")
    assert page.read_text().count("data:image/png;base64,") == 7
    # no strict best in any starred column (the metric ties), so nothing is starred; each figure's data
    # table follows its image
    assert "★" not in text and text.count("| rank | pair | configuration |") == 1


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = "--window-size=1280,9000"
# records, after load, each image's natural size and each image's / table's box in CSS pixels
_PROBE = """<script>window.addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height].map(Math.round).join(','); };
  document.body.setAttribute('data-img-sizes', Array.from(document.images).map(i => i.naturalWidth + 'x' + i.naturalHeight).join(' '));
  document.body.setAttribute('data-img-boxes', Array.from(document.images).map(box).join(' '));
  document.body.setAttribute('data-table-boxes', Array.from(document.querySelectorAll('table.leaderboard')).map(box).join(' '));
});</script>"""
# after load, clicks a leaderboard header (twice when asked) and records the pair column's order
_CLICK = """<script>window.addEventListener('load', () => {
  const t = document.querySelector('table.leaderboard'), th = t.tHead.rows[0].cells[COL];
  for (let i = 0; i < CLICKS; i++) th.click();
  document.body.setAttribute('data-order', Array.from(t.tBodies[0].rows).map(r => r.cells[COL].dataset.v).join('|'));
});</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", "--force-device-scale-factor=1", WINDOW, *args],
                          capture_output=True, text=True, timeout=120)


def _boxes(dom: str, name: str) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in b.split(",")) for b in re.search(rf'{name}="([^"]*)"', dom).group(1).split()]


# CI (which installs chromium) must run this test: a missing browser fails there instead of skipping
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)")
def test_html_report_renders_in_chromium(runs_dir, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("".join(f"{k}: {v}\n" for k, v in SIZES.items()))
    assert main(["report", str(runs_dir), "-o", str(tmp_path / "out"), "--n-boot", "20", "--params", str(params),
                 "--target-call-rate", "0.3"]) == 0
    html_text = (tmp_path / "out" / "report.html").read_text()
    assert "src='http" not in html_text and "<script src" not in html_text  # standalone, nothing fetched
    probe = tmp_path / "probe.html"
    probe.write_text(html_text.replace("</body>", _PROBE + "</body>"))
    # the DOM after load: the leaderboard's rows, and every image decoded to a non-zero natural size
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri()).stdout
    board = re.search(r"<table class=\"leaderboard sortable\".*?</table>", dom, re.S).group(0)
    assert len(re.findall(r"<tr>", board)) == 1 + 6  # header row + six configurations
    ranks = re.findall(r'<tr><td data-v="([^"]*)">', board)
    assert ranks == ["1.0", "2.0", "3.0", "4.0", "5.0", ""]  # ranked, System 1 alone unranked last
    sizes = re.search(r'data-img-sizes="([^"]*)"', dom).group(1).split()
    assert len(sizes) == 7 and all(int(w) > 100 and int(h) > 100 for w, h in (s.split("x") for s in sizes))
    # the screenshot, where the DOM says the table and the plots are: text in the table, colour in each plot
    shot = tmp_path / "shot.png"
    _chromium("--virtual-time-budget=10000", f"--screenshot={shot}", probe.as_uri())
    import matplotlib.image

    img = matplotlib.image.imread(str(shot))[..., :3]  # (H, W, 3) floats in [0, 1]
    dark = img.max(axis=2) < 0.35
    colour = (img.max(axis=2) - img.min(axis=2)) > 0.25
    (tx, ty, tw, th), = _boxes(dom, "data-table-boxes")
    assert th > 100 and dark[ty:ty + th, tx:tx + tw].sum() > 1000, "the table shows no text"
    img_boxes = _boxes(dom, "data-img-boxes")
    assert len(img_boxes) == 7
    for x, y, w, h in img_boxes:
        assert y + h <= img.shape[0], "plot below the screenshot"
        region = (slice(y, y + h), slice(x, x + w))
        assert colour[region].sum() > 300, f"plot at {(x, y)} shows no coloured marks"
        assert dark[region].mean() > 0.005, f"plot at {(x, y)} shows no axes or labels"
    # a click on a header sorts by that column, a second click the other way round (column 2: pair)
    pairs = sorted(re.findall(r"<tr><td[^>]*>[^<]*</td><td[^>]*>[^<]*</td><td data-v=\"([^\"]*)\"", board))
    for clicks, expected in ((1, pairs), (2, pairs[::-1])):
        click = tmp_path / f"click{clicks}.html"
        click.write_text(html_text.replace("</body>", _CLICK.replace("COL", "2").replace("CLICKS", str(clicks))
                                           + "</body>"))
        order = re.search(r'data-order="([^"]*)"', _chromium("--virtual-time-budget=10000", "--dump-dom",
                                                              click.as_uri()).stdout).group(1)
        assert html.unescape(order).split("|") == [html.unescape(p) for p in expected], (clicks, order)
    # ``#sort=0:<column>:desc`` sorts on load: the collaboration-rate column, highest first
    col = header_index = next(i for i, h in enumerate(re.findall(r"<th>([^<]*)</th>", board))
                              if h.startswith("collaboration rate"))
    sorted_dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri() + f"#sort=0:{col}:desc").stdout
    sorted_board = re.search(r"<table class=\"leaderboard sortable\".*?</table>", sorted_dom, re.S).group(0)
    values = re.findall(r"<tr>(?:<td[^>]*>[^<]*</td>){%d}<td[^>]*data-v=\"([^\"]*)\"" % header_index, sorted_board)
    assert len(values) == 6 and values[-1] == ""  # System 1 alone ran untraced: no rate, sorted last
    assert [float(v) for v in values[:-1]] == sorted(map(float, values[:-1]), reverse=True)


def test_report_without_traces_or_sizes_says_what_is_missing(tmp_path):
    write_run(tmp_path / "r", "org/s1", "org/l1", summary_override={"gsm8k": {"collaboration_rate": 0.2}})
    rep = build_report(find_runs([tmp_path / "r"]), ParamTable([]), n_boot=5)
    # only the leaderboard's own figures: no scaling plot, no trace figures
    assert [f.title for f in rep.figures] == ["Leaderboard gsm8k: collaboration rate with 95 % intervals",
                                              "Collaboration rate gsm8k: pair × configuration"]
    assert len(rep.tables[0].rows) == 1 and rep.tables[0].rows[0]["ci"] == {}
    assert any("no parameter count for model 'org/l1'" in n or "org/s1" in n for n in rep.notes)
    assert any("no trace files" in n for n in rep.notes)


def test_scaling_groups_by_every_setting_and_fits_only_three_pairs(runs_dir):
    # an entropy-routed oracle run of one pair: its own group, labelled by its router, not fitted
    write_run(runs_dir / "oracle-entropy", "org/s1", "org/l2", router="entropy", threshold=1.5,
              traces={"gsm8k": random_traces(4, 20, seed=11, router="entropy")}, tasks={"gsm8k": ACC})
    rep = build_report(find_runs([runs_dir]), _params(), n_boot=20)
    notes = " ".join(rep.notes)
    assert "[task=gsm8k method=oracle router=entropy@1.5]: not fitted: 1 distinct (small, large) pair(s)" in notes
    assert "[task=gsm8k method=speculative router=entropy@1]: not fitted" in notes
    assert "None/None" not in notes and "None" not in notes.split("scaling fit")[1]


def test_degenerate_fit_is_clipped_and_named_in_the_legend():
    from types import SimpleNamespace

    from fsgen_eval.analysis import plots
    from fsgen_eval.analysis.scaling import fit_groups

    r = np.array([2.0, 2.3, 2.9, 4.6, 5.8, 13.2, 38.6])
    y = np.array([0.47, 0.36, 0.05, 0.45, 0.04, 0.06, 0.07])  # no law: MBPP-like
    rows = [{"task": "mbpp", "method": "oracle", "small_params": 1.0, "large_params": float(x),
             "collaboration_rate": float(v)} for x, v in zip(r, y)]
    (group,) = fit_groups(rows, n_boot=50)
    fit = group.to_dict()
    assert fit["degenerate"]
    fig = plots.scaling_figure([SimpleNamespace(label="task=mbpp method=oracle", r=r, y=y, fit=fit)])
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert y.min() - 0.1 < lo < y.min() and y.max() < hi < y.max() + 0.1  # the data's range, not the curve's
    (text,) = [t.get_text() for t in ax.get_legend().get_texts()]
    assert text.startswith("task=mbpp method=oracle: fit degenerate (") and "r^-" not in text
    (line,) = ax.get_lines()
    assert line.get_linestyle() == ":" and line.get_xdata().min() >= r.min() and line.get_xdata().max() <= r.max()


def test_position_heatmap_rows_name_the_task(runs_dir, monkeypatch):
    from fsgen_eval.analysis import plots

    seen = {}
    real = plots.position_pair_figure
    monkeypatch.setattr(plots, "position_pair_figure",
                        lambda labels, *a: seen.setdefault("labels", labels) and real(labels, *a))
    build_report(find_runs([runs_dir]), _params(), n_boot=5)
    assert seen["labels"] and all(label.startswith("gsm8k | ") for label in seen["labels"])


def test_rank_by_accuracy_and_a_bad_column(runs_dir, tmp_path, capsys):
    rep = build_report(find_runs([runs_dir]), _params(), n_boot=5, rank_by="accuracy")
    (table,) = rep.tables
    acc = [r["metrics"]["exact_match,strict-match"][0] for r in table.rows]
    assert acc == sorted(acc, reverse=True) and table.rows[-1]["role"] == "System 1 alone"
    assert [r["rank"] for r in table.rows] == [1, 2, 3, 4, 5, 6]  # System 1 alone is ranked by accuracy
    assert main(["report", str(runs_dir), "-o", str(tmp_path / "o"), "--rank-by", "bleu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task gsm8k: cannot rank by 'bleu'" in err
    assert "exact_match,strict-match" in err and not (tmp_path / "o").exists()


def test_a_replaying_sweeps_system2_run_is_no_leaderboard_row(runs_dir):
    # the System 2 run a replaying sweep decodes once (the large model as its own System 1, router=never) is
    # internal: no row, no fit point
    write_run(runs_dir / "_system2", "org/l1", "org/l1", router="never", tasks={"gsm8k": ACC})
    (table,) = build_report(find_runs([runs_dir]), _params(), n_boot=20).tables
    assert [r for r in table.rows if r["pair"] == "org/l1 -> org/l1"] == []
    assert [r["rank"] for r in table.rows if r["rank"] is not None] == [1, 2, 3, 4, 5]


def test_runs_are_never_pooled_unless_asked(runs_dir):
    """Uncertainty and trade-off are per run (five traced runs: five rows, four router=always runs: four
    runs' curves); a pooled series only with pool=True, and then titled and captioned as pooled."""
    runs = find_runs([runs_dir])
    rep = build_report(runs, _params(), n_boot=20)
    titles = [f.title for f in rep.figures]
    assert not any("pooled" in t.lower() for t in titles)
    (unc,) = [f for f in rep.figures if f.title.startswith("System-1 uncertainty")]
    assert unc.title.endswith(", per run") and len(unc.data[1]) == 5
    assert len({row[0] for row in unc.data[1]}) == 5  # one row per run, each named
    (trade,) = [f for f in rep.figures if "trade-off" in f.title]
    assert trade.title.endswith(", per run") and trade.data[0][:2] == ["run", "router"]
    assert len(trade.data[1]) == 4 * 3 and len({row[0] for row in trade.data[1]}) == 4
    pooled = build_report(runs, _params(), n_boot=20, pool=True)
    extra = [f for f in pooled.figures if "POOLED" in f.title]
    assert len(extra) == 1 and "over 5 runs" in extra[0].title and extra[0].caption.startswith("pooled")
    assert len(pooled.figures) == len(rep.figures) + 1


def test_one_run_keeps_its_histograms(runs_dir):
    runs = [r for r in find_runs([runs_dir]) if "oracle0" in Path(r.path).parts]
    rep = build_report(runs, _params(), n_boot=20, pool=True)  # one run: nothing to pool
    (unc,) = [f for f in rep.figures if f.title.startswith("System-1 uncertainty")]
    assert unc.title == "System-1 uncertainty at handoffs vs agreements" and len(unc.data[1]) == 1
    assert unc.caption == f"run {runs[0].pair} | {runs[0].label}"


def test_scaling_points_carry_their_clustered_intervals(runs_dir):
    from fsgen_eval.analysis.files import ANALYSIS_COLUMNS, run_records
    from fsgen_eval.analysis.report import rate_intervals, scaling_series

    runs = find_runs([runs_dir])
    cis = rate_intervals(runs, [run_records(r, ANALYSIS_COLUMNS) for r in runs])
    series = scaling_series(runs, _params(), 20, [], intervals=cis)
    (oracle,) = [g for g in series if "oracle" in g.label]
    assert oracle.ci.shape == (4, 2) and np.isfinite(oracle.ci).all()
    assert ((oracle.ci[:, 0] <= oracle.y) & (oracle.y <= oracle.ci[:, 1])).all()
    assert np.isnan(scaling_series(runs, _params(), 20, [])[0].ci).all()  # no intervals given: no bars


def _proxy_traces(n: int, length: int, seed: int) -> list[dict]:
    """``random_traces`` with proxy tuning's count: a handoff against the untuned base on about 40 % of tokens
    (independent of the handoff against System 1), so the two rates differ."""
    rng = np.random.default_rng(seed)
    out = []
    for tr in random_traces(n, length, seed):
        tr["base_handoff"] = (rng.random(length) < 0.4).astype(np.int8)
        out.append(tr)
    return out


def test_proxy_row_shows_fsgen_base_rate_named_beside_ours(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "oracle", "org/s1", "org/l1", traces={"gsm8k": random_traces(6, 30, seed=1)}, tasks={"gsm8k": ACC})
    proxy = _proxy_traces(6, 30, seed=2)
    write_run(root / "proxy", "org/s2", "org/l1", method="proxy", traces={"gsm8k": proxy}, tasks={"gsm8k": ACC},
              params={"alpha": 1.0})
    rep = build_report(find_runs([root]), _params(), n_boot=20)
    (table,) = rep.tables
    base = next(c for c in table.columns if c.key == "base_collaboration_rate")
    assert "FS-GEN" in base.title and "proxy" in base.title
    row = next(r for r in table.rows if r["config"] == "proxy/always")
    want = sum(int((t["base_handoff"] == 1).sum()) for t in proxy) / (6 * 30)
    ours = sum(int(t["handoff"].sum()) for t in proxy) / (6 * 30)
    assert row["base_collaboration_rate"] == pytest.approx(want) and row["collaboration_rate"] == pytest.approx(ours)
    assert want != pytest.approx(ours)
    lo, hi = row["ci"]["base_collaboration_rate"]  # requests as clusters, from the traces' base_handoff
    assert lo < want < hi
    oracle = next(r for r in table.rows if r["config"] == "oracle/always")
    assert oracle["base_collaboration_rate"] is None and "base_collaboration_rate" not in oracle["ci"]
    # the matrix shows each configuration's rate as its method defines it, and says so
    matrix = next(f for f in rep.figures if f.title.startswith("Collaboration rate gsm8k: pair"))
    head, cells = matrix.data
    by = {c[0]: dict(zip(head, c)) for c in cells}
    assert by[row["pair"]]["proxy/always"] == f"{want:.4f}"
    assert by[oracle["pair"]]["oracle/always"] == f"{oracle['collaboration_rate']:.4f}"
    assert "proxy/always: base_collaboration_rate" in matrix.caption
    assert main(["report", str(root), "-o", str(tmp_path / "rep"), "--n-boot", "20",
                 "--rank-by", "base_collaboration_rate"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| rank (base collaboration rate (FS-GEN's proxy count)) |" in md


def test_a_table_without_proxy_has_no_base_rate_column(runs_dir):
    rep = build_report(find_runs([runs_dir]), _params(), n_boot=20)
    assert all(c.key != "base_collaboration_rate" for c in rep.tables[0].columns)
    matrix = next(f for f in rep.figures if f.title.startswith("Collaboration rate gsm8k: pair"))
    assert matrix.caption == "empty cell: that pair did not run that configuration"


def test_contrastive_runs_are_labelled_with_their_variant_and_never_share_a_series(tmp_path):
    root = tmp_path / "runs"
    for variant in ("fsgen", "obrien"):
        for i, (s, l) in enumerate([("org/s1", "org/l1"), ("org/s1", "org/l2"), ("org/s2", "org/l1")]):
            write_run(root / f"{variant}{i}", s, l, method="contrastive", tasks={"gsm8k": ACC},
                      traces={"gsm8k": random_traces(6, 30, seed=10 * i + len(variant))},
                      params={"alpha": 0.1, "beta": 0.5, "contrastive_variant": variant})
    write_run(root / "old", "org/s2", "org/l2", method="contrastive", tasks={"gsm8k": ACC},
              traces={"gsm8k": random_traces(6, 30, seed=5)})  # written before the variant was recorded
    runs = find_runs([root])
    assert sorted({r.label for r in runs}) == ["contrastive/always", "contrastive[fsgen]/always",
                                               "contrastive[obrien]/always"]
    rep = build_report(runs, _params(), n_boot=20)
    configs = {r["config"] for r in rep.tables[0].rows}
    assert {"contrastive[fsgen]/always", "contrastive[obrien]/always"} <= configs
    (scaling,) = [f for f in rep.figures if f.title == "Collaboration rate vs parameter ratio"]
    assert "scaling_law.py" in scaling.caption and "not checked against the paper" in scaling.caption
    # one fit group per variant: 3 pairs each, fitted apart; the unrecorded run is a group of its own
    from fsgen_eval.analysis.report import scaling_series
    series = scaling_series(runs, _params(), 20, [])
    labels = sorted(s.label for s in series)
    assert labels == ["task=gsm8k method=contrastive", "task=gsm8k method=contrastive[fsgen]",
                      "task=gsm8k method=contrastive[obrien]"]
    assert sorted(len(s.r) for s in series) == [1, 3, 3]
    cube = next(f for f in rep.figures if f.title.startswith("Collaboration rate over model sizes"))
    assert {c[1] for c in cube.data[1]} == {"contrastive", "contrastive[fsgen]", "contrastive[obrien]"}
    assert "3d_scattar_plot_fig1.py" in cube.caption and "not checked against the paper" in cube.caption
