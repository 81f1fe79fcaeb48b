"""Vocabulary handling and bad input: every error is a ValueError naming the problem, raised before any
model runs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from fsgen_eval import ModelPair, generate, loglikelihood
from fsgen_eval.engine.api import encode
from fsgen_eval.engine.pair import check_same_vocab


def test_padded_embedding_pair_cuts_logits_to_the_tokenizer(llama_pair, padded_large, tokenizer):
    _, small = llama_pair
    pair = ModelPair.load(small=str(small), large=str(padded_large))
    assert pair.large.get_output_embeddings().weight.shape[0] == len(tokenizer) + 16
    assert pair.vocab_size == len(tokenizer)
    prompts = ["Question: What is 3 + 4? Answer:", "def add(a, b):"]
    out = generate(pair, prompts, method="speculative", max_new_tokens=20)
    extra = list(range(len(tokenizer), len(tokenizer) + 16))
    for p, got in zip(prompts, out.token_ids):
        ids = torch.tensor([encode(pair, p)])
        # generate() itself would consider the padded rows; suppressing them is what cutting means
        want = pair.large.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=False,
                                   suppress_tokens=extra, pad_token_id=pair.pad_token_id)[0, ids.shape[1]:]
        assert got == want.tolist()
        assert max(got) < len(tokenizer)


def test_different_vocabularies_are_refused_naming_sizes_and_a_token(llama_pair, other_vocab_model, tokenizer):
    _, small = llama_pair
    other = AutoTokenizer.from_pretrained(str(other_vocab_model))
    with pytest.raises(ValueError) as err:
        ModelPair.load(small=str(small), large=str(other_vocab_model))
    msg = str(err.value)
    assert f"different vocabularies ({len(tokenizer)} vs {len(other)} tokens)" in msg
    # the named token really differs
    tok = msg.split("token ", 1)[1].split(" is id ", 1)[0].strip("'")
    assert tokenizer.get_vocab()[tok] != other.get_vocab().get(tok)
    assert "\n" not in msg


def test_same_vocabulary_passes_and_one_changed_id_is_named(tokenizer):
    assert check_same_vocab(tokenizer, tokenizer, "a", "b") is None

    class Swapped:
        def get_vocab(self):
            v = dict(tokenizer.get_vocab())
            v["Ġthe"], v["Ġa"] = v["Ġa"], v["Ġthe"]
            return v

    with pytest.raises(ValueError, match="token 'Ġ(the|a)' is id \\d+ in a but id \\d+ in b"):
        check_same_vocab(tokenizer, Swapped(), "a", "b")


@pytest.mark.parametrize("path,needle", [("/nonexistent/model-dir", "does not exist"), ("EMPTY", "not a transformers model")])
def test_missing_or_non_model_paths_fail_in_one_line(llama_pair, tmp_path, path, needle):
    _, small = llama_pair
    large = str(tmp_path) if path == "EMPTY" else path
    with pytest.raises(ValueError, match=needle) as err:
        ModelPair.load(small=str(small), large=large)
    assert "\n" not in str(err.value)


@pytest.fixture()
def exploding(pair, monkeypatch):
    """A pair whose models fail if run: proves validation happens before any forward pass."""
    def boom(*a, **k):
        raise AssertionError("a model ran before the input was validated")
    for m in (pair.small, pair.large):
        monkeypatch.setattr(m, "forward", boom)
    return pair


BAD = [
    (dict(method="medusa"), "unknown method 'medusa'; valid methods: oracle, speculative, contrastive, proxy"),
    (dict(router="sometimes"), "unknown router 'sometimes'; valid routers: always, never, max_prob, margin, entropy"),
    (dict(method="proxy"), "method 'proxy' needs small_base"),
    (dict(threshold=0.5), "router 'always' takes no threshold"),
    (dict(router="entropy"), "router 'entropy' needs a threshold"),
    (dict(method="oracle", beta=0.3), "method 'oracle' does not use parameter\\(s\\) beta"),
    (dict(method="contrastive", num_draft=3), "does not use parameter\\(s\\) num_draft"),
    (dict(method="speculative", num_draft=0), "num_draft must be an integer >= 1"),
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(temperature=1.0, top_p=0.0), "top_p must be in \\(0, 1\\]"),
    (dict(temperature=1.0, top_p=1.5), "top_p must be in \\(0, 1\\]"),
    (dict(method="contrastive", contrastive_variant="x"), "unknown contrastive_variant 'x'; valid: obrien, fsgen"),
    (dict(batch_size=0), "batch_size must be >= 1"),
]


@pytest.mark.parametrize("kwargs,msg", BAD)
def test_bad_generate_input(exploding, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        generate(exploding, ["hello"], max_new_tokens=4, **kwargs)


@pytest.mark.parametrize("kwargs,msg", [b for b in BAD if "temperature" not in b[0] and "top_p" not in b[0]])
def test_bad_loglikelihood_input(exploding, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        loglikelihood(exploding, [("hello", " world")], **kwargs)
