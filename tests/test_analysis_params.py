"""Parameter counts: the committed YAMLs agree with the config formula and with published counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fsgen_eval.analysis.params import DEFAULT_DIR, ParamTable

ROOT = Path(__file__).resolve().parents[1]


def _count_params():
    spec = importlib.util.spec_from_file_location("count_params", ROOT / "model_configs" / "count_params.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stored_counts_match_the_formula():
    assert _count_params().main([]) == 0


def test_formula_reproduces_pythia_readme_counts():
    cp = _count_params()
    # pythia-70m: hidden 512, 6 layers, vocab 50304; README: 70,426,624 total, 18,915,328 non-embedding
    cfg = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6, "vocab_size": 50304}
    assert cp.gpt_neox_counts(cfg) == (70_426_624, 18_915_328)


def test_tied_embeddings_are_counted_once():
    cp = _count_params()
    cfg = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}
    total, non_emb = cp.qwen2_counts(cfg)
    assert total - non_emb == 151936 * 896  # Qwen2.5-0.5B card: 0.49B total, 0.36B non-embedding
    assert round(total / 1e9, 2) == 0.49 and round(non_emb / 1e9, 2) == 0.36
    untied = cp.qwen2_counts({**cfg, "tie_word_embeddings": False})[0]
    assert untied - total == 151936 * 896


def test_every_family_is_complete_and_ordered():
    table = ParamTable.load()
    names = {m.name for m in table.models()}
    for size in ("0.5B", "1.8B", "4B", "7B", "14B", "32B", "72B"):
        assert f"Qwen1.5-{size}" in names
    for size in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B"):
        assert f"Qwen2.5-{size}" in names
    for size in ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"):
        assert f"pythia-{size}" in names
    assert DEFAULT_DIR.is_dir()


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-7B", "Qwen__Qwen2.5-7B", "qwen2.5-7b", "/models/Qwen2.5-7B/"])
def test_lookup_by_any_name(name):
    assert ParamTable.load().get(name) == 7_615_616_512
    assert ParamTable.load().get(name, "non_embedding") == 6_525_621_760


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="no parameter count for model 'foo/bar'"):
        ParamTable.load().get("foo/bar")
