"""Tiny, deterministic model pairs for tests and benchmarks — built from configs, nothing downloaded.

The small model is cut from the large one (its embeddings, its first layers, final norm and head), so the
two agree on many next tokens and disagree on some: agreement then means something, as with a real family.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from fsgen_eval.experiments.zoo.tokenizer import EOS
from fsgen_eval.experiments.zoo.tokenizer import train_tokenizer as train_bpe


_CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? The answer is 72.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "Question: What is 3 + 4? Answer: 3 + 4 = 7. The answer is 7.",
    "def add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\n",
    "The following are multiple choice questions (with answers) about abstract algebra.",
    "A. 0\nB. 1\nC. 2\nD. 3\nAnswer: B",
    "Let's think step by step. First, we add the numbers. Then we multiply the result by two.",
]


def train_tokenizer(out_dir: str | Path, vocab_size: int = 320, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (the micro family's recipe) trained on a small corpus, saved in
    transformers' format."""
    return train_bpe((corpus or _CORPUS) * 20, vocab_size, Path(out_dir))


def _config(arch: str, vocab: int, hidden: int, layers: int, heads: int, eos_id: int, init: float):
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
            initializer_range=init, eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=eos_id,
            tie_word_embeddings=False,
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=2048, initializer_range=init,
            eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=eos_id, tie_word_embeddings=False,
        )
    raise ValueError(f"unknown arch {arch!r}; valid: llama, gpt_neox")


def _layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None) or getattr(model, "gpt_neox")
    return inner.layers


def build_pair(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "llama",
    hidden: int = 64,
    large_layers: int = 4,
    small_layers: int = 1,
    heads: int = 4,
    vocab_size: int | None = None,
    init: float = 0.2,
    late_scale: float = 0.5,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Save a large model and a small one cut from its first ``small_layers`` layers; return their dirs.

    ``late_scale`` shrinks the linear weights of the layers the small model lacks: with random weights
    every layer otherwise moves the residual stream as much as the first, and the pair would agree on
    almost no token (0.5 gives roughly 70 % agreement). ``vocab_size`` larger than the tokenizer pads the
    embedding matrix (as Qwen1.5-7B's is).
    """
    out = Path(out_dir)
    large = _random_model(tokenizer, arch, hidden, large_layers, heads, vocab_size, init, seed)
    with torch.no_grad():
        for layer in list(_layers(large))[small_layers:]:
            for mod in layer.modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.mul_(late_scale)
    small = copy.deepcopy(large)
    del _layers(small)[small_layers:]
    small.config.num_hidden_layers = small_layers
    return _save(large, tokenizer, out / f"{arch}-large"), _save(small, tokenizer, out / f"{arch}-small")


def _random_model(tokenizer: PreTrainedTokenizerFast, arch: str, hidden: int, layers: int, heads: int,
                  vocab_size: int | None, init: float, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    cfg = _config(arch, vocab_size or len(tokenizer), hidden, layers, heads, tokenizer.eos_token_id, init)
    return AutoModelForCausalLM.from_config(cfg).float().eval()


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> Path:
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def build_model(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int | None = None,
    init: float = 0.2,
    seed: int = 0,
) -> Path:
    """One standalone random model (e.g. a proxy-tuning base, or a benchmark model)."""
    return _save(_random_model(tokenizer, arch, hidden, layers, heads, vocab_size, init, seed), tokenizer, Path(out_dir))


def word_tokenizer(out_dir: str | Path, words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``words`` (id 0 is EOS): a vocabulary small enough to
    enumerate every outcome of a short generation."""
    vocab = {EOS: 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS)
    fast.save_pretrained(str(out_dir))
    return fast
