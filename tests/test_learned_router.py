"""Learned routers: fitting (scikit-learn), the file format, numpy and torch evaluation, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fsgen_eval.analysis import learned as A
from fsgen_eval.cli import main
from fsgen_eval.core import learned as L
from fsgen_eval.core.routers import LearnedRoute
from fsgen_eval.core.sampling import stats


def test_threshold_for_by_hand():
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert A.threshold_for(s, 0.4) == 3.5  # halfway between the last called and the first uncalled score
    assert A.threshold_for(s, 0.45) == 3.5  # at most 2.25 tokens: 2
    assert A.threshold_for(s, 0.0) == 6.0 and not (s > 6.0).any()
    assert (s > A.threshold_for(s, 1.0)).all()
    ties = np.array([2.0, 2.0, 2.0, 1.0])
    assert (ties > A.threshold_for(ties, 0.5)).mean() == 0.0  # ties cannot be split: fewer calls, not more
    with pytest.raises(ValueError, match="target call rate"):
        A.threshold_for(s, 1.5)


def test_balanced_sample_keeps_every_positive_and_as_many_negatives():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 1], bool)
    idx = A.balanced_sample(y, np.random.default_rng(0), 100)
    assert set(np.flatnonzero(y)) <= set(idx) and len(idx) == 6 and y[idx].sum() == 3
    assert len(A.balanced_sample(y, np.random.default_rng(0), 4)) == 4


def _synthetic(n: int = 600, seed: int = 0):
    """Log-probs [n, V] of random peaked distributions; handoff more likely where System 1 is unsure."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 50, generator=g) * torch.rand(n, 1, generator=g) * 6
    lp = logits.log_softmax(-1)
    ent, top1, marg = stats(lp)
    pos = torch.arange(n) % 40
    rng = np.random.default_rng(seed)
    y = rng.random(n) < (1 - top1.numpy()) * 0.9
    x_scalar = np.stack([ent.numpy(), top1.numpy(), marg.numpy(), pos.numpy()], 1).astype(np.float64)
    x_topk = lp.topk(10, -1).values.exp().float().numpy().astype(np.float64)
    return lp, pos, y, x_scalar, x_topk


@pytest.mark.parametrize("features", ["scalar", "topk"])
@pytest.mark.parametrize("model", ["logistic", "svm"])
@pytest.mark.parametrize("balance", ["downsample", "weight"])
def test_numpy_and_torch_scores_equal_sklearn(features, model, balance, tmp_path):
    lp, pos, y, xs, xt = _synthetic()
    x = xs if features == "scalar" else xt
    router, scaler, clf = A.fit(A.Dataset(x, y, []), model, 0.3, features, 10, balance, max_samples=400,
                                return_estimator=True)
    expected = clf.decision_function(scaler.transform(x))
    np.testing.assert_allclose(L.decision(router, x), expected, atol=1e-5, rtol=0)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(L.to_json(router)))
    route = LearnedRoute(L.load(path))
    got = route.scores(lp, pos).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    calls = route(lp, pos).numpy()
    assert calls.mean() <= 0.3 + 1e-9 and calls.mean() > 0.2
    assert router.info["train"]["call_rate"] == calls.mean()
    # a learned router catches more handoffs than chance at its call rate
    assert calls[y].mean() > calls.mean()


def test_learned_file_errors_name_the_problem(tmp_path):
    p = tmp_path / "r.json"
    with pytest.raises(FileNotFoundError, match="no such file"):
        L.load(p)
    p.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        L.load(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a learned router file"):
        L.load(p)
    lp, pos, y, xs, _ = _synthetic(200)
    good = L.to_json(A.fit(A.Dataset(xs, y, []), "logistic", 0.2, "scalar"))
    p.write_text(json.dumps({**good, "coef": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="coef needs 4 values"):
        L.load(p)
    with pytest.raises(ValueError, match="position"):
        LearnedRoute(L.from_json(good))(lp)


@pytest.fixture(scope="module")
def trace_files(llama_pair, tmp_path_factory):
    """router=always traces with top-K of the tiny pair, written as the adapter writes them."""
    from fsgen_eval import ModelPair, generate
    from fsgen_eval.lm_eval.traces import TraceWriter, make_record

    large, small = llama_pair
    pair = ModelPair.load(small=str(small), large=str(large))
    prompts = ["Question: What is 3 + 4? Answer:", "def add(a, b):", "Natalia sold clips to 48 of her friends",
               "A.", "Let's think step by step.", "The following are multiple choice questions"]
    out = generate(pair, prompts, max_new_tokens=24, trace_topk=10)
    folder = tmp_path_factory.mktemp("learned")
    path = folder / "traces_T.jsonl"
    w = TraceWriter(path)
    w.write_batch([make_record({"task": "t", "doc_id": i}, t, c) for i, (t, c) in enumerate(zip(out.traces, out.counters))])
    w.close()
    return pair, prompts, path


def test_cli_trains_and_the_whatif_includes_learned_routers(trace_files, tmp_path, capsys):
    _, _, path = trace_files
    for features, model in (("scalar", "logistic"), ("topk", "svm")):
        out = tmp_path / f"{features}.json"
        assert main(["router", "train", str(path), "--features", features, "--model", model,
                     "--target-call-rate", "0.4", "-o", str(out)]) == 0
        r = L.load(out)
        assert r.model == model and r.features == features and r.info["train"]["call_rate"] <= 0.4
    capsys.readouterr()
    assert main(["analyze", str(path), "--target-call-rate", "0.4", "--learned",
                 str(tmp_path / "scalar.json"), str(tmp_path / "topk.json")]) == 0
    text = capsys.readouterr().out
    assert "what-if learned:scalar" in text and "what-if learned:topk" in text and "saved threshold" in text
    assert main(["router", "compare", str(path), "--routers", str(tmp_path / "scalar.json"), "--rates", "0.2,0.4"]) == 0
    table = capsys.readouterr().out
    assert "| scalar |" in table and "| margin |" in table


def test_cli_refuses_bad_input_in_one_line(trace_files, tmp_path, capsys):
    _, _, path = trace_files
    assert main(["router", "train", str(path), "--target-call-rate", "1.5", "-o", str(tmp_path / "r.json")]) == 2
    assert "target-call-rate" in capsys.readouterr().err
    plain = tmp_path / "plain.jsonl"  # no side file
    plain.write_text(path.read_text())
    assert main(["router", "train", str(plain), "--features", "topk", "--target-call-rate", "0.3",
                 "-o", str(tmp_path / "r.json")]) == 2
    assert "no top-K side file" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("features,model", [("scalar", "logistic"), ("topk", "svm")])
def test_engine_router_learned_calls_exactly_where_the_saved_model_says(trace_files, tmp_path, features, model):
    from fsgen_eval import generate, loglikelihood

    pair, prompts, path = trace_files
    out = tmp_path / "r.json"
    assert main(["router", "train", str(path), "--features", features, "--model", model,
                 "--target-call-rate", "0.4", "-o", str(out)]) == 0
    r = L.load(out)
    run = generate(pair, prompts, router="learned", router_path=str(out), max_new_tokens=24, trace_topk=10)
    assert 0 < run.summary["llm_call_rate"] < 1
    for t in run.traces:
        # the engine's torch decisions are the saved model's numpy decisions on the recorded features
        scores = L.decision(r, L.trace_features(features, t, t["s1_topk_probs"], r.k))
        near = np.abs(scores - r.threshold) < 1e-4
        assert np.array_equal((scores > r.threshold)[~near], t["llm_called"][~near])
    ll = loglikelihood(pair, [("Question: What is 3 + 4? Answer:", " 7 and 8")], router="learned",
                       router_path=str(out))
    assert len(ll.traces[0]["llm_called"]) == len(ll.traces[0]["token_id"])


def test_router_learned_needs_an_existing_file(tmp_path):
    from fsgen_eval.engine.config import make_config

    with pytest.raises(ValueError, match="router_path"):
        make_config(router="learned")
    with pytest.raises(ValueError, match="no such file"):
        make_config(router="learned", router_path=str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "fsgen-learned-router/1"}')
    with pytest.raises(ValueError, match="not a learned router file"):
        make_config(router="learned", router_path=str(bad))


def test_learned_router_with_the_position_feature_sees_each_rows_own_position(trace_files, tmp_path):
    # speculative rows drift apart (each accepts its own drafts): a router reading the position must get
    # each row's own count of generated tokens, so a ragged batch gives what each row gives alone
    from fsgen_eval import generate

    pair, prompts, path = trace_files
    out = tmp_path / "r.json"
    assert main(["router", "train", str(path), "--features", "scalar", "--model", "logistic",
                 "--target-call-rate", "0.4", "-o", str(out)]) == 0
    assert L.load(out).coef[3] != 0, "the position feature must weigh in"
    kw = dict(method="speculative", num_draft=4, router="learned", router_path=str(out), max_new_tokens=24)
    alone = generate(pair, prompts, batch_size=1, **kw)
    batch = generate(pair, prompts, batch_size=len(prompts), **kw)
    assert len({c["verification_steps"] for c in alone.counters}) > 1
    assert batch.token_ids == alone.token_ids and batch.counters == alone.counters


def test_report_draws_learned_routers_beside_the_threshold_routers(trace_files, tmp_path):
    import shutil

    from analysis_helpers import random_traces, write_run
    from fsgen_eval.analysis.files import find_runs
    from fsgen_eval.analysis.report import build_report

    _, _, path = trace_files
    folder = write_run(tmp_path / "runs", "s", "l", traces={"t": random_traces(2, 5, seed=0)}, ts="T")
    shutil.copy(path, folder / "traces_T.jsonl")  # the run's traces: the tiny pair's router=always records
    router = tmp_path / "scalar.json"
    assert main(["router", "train", str(path), "--features", "scalar", "--model", "logistic",
                 "--target-call-rate", "0.4", "-o", str(router)]) == 0
    rep = build_report(find_runs([tmp_path / "runs"]), n_boot=10, learned={"scalar": router})
    (fig,) = [f for f in rep.figures if f.title == "Router trade-off (from router=always traces)"]
    head, rows = fig.data
    assert head[0] == "router" and [r[0] for r in rows] == ["s1_entropy", "1-s1_top1_prob", "-s1_margin",
                                                             "learned:scalar"]
    assert all(0.0 <= float(c) <= 1.0 for r in rows for c in r[1:] if c != "–")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        build_report(find_runs([tmp_path / "runs"]), n_boot=10, learned={"bad": bad})
