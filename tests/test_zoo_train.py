"""`fsgen-eval zoo train` on a toy datasets folder: formats, data order, loss, bit-for-bit resumption, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from fsgen_eval.cli import main
from fsgen_eval.experiments.zoo import corpus as C
from fsgen_eval.experiments.zoo.family import TOY, FamilyConfig, ModelSpec, load_family_yaml
from fsgen_eval.experiments.zoo.train import batch_at, lr_at, train_model

TEST_MARKER = "Zanzibar"  # appears only in the GSM8K test split of the toy folder


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _gsm(i: int, who: str = "Ann") -> dict:
    a, b = i % 7 + 2, i % 5 + 3
    return {"question": f"{who} has {a} apples and buys {b} more. How many apples does {who} have?",
            "answer": f"{who} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}


def _mbpp(i: int) -> dict:
    return {"task_id": i, "text": f"Write a function to add {i} to a number.", "code": f"def add_{i}(x):\r\n  return x + {i}",
            "test_list": [f"assert add_{i}({k}) == {k + i}" for k in range(3)], "test_setup_code": "", "challenge_test_list": []}


def _mmlu(i: int, subject: str) -> dict:
    return {"question": f" Which number is {i} plus one? ", "subject": subject,
            "choices": [str(i), str(i + 1), str(i + 2), str(i + 3)], "answer": 1}


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    """A folder laid out like the HF hub copies, with made-up documents."""
    root = tmp_path_factory.mktemp("datasets")
    _write(root / C.GSM8K / "train.jsonl", [_gsm(i) for i in range(60)])
    _write(root / C.GSM8K / "test.jsonl", [_gsm(i, who=TEST_MARKER) for i in range(30)])
    for split, n in (("train", 8), ("validation", 3), ("prompt", 2), ("test", 3)):
        _write(root / C.MBPP / f"{split}.jsonl", [_mbpp(i) for i in range(n)])
    for subject in ("high_school_math", "astronomy"):
        for split, n in (("dev", 5), ("validation", 6), ("test", 4)):
            _write(root / C.MMLU / subject / f"{split}.jsonl", [_mmlu(i, subject) for i in range(n)])
    return root


@pytest.fixture(scope="module")
def built(datasets_dir, tmp_path_factory) -> Path:
    """The toy family trained once through the CLI; returns the repo-like root it wrote into."""
    root = tmp_path_factory.mktemp("repo")
    argv = ["zoo", "train", "--family", "toy", "--datasets-dir", str(datasets_dir), "--out-dir", str(root / "models/toy"),
            "--config-yaml", str(root / "model_configs/toy.yaml"), "--work-dir", str(root / "runs/toy")]
    assert main(argv) == 0
    return root


def test_formats_match_lm_eval_tasks():
    gsm = {"question": "Q?", "answer": "A.\n#### 3"}
    assert C.gsm8k_doc(gsm) == "Question: Q?\nAnswer: A.\n#### 3"
    mmlu = {"question": " What? ", "choices": ["w", "x", "y", "z"], "answer": 2}
    assert C.mmlu_doc(mmlu) == "What?\nA. w\nB. x\nC. y\nD. z\nAnswer: C"
    assert C.mmlu_description("abstract_algebra") == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    mbpp = {"text": "Do it.", "code": "def f():\r\n  pass", "test_list": ["t0", "t1", "t2"]}
    assert C.mbpp_doc(mbpp) == ("You are an expert Python programmer, and here is your task: Do it. Your code should "
                                "pass these tests:\n\nt0\nt1\nt2\n[BEGIN]\ndef f():\r\n  pass\n[DONE]")


def test_corpus_uses_training_splits_only(datasets_dir):
    text = "\n".join(e.text for e in C.training_episodes(datasets_dir, per_episode=3))
    assert TEST_MARKER not in text  # GSM8K test
    assert "Which number is 5 plus one?" in text  # MMLU validation has i=5, dev and test do not
    assert "add_7" in text and text.count("def add_0(x)") == 3  # mbpp train, validation, prompt — not test
    held = "\n".join(e.text for e in C.heldout_episodes(datasets_dir))
    assert held.count(f"Question: {TEST_MARKER} has") == 30


def test_every_epoch_visits_each_chunk_once():
    fam = FamilyConfig(name="t", models=(), seq_len=4, batch_size=3, seed=5)
    data = torch.arange(4 * 6 + 1)  # exactly 6 chunks of 4 (+1 target token)
    starts = [int(row[0]) for step in range(4) for row in batch_at(data, step, fam)]  # 12 rows = 2 epochs
    assert sorted(starts[:6]) == sorted(starts[6:]) == [0, 4, 8, 12, 16, 20]
    assert starts[:6] != starts[6:]  # reshuffled per epoch
    assert torch.equal(batch_at(data, 3, fam), batch_at(data, 3, fam))


def test_lr_schedule_warms_up_then_decays_to_floor():
    fam = FamilyConfig(name="t", models=(), warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(s, 20, 1.0, fam) for s in range(21)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lrs[20] == pytest.approx(0.1)


def _stream(datasets_dir: Path, work: Path):
    from fsgen_eval.experiments.zoo.build import prepare_data

    tok, train, _, _ = prepare_data(TOY, datasets_dir, work)
    return tok, train


def test_resume_after_kill_is_bit_for_bit(datasets_dir, tmp_path):
    tok, train = _stream(datasets_dir, tmp_path / "data")
    spec = TOY.models[1]
    straight = train_model(spec, TOY, train, tmp_path / "straight", tok.eos_token_id, log=lambda m: None)
    # Killed mid-way between checkpoints (checkpoint_every=6): steps 12..14 are lost and must be redone.
    half = TOY.steps // 2 + 3
    assert train_model(spec, TOY, train, tmp_path / "killed", tok.eos_token_id, stop_after=half, log=lambda m: None) is None
    ckpt = torch.load(tmp_path / "killed/checkpoint.pt", weights_only=False)
    assert ckpt["step"] == TOY.steps // 2
    resumed = train_model(spec, TOY, train, tmp_path / "killed", tok.eos_token_id, log=lambda m: None)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.steps == straight.steps == TOY.steps
    assert _losses(tmp_path / "straight/loss.csv") == _losses(tmp_path / "killed/loss.csv")


def test_resuming_with_another_setup_is_refused(datasets_dir, tmp_path):
    tok, train = _stream(datasets_dir, tmp_path / "data")
    spec = TOY.models[0]
    train_model(spec, TOY, train, tmp_path / "run", tok.eos_token_id, stop_after=TOY.checkpoint_every, log=lambda m: None)
    other = ModelSpec(spec.name, spec.hidden, spec.layers, spec.heads, lr=spec.lr * 2)
    with pytest.raises(ValueError, match="another model or training setup"):
        train_model(other, TOY, train, tmp_path / "run", tok.eos_token_id, log=lambda m: None)


def _losses(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def test_loss_falls(built):
    for spec in TOY.models:
        losses = [float(loss) for _, loss in _losses(built / "models/toy/curves" / f"{spec.name}.csv")]
        assert len(losses) == TOY.steps
        assert np.mean(losses[-4:]) < losses[0] - 1.0  # from ~ln(300)=5.7 down by more than a nat


def test_built_models_load_with_shared_tokenizer_and_counts_match(built):
    entries = load_family_yaml(built / "model_configs/toy.yaml")
    assert [e.name for e in entries] == [m.name for m in TOY.models]
    shared = (built / "models/toy/tokenizer/tokenizer.json").read_bytes()
    metrics = [e.extra["heldout_loss"] for e in entries]
    for e in entries:
        assert (e.path / "tokenizer.json").read_bytes() == shared
        model = AutoModelForCausalLM.from_pretrained(str(e.path), local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(e.path), local_files_only=True)
        with safe_open(str(e.path / "model.safetensors"), "pt") as f:  # committed in half precision
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert model.dtype == torch.float32  # config.json says float32: dtype=auto decodes exactly
        assert model.num_parameters() == e.total_params
        emb = model.get_input_embeddings().weight.numel()
        assert e.non_embedding_params == e.total_params - emb  # tied head: counted once
        ids = tok("Question: 2 + 3?\nAnswer:", return_tensors="pt").input_ids
        assert model.float()(ids).logits.shape == (1, ids.shape[1], len(tok))
    assert all(np.isfinite(metrics))
    card = (built / "models/toy/README.md").read_text()
    assert all(e.name in card for e in entries)


def test_rerun_skips_finished_models(built, datasets_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in (built / "models/toy").rglob("*.safetensors")}
    argv = ["zoo", "train", "--family", "toy", "--datasets-dir", str(datasets_dir), "--out-dir", str(built / "models/toy"),
            "--config-yaml", str(built / "model_configs/toy.yaml"), "--work-dir", str(built / "runs/toy")]
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already trained, skipping") == len(TOY.models)
    assert before == {p: p.stat().st_mtime_ns for p in (built / "models/toy").rglob("*.safetensors")}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--datasets-dir", "/nonexistent/datasets"], "does not exist"),
        (["--family", "huge"], "unknown family 'huge'"),
        (["--models", "toy-z"], "unknown model 'toy-z'"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_input_is_one_line_before_any_work(extra, message, datasets_dir, tmp_path, capsys):
    argv = ["zoo", "train", "--family", "toy", "--datasets-dir", str(datasets_dir), "--out-dir", str(tmp_path / "m"),
            "--work-dir", str(tmp_path / "w"), "--config-yaml", str(tmp_path / "c.yaml"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists() and not (tmp_path / "m").exists()


def test_missing_datasets_variable(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("FSGEN_DATASETS_DIR", raising=False)
    assert main(["zoo", "train", "--family", "toy", "--work-dir", str(tmp_path / "w")]) == 2
    assert "set FSGEN_DATASETS_DIR" in capsys.readouterr().err


def test_incomplete_datasets_dir(tmp_path, capsys):
    _write(tmp_path / "d" / C.GSM8K / "train.jsonl", [_gsm(0)])
    assert main(["zoo", "train", "--family", "toy", "--datasets-dir", str(tmp_path / "d"), "--work-dir", str(tmp_path / "w")]) == 2
    assert "lacks" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_agreement_matches_a_token_by_token_count(built, datasets_dir):
    from fsgen_eval.experiments.zoo.agreement import agreement_on, greedy_continuations, gsm8k_prompts

    small, large = (AutoModelForCausalLM.from_pretrained(str(built / "models/toy" / m.name)).float() for m in TOY.models)
    tok = AutoTokenizer.from_pretrained(str(built / "models/toy/tokenizer"))
    prompts = gsm8k_prompts(datasets_dir, n=2, shots=1)
    assert prompts[0].endswith(f"Question: {C.read_jsonl(datasets_dir / C.GSM8K / 'test.jsonl')[0]['question']}\nAnswer:")
    runs = greedy_continuations(large, tok, prompts, max_new_tokens=12)
    agree = tokens = 0
    with torch.no_grad():
        for out, p in runs:
            assert out.shape[1] > p
            for t in range(p, out.shape[1]):  # the small model's greedy token given exactly the prefix before t
                agree += int(small(out[:, :t]).logits[0, -1].argmax() == out[0, t])
                tokens += 1
    result = agreement_on(small, runs)
    assert (result.agree, result.tokens) == (agree, tokens)
    assert agreement_on(large, runs).rate == 1.0  # a model always agrees with its own greedy path
    saved = json.loads((built / "models/toy/agreement.json").read_text())
    assert saved["agreement"][TOY.models[1].name][TOY.models[0].name]["tokens"] > 0


def test_agree_command(built, datasets_dir, capsys):
    small, large = (str(built / "models/toy" / m.name) for m in TOY.models)
    argv = ["zoo", "agree", "--small", small, "--large", large, "--datasets-dir", str(datasets_dir),
            "--prompts", "2", "--shots", "1", "--max-new-tokens", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "greedy agreement" in out and "/" in out
    agree, tokens = map(int, out.split("(")[1].split(" ")[0].split("/"))
    assert 0 <= agree <= tokens and tokens > 0
    assert main([*argv[:2], "--small", small, "--large", str(built), "--datasets-dir", str(datasets_dir)]) == 2
    assert "not a model folder" in capsys.readouterr().err
