"""A small/large model pair that shares one vocabulary: loading, vocabulary checks, devices."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fsgen_eval.engine.backend import Backend, TransformersBackend

# (model, role, vocab_size) -> the model's backend; refuses a model that does not fit the tokenizer
BackendFactory = Callable[[Any, str, int], Backend]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}
log = logging.getLogger(__name__)
_warned_half_on_cpu = False  # the warning is given once per process, not once per pair or sweep cell


def warn_half_on_cpu(models: dict[str, PreTrainedModel]) -> bool:
    """Warn (once per process) when a model decodes in half precision on a CPU; return whether it did.

    On a CPU, fp16/bf16 matmuls round differently with the batch's padding, so text can change with
    ``batch_size`` (micro-m → micro-xl in fp16: 1 of 8 GSM8K generations differed between batch 1 and 4).
    """
    global _warned_half_on_cpu
    half = {role: m.dtype for role, m in models.items()
            if m.dtype in (torch.float16, torch.bfloat16) and m.get_input_embeddings().weight.device.type == "cpu"}
    if not half or _warned_half_on_cpu:
        return False
    _warned_half_on_cpu = True
    which = ", ".join(f"{role} in {str(dt).removeprefix('torch.')}" for role, dt in half.items())
    log.warning("fsgen: half precision on the CPU (%s): results may depend on the batch size; "
                "pass dtype=float32 for exact, batch-independent decoding", which)
    return True


def check_same_vocab(tok_a: PreTrainedTokenizerBase, tok_b: PreTrainedTokenizerBase, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` naming both sizes and one differing token unless the vocabularies are identical.

    Embedding matrices may be padded past the tokenizer (Qwen1.5-7B has 152064 rows for 151646 tokens);
    that is fine, since logits are cut to the tokenizer's size. Different token→id maps are not.
    """
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va == vb:
        return
    for tok, idx in sorted(va.items(), key=lambda kv: kv[1]):
        if vb.get(tok) != idx:
            where = f"id {vb[tok]} in {name_b}" if tok in vb else f"absent from {name_b}"
            detail = f"token {tok!r} is id {idx} in {name_a} but {where}"
            break
    else:
        tok = next(t for t in vb if t not in va)
        detail = f"token {tok!r} (id {vb[tok]} in {name_b}) is absent from {name_a}"
    raise ValueError(
        f"{name_a} and {name_b} have different vocabularies ({len(va)} vs {len(vb)} tokens): {detail}"
    )


def _check_model_path(path: str, role: str) -> None:
    """Fail in one line, before loading any weights, when ``path`` is a local folder that is not a model."""
    local = os.path.expanduser(path)
    if os.path.isdir(local) and not os.path.isfile(os.path.join(local, "config.json")):
        raise ValueError(f"{role}={path!r} is a folder without config.json: not a transformers model")
    if not os.path.exists(local) and (path.startswith((".", "/", "~")) or path.count("/") > 1):
        raise ValueError(f"{role}={path!r} does not exist")


def load_tokenizer(path: str, role: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """``path``'s tokenizer, after checking that ``path`` is a model (its config loads); no weights read."""
    _check_model_path(path, role)
    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"{role}={path!r} is not a model ({str(err).strip().splitlines()[0]})") from err


def pair_tokenizers(roles: dict[str, str], trust_remote_code: bool = False) -> dict[str, PreTrainedTokenizerBase]:
    """Each role's tokenizer (``roles``: role -> path, ``small`` first), refusing any whose vocabulary
    differs from System 1's — all before a single weight is read."""
    toks = {role: load_tokenizer(path, role, trust_remote_code) for role, path in roles.items()}
    for role, path in roles.items():
        if role != "small":
            check_same_vocab(toks["small"], toks[role], f"small={roles['small']}", f"{role}={path}")
    return toks


def _dtype_kwargs(dtype: str) -> dict[str, Any]:
    """``from_pretrained``'s dtype keyword: ``auto`` or any torch dtype name (``float16``, ``half``, ...)."""
    value = "auto" if dtype == "auto" else getattr(torch, str(dtype), None)
    if not (value == "auto" or isinstance(value, torch.dtype)):
        raise ValueError(f"unknown dtype {dtype!r}; e.g. {', '.join(_DTYPES)}")
    # transformers renamed `torch_dtype` to `dtype` in 4.56
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: value}


def load_model(path: str, role: str, dtype: str, device: str | None, trust_remote_code: bool,
               device_map: str | None = None) -> PreTrainedModel:
    """Weights of ``path`` (checked by ``load_tokenizer`` first) in ``dtype``, on ``device`` or ``device_map``."""
    kwargs = _dtype_kwargs(dtype)
    if device_map:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    if not device_map and device:
        model = model.to(device)
    return model.eval()


def load_backend(path: str, role: str, vocab_size: int, dtype: str, device: str | None,
                 trust_remote_code: bool = False) -> TransformersBackend:
    """One model for ``role`` behind the transformers backend, cut to the tokenizer's ``vocab_size``: a
    scoring pass outside a pair (replay's System 1 and large-model passes, label's System 1 tokens)."""
    return TransformersBackend.for_role(load_model(path, role, dtype, device, trust_remote_code), role, vocab_size)


@dataclass
class ModelPair:
    """System 1 (``small``), the large model, and for proxy tuning the untuned ``small_base``.

    ``tokenizer`` is System 1's; every model's log-probs are cut to ``vocab_size = len(tokenizer)``. The
    engine reaches each model only through its backend (``backends[role]``, built by ``backend``; default
    transformers): a model here is whatever that factory takes.
    """

    small: Any
    large: Any
    tokenizer: PreTrainedTokenizerBase
    small_base: Any | None = None
    names: dict[str, str | None] = field(default_factory=dict)
    backend: BackendFactory = TransformersBackend.for_role
    eos: tuple[int, ...] | None = None  # EOS ids when given (a pair of backends has no generation config)

    def __post_init__(self) -> None:
        self.vocab_size = len(self.tokenizer)
        self.backends: dict[str, Backend] = {role: self.backend(model, role, self.vocab_size)
                                             for role, model in self.models().items()}
        self.names = {"small": None, "large": None, "small_base": None, **self.names}
        warn_half_on_cpu({r: m for r, m in self.models().items() if isinstance(m, PreTrainedModel)})

    def models(self) -> dict[str, Any]:
        """Role -> model: ``small``, ``large`` and ``small_base`` if loaded."""
        out = {"small": self.small, "large": self.large}
        if self.small_base is not None:
            out["small_base"] = self.small_base
        return out

    def open(self, role: str) -> Backend:
        """``role``'s backend with an empty cache (one per decoded batch)."""
        return self.backends[role].empty()

    @property
    def device(self) -> torch.device:
        """Where inputs and per-token statistics live: System 1's device."""
        return self.backends["small"].device

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id, else its EOS id, else 0 (left padding is masked, so any id works)."""
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def eos_token_ids(self) -> list[int]:
        """EOS ids: the tokenizer's and the large model's generation config's (as ``generate`` uses), or
        ``eos`` where the pair was given them."""
        if self.eos is not None:
            return sorted(set(self.eos))
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.large, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
        return sorted(ids)

    @classmethod
    def from_models(
        cls,
        small: PreTrainedModel,
        large: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        small_base: PreTrainedModel | None = None,
        large_tokenizer: PreTrainedTokenizerBase | None = None,
        small_base_tokenizer: PreTrainedTokenizerBase | None = None,
        names: dict[str, str | None] | None = None,
    ) -> "ModelPair":
        """Pair already-loaded models; given tokenizers are checked against System 1's."""
        names = names or {}
        if large_tokenizer is not None:
            check_same_vocab(tokenizer, large_tokenizer, names.get("small") or "small", names.get("large") or "large")
        if small_base_tokenizer is not None:
            check_same_vocab(tokenizer, small_base_tokenizer, names.get("small") or "small",
                             names.get("small_base") or "small_base")
        return cls(small=small, large=large, tokenizer=tokenizer, small_base=small_base, names=dict(names))

    @classmethod
    def load(
        cls,
        small: str,
        large: str,
        small_base: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        parallelize: bool = False,
    ) -> "ModelPair":
        """Load a pair from local folders or hub ids.

        Tokenizers are loaded and compared first, so a pair with different vocabularies is refused before
        any weights are read. ``parallelize`` spreads the large model over the visible GPUs
        (``device_map="auto"``); the small models go to ``device``.
        """
        roles = {"small": small, "large": large, **({"small_base": small_base} if small_base else {})}
        toks = pair_tokenizers(roles, trust_remote_code)
        models = {
            role: load_model(path, role, dtype, None if (parallelize and role == "large") else device,
                             trust_remote_code, device_map="auto" if (parallelize and role == "large") else None)
            for role, path in roles.items()
        }
        return cls(small=models["small"], large=models["large"], tokenizer=toks["small"],
                   small_base=models.get("small_base"), names=dict(roles))
