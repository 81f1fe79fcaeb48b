"""The committed families (micro, arith): load offline with their shared tokenizer, counts and losses as documented."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import skip_or_fail
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from fsgen_eval.experiments.zoo.family import get_family, load_family_yaml

REPO = Path(__file__).resolve().parents[1]

# A GSM8K-style text made up here (not from any split), in lm-eval's format.
TEXT = ("Question: Tom has 3 boxes with 4 pens in each box. He gives away 5 pens. How many pens are left?\n"
        "Answer: Tom has 3 * 4 = <<3*4=12>>12 pens.\nHe has 12 - 5 = <<12-5=7>>7 pens left.\n#### 7")
# An arith problem made up here (a question of neither split: checked below), in the task's format.
ARITH_TEXT = ("Question: Mia has 41 stamps. She buys 17 more. Then she gives 9 to Omar. How many stamps does Mia "
              "have now?\nAnswer: She buys 17 more, so she has 41 + 17 = <<41+17=58>>58 stamps.\nShe gives away 9, so "
              "she has 58 - 9 = <<58-9=49>>49 stamps.\n#### 49")


@pytest.fixture(scope="module", params=["micro", "arith"])
def family(request):
    """Each committed family's name, yaml and models folder."""
    return request.param, REPO / "model_configs" / f"{request.param}.yaml", REPO / "models" / request.param


@pytest.fixture(scope="module")
def entries(family):
    return load_family_yaml(family[1])


@pytest.fixture(scope="module")
def loaded(entries):
    """name -> (fp32 model, tokenizer), loaded offline from each model's own folder."""
    out = {}
    for e in entries:
        model = AutoModelForCausalLM.from_pretrained(str(e.path), local_files_only=True, dtype=torch.float32).eval()
        out[e.name] = (model, AutoTokenizer.from_pretrained(str(e.path), local_files_only=True))
    return out


def test_yaml_lists_the_family_in_size_order(family, entries):
    assert [e.name for e in entries] == [m.name for m in get_family(family[0]).models]
    totals = [e.total_params for e in entries]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    assert totals[-1] / totals[0] >= 30
    raw = yaml.safe_load(family[1].read_text())
    assert all(not Path(m["path"]).is_absolute() and (REPO / m["path"]).is_dir() for m in raw["models"])
    assert (REPO / raw["tokenizer"] / "tokenizer.json").is_file()


def test_models_load_offline_with_the_shared_tokenizer(family, entries, loaded):
    shared = AutoTokenizer.from_pretrained(str(family[2] / "tokenizer"), local_files_only=True)
    shared_json = (family[2] / "tokenizer" / "tokenizer.json").read_bytes()
    ids = shared(TEXT).input_ids
    for e in entries:
        model, tok = loaded[e.name]
        assert isinstance(model, LlamaForCausalLM)
        assert (e.path / "model.safetensors").is_file()
        assert (e.path / "tokenizer.json").read_bytes() == shared_json
        assert tok(TEXT).input_ids == ids and tok.eos_token_id == shared.eos_token_id
        # arith's BPE ran out of merges at 505 tokens, under the 512 rows the models were built with: the spare
        # rows are never a token (the engine cuts the vocabulary to the tokenizer's); micro fills its 2048 exactly
        assert model.config.vocab_size >= len(shared) and (family[0] != "micro" or model.config.vocab_size == len(shared))


def test_yaml_counts_equal_the_loaded_models(entries, loaded):
    for e in entries:
        model, _ = loaded[e.name]
        assert model.num_parameters() == e.total_params
        embedding = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        embed_params = embedding.numel() + (0 if head is embedding else head.numel())
        assert e.non_embedding_params == e.total_params - embed_params
        assert (e.extra["hidden_size"], e.extra["num_layers"]) == (model.config.hidden_size, model.config.num_hidden_layers)


def test_heldout_loss_falls_as_size_grows(entries):
    losses = [e.extra["heldout_loss"] for e in entries]
    assert all(a > b for a, b in zip(losses, losses[1:])), losses


def test_larger_models_predict_unseen_text_better(family, entries, loaded):
    """The smallest and the largest model on a text of the family's training format made up here."""
    text = ARITH_TEXT if family[0] == "arith" else TEXT
    if family[0] == "arith":
        from fsgen_eval.core import arith

        assert text.split("\n")[0].removeprefix("Question: ") not in {
            p.question for docs in arith.split_problems().values() for p in docs}
    nll = []
    for e in entries[:: len(entries) - 1]:  # smallest and largest
        model, tok = loaded[e.name]
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            nll.append(model(ids, labels=ids).loss.item())
    assert nll[1] < nll[0]


def test_committed_weights_fit_the_size_budget(family):
    size = sum(p.stat().st_size for p in family[2].rglob("*") if p.is_file())
    assert size <= 30 * 2**20, f"{size / 2**20:.1f} MiB"


def test_heldout_loss_reproduces_from_the_committed_weights(family, entries, loaded, tmp_path):
    """Rebuild the held-out stream (GSM8K test for micro, the arith validation split for arith) and rescore the
    smallest model: the card's figure returns."""
    from fsgen_eval.experiments.zoo import corpus
    from fsgen_eval.experiments.zoo.tokenizer import encode_episodes
    from fsgen_eval.experiments.zoo.train import heldout_loss

    spec = get_family(family[0])
    if spec.corpus == "arith":
        episodes = corpus.arith_heldout_episodes(spec.per_episode)
    else:
        if not os.environ.get("FSGEN_DATASETS_DIR"):
            skip_or_fail("needs FSGEN_DATASETS_DIR (GSM8K test); conftest sets it from ../shared/hf-datasets")
        episodes = corpus.heldout_episodes(corpus.resolve_datasets_dir(None), spec.per_episode)
    model, tok = loaded[entries[0].name]
    loss, _ = heldout_loss(model, encode_episodes(tok, episodes), spec.seq_len, spec.heldout_tokens)
    assert loss == pytest.approx(entries[0].extra["heldout_loss"], abs=1e-3)
