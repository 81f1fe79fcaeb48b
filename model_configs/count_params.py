"""Parameter counts of the model families in this folder, computed from each model's ``config.json`` fields.

Each YAML here copies, per model, the ``config.json`` fields the count depends on (under ``config``) and
stores the two counts the analysis uses: ``total_params`` and ``non_embedding_params`` (total minus the
input embedding and, when it is a separate matrix, the output head — the convention of the Pythia and
Qwen model cards). Run::

    python model_configs/count_params.py            # check every YAML: stored counts == formula
    python model_configs/count_params.py --write    # (re)write the counts from the formula

Formulas (h = hidden_size, I = intermediate_size, L = num_hidden_layers, V = vocab_size,
kv = num_key_value_heads * h / num_attention_heads):

* ``qwen2`` (Qwen1.5, Qwen2.5): per layer q (h·h + h bias), k and v (h·kv + kv bias each), o (h·h, no bias),
  SwiGLU MLP (3·h·I), two RMSNorm weights (2·h); a final RMSNorm (h); embedding V·h, and a separate
  head V·h unless ``tie_word_embeddings``.
* ``gpt_neox`` (Pythia): per layer fused qkv (h·3h + 3h), dense (h·h + h), MLP (h·I + I + I·h + h), two
  LayerNorms with bias (4·h); a final LayerNorm (2·h); embedding V·h and an untied head V·h.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def qwen2_counts(c: dict) -> tuple[int, int]:
    """(total, non-embedding) parameters of a Qwen2-architecture causal LM."""
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    body = layers * per_layer + h
    embed = vocab * h * (1 if c["tie_word_embeddings"] else 2)
    return body + embed, body


def gpt_neox_counts(c: dict) -> tuple[int, int]:
    """(total, non-embedding) parameters of a GPT-NeoX causal LM (untied head)."""
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    per_layer = (3 * h * h + 3 * h) + (h * h + h) + (2 * h * inter + inter + h) + 4 * h
    body = layers * per_layer + 2 * h
    embed = vocab * h * (1 if c.get("tie_word_embeddings", False) else 2)
    return body + embed, body


FORMULAS = {"qwen2": qwen2_counts, "gpt_neox": gpt_neox_counts}


def check_file(path: Path, write: bool) -> list[str]:
    """Compare (or, with ``write``, replace) the stored counts of one family file; returns mismatches."""
    data = yaml.safe_load(path.read_text())
    if "architecture" not in data:
        # a family trained here (micro.yaml) records counts taken from its saved weights, which
        # tests/test_zoo_models.py compares with the loaded models; there is no config formula to apply
        return []
    count = FORMULAS[data["architecture"]]
    problems = []
    for m in data["models"]:
        total, non_emb = count(m["config"])
        if write:
            m["total_params"], m["non_embedding_params"] = total, non_emb
        elif (m.get("total_params"), m.get("non_embedding_params")) != (total, non_emb):
            problems.append(f"{path.name}: {m['name']}: stored {m.get('total_params')}/"
                            f"{m.get('non_embedding_params')}, formula {total}/{non_emb}")
    if write:
        path.write_text(yaml.safe_dump(data, sort_keys=False, width=110))
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite the stored counts from the formula")
    args = p.parse_args(argv)
    problems = [msg for f in sorted(HERE.glob("*.yaml")) for msg in check_file(f, args.write)]
    for msg in problems:
        print(msg, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
