"""``fsgen-eval label`` end to end on a lockstep oracle run of tiny fp32 models (GSM8K and MBPP prompts), its
refusals (one line, before any model loads), resuming, and ``router train --labels necessary``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from _lm_eval_helpers import TASKS, lm_eval_run
from fsgen_eval.analysis import files
from fsgen_eval.cli import main
from fsgen_eval.experiments import label as LB
from fsgen_eval.experiments import label_run as R

pytestmark = pytest.mark.slow
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(llama_pair, tmp_path_factory):
    large, small = llama_pair
    root = tmp_path_factory.mktemp("label")
    return {"folder": lm_eval_run(root / "oracle", "fsgen", f"small={small},large={large},method=oracle,device=cpu,"
                                      "dtype=float32,trace=None", max_gen_toks=16), "root": root, "small": small, "large": large}


def _label(run, out: str, *extra: str) -> int:
    return main(["label", str(run["folder"]), "-o", str(run["root"] / out), "--include_path", str(TASKS),
                 "--n-boot", "100", "--batch-size", "3", *extra])


def test_every_handoff_labelled_with_system1s_own_token_and_independent_continuation(run):
    assert _label(run, "all") == 0
    out = run["root"] / "all"
    recs = LB.read_labels(out / "labels.jsonl")
    lr, tok = R.read_label_run(run["folder"])
    assert sorted(LB.record_key(r) for r in recs) == sorted(h.key for h in lr.handoffs)  # all, once each
    book = json.loads((out / "runs.json").read_text())[lr.run_id]
    assert book["own_score_mismatches"] == 0  # the scorer gives lm-eval's own per-request value (MBPP: sandbox)
    small = AutoModelForCausalLM.from_pretrained(run["small"]).float().eval()
    large = AutoModelForCausalLM.from_pretrained(run["large"]).float().eval()
    scorer = R.TaskScorer(sorted({t for t, _ in lr.docs}), str(TASKS))
    for r in recs:
        d = lr.docs[(r["task"], r["doc_id"])]
        with torch.no_grad():  # System 1's token: the small model's argmax after the prompt and System 2's prefix
            logits = small(torch.tensor([d.prompt + d.generation[:r["position"]]])).logits[0, -1]
        assert r["s1_token"] == int(logits.argmax()) != r["s2_token"] == d.generation[r["position"]]
        head = d.generation[:r["position"]] + [r["s1_token"]]
        budget = d.max_gen_toks - r["position"] - 1
        cont = large.generate(torch.tensor([d.prompt + head]), max_new_tokens=budget, do_sample=False,
                              pad_token_id=0)[0, len(d.prompt) + len(head):].tolist() if budget else []
        eos = AutoTokenizer.from_pretrained(run["large"]).eos_token_id
        cont = cont[:cont.index(eos) + 1] if eos in cont else cont
        new = scorer((r["task"], r["doc_id"]), LB.cut_at_stop(tok.decode(head + cont), d.stop))
        own = scorer((r["task"], r["doc_id"]), LB.cut_at_stop(tok.decode(d.generation), d.stop))
        assert (r["label"], r["direction"]) == LB.outcome(own, new)
    stats = json.loads((out / "labels.json").read_text())["runs"][0]
    assert stats["labelled"] == len(recs) == stats["handoffs"]
    assert "necessary_rate" in (out / "labels.md").read_text()


def _labels_by_position(folder: Path) -> dict[tuple[str, int, int], tuple[int, int, str, str]]:
    return {(r["task"], r["doc_id"], r["position"]): (r["s1_token"], r["s2_token"], r["label"], r["direction"])
            for r in LB.read_labels(folder / "labels.jsonl")}


def test_labels_of_a_replayed_run_equal_the_lockstep_oracle_runs(run):
    """System 2 alone (the large model as System 1, router never) replayed with the small model is the same
    oracle run as the lockstep one, so labelling it gives the same handoffs, System 1 tokens and labels."""
    root, small, large = run["root"], run["small"], run["large"]
    s2 = lm_eval_run(root / "system2", "fsgen", f"small={large},large={large},method=oracle,router=never,"
                     "device=cpu,dtype=float32,trace=None", max_gen_toks=16)
    assert main(["replay", str(s2), "--small", str(small), "--large", str(large), "-o", str(root / "replay")]) == 0
    (replayed,) = (root / "replay").rglob("results_*.json")
    assert files.load_run(replayed).fsgen.replay  # a replayed run, not a lockstep one
    assert main(["label", str(replayed.parent), "-o", str(root / "replay-labels"), "--include_path", str(TASKS),
                 "--n-boot", "100", "--batch-size", "3"]) == 0
    assert _label(run, "all") == 0  # the lockstep run's labels (resumed: nothing left if already labelled)
    lockstep, replay = _labels_by_position(root / "all"), _labels_by_position(root / "replay-labels")
    assert lockstep and replay == lockstep
    book = json.loads((root / "replay-labels" / "runs.json").read_text())
    (entry,) = book.values()
    assert entry["own_score_mismatches"] == 0 and entry["handoffs"] >= len(replay)


def test_sample_resumes_and_refuses_another_sample_in_the_same_folder(run, capsys):
    assert _label(run, "s", "--sample", "2", "--seed", "3") == 0
    first = LB.read_labels(run["root"] / "s" / "labels.jsonl")
    assert len(first) == 2
    assert _label(run, "s", "--sample", "2", "--seed", "3") == 0  # nothing left: no duplicate
    assert LB.read_labels(run["root"] / "s" / "labels.jsonl") == first
    assert _label(run, "s", "--sample", "3", "--seed", "3") == 2
    assert "--sample 2 --seed 3" in capsys.readouterr().err


@pytest.fixture
def no_weights(monkeypatch):
    import fsgen_eval.engine.pair as pair

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")
    monkeypatch.setattr(pair, "load_model", refuse)


def _copy(run, to: str) -> Path:
    dst = run["root"] / to
    shutil.copytree(run["folder"], dst)
    return dst


def _edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _refused(folder: Path, run, capsys) -> str:
    assert main(["label", str(folder), "-o", str(run["root"] / "bad"), "--include_path", str(TASKS)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_before_any_model_loads(run, capsys, no_weights):
    router = _copy(run, "router")
    (res,) = router.glob("results_*.json")
    _edit(res, lambda o: o["config"]["fsgen"].update(router="entropy"))
    assert "router always" in _refused(router, run, capsys)

    sampled = _copy(run, "sampled")
    for f in sampled.glob("samples_*.jsonl"):
        lines = [json.loads(x) for x in f.read_text().splitlines()]
        for x in lines:
            x["arguments"]["gen_args_0"]["arg_1"].update(do_sample=True, temperature=0.7)
        f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert "was sampled" in _refused(sampled, run, capsys)

    mc = _copy(run, "loglikelihood")
    (res,) = mc.glob("results_*.json")
    _edit(res, lambda o: o["configs"]["gsm8k"].update(output_type="multiple_choice"))
    assert "multiple_choice task" in _refused(mc, run, capsys)

    assert "no such file" in _refused(run["root"] / "absent", run, capsys)
    assert main(["label", str(run["folder"]), "-o", str(run["root"] / "bad"), "--sample", "0"]) == 2


def test_router_train_on_necessary_labels_and_refuses_another_pairs(run, capsys, tmp_path):
    out = run["root"] / "all"
    if not (out / "labels.jsonl").exists():
        assert _label(run, "all") == 0
    recs = LB.read_labels(out / "labels.jsonl")
    # the tiny models' answers never parse, so every label is neutral: make two necessary to have both classes
    fake = tmp_path / "labels"
    fake.mkdir()
    shutil.copy(out / "runs.json", fake / "runs.json")
    (fake / "labels.jsonl").write_text("".join(json.dumps(dict(r, label="necessary" if i < 2 else r["label"])) + "\n"
                                               for i, r in enumerate(recs)))
    (trace,) = run["folder"].glob("traces_*.jsonl")
    router = tmp_path / "r.json"
    assert main(["router", "train", str(trace), "--labels", "necessary", "--label-dir", str(fake),
                 "--target-call-rate", "0.2", "-o", str(router)]) == 0
    info = json.loads(router.read_text())
    assert info["labels"] == "necessary" and info["train"]["handoffs"] == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "labels.jsonl").write_text((fake / "labels.jsonl").read_text())
    runs = json.loads((fake / "runs.json").read_text())
    for v in runs.values():
        v["large"] = "/elsewhere/model"
    (other / "runs.json").write_text(json.dumps(runs))
    assert main(["router", "train", str(trace), "--labels", "necessary", "--label-dir", str(other),
                 "--target-call-rate", "0.2", "-o", str(tmp_path / "r2.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels of the pair" in err and len(err.splitlines()) == 1
