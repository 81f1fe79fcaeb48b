"""The family's shared byte-level BPE tokenizer, and the corpus as one flat stream of token ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from fsgen_eval.experiments.zoo.corpus import Episode

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path, split_digits: bool = False) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts`` (training splits only) and save it in transformers' format.

    Byte level: every string, code and unseen symbols included, encodes without an unknown token.
    EOS doubles as BOS and PAD, as in GPT-2, since the models never see padding during training.
    ``split_digits``: each digit is its own pre-token, so no merge spans digits and a number's place
    values stay visible (as LLaMA's and Qwen's tokenizers do); the arith family needs it to learn carries.
    """
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS)
    fast.model_max_length = 2048  # the models' max_position_embeddings; keeps lm-eval from guessing
    fast.save_pretrained(str(out_dir))
    return fast


def encode_episodes(tokenizer: PreTrainedTokenizerFast, episodes: list[Episode]) -> np.ndarray:
    """All episodes as one uint16 stream, each followed by EOS, so the model learns where a prompt starts."""
    if len(tokenizer) > np.iinfo(np.uint16).max:
        raise ValueError(f"vocabulary of {len(tokenizer)} does not fit uint16")
    # The raw backend: episodes are longer than model_max_length, which is fine for a stream to be cut up.
    ids = [enc.ids for enc in tokenizer.backend_tokenizer.encode_batch([e.text for e in episodes], add_special_tokens=False)]
    eos = tokenizer.eos_token_id
    flat = [t for seq in ids for t in (*seq, eos)]
    return np.asarray(flat, dtype=np.uint16)
