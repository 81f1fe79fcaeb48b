"""Prepared GPU check (fits 8 minutes of device time): the engine's equalities on CUDA in fp32 and bf16, and
oracle / speculative against ``generate`` with a randomly initialised pair of realistic size.

1. **Equality** (micro-s + micro-l from models/micro, the micro tokenizer): the oracle's tokens equal the large
   model's ``generate(do_sample=False)`` and greedy speculative decoding's (``num_draft=4``) equal them too, at
   batch 1 and in a ragged left-padded batch. fp32: exact. bf16: equal up to the first position where the large
   model's top-2 probabilities are within bf16's resolution (``margin < 2**-7``): a batch's different padding and
   kernel choice may break such a tie either way; the statistics before it agree within 2e-2 (bf16 has 8 bits
   of mantissa). The script records every row's first difference and that position's margin.
2. **Timings** (one architecture, Qwen2 shapes, random weights — a forward pass costs the same as a trained
   one's; the acceptance rate of a random pair is not a trained pair's, so it is printed beside): ``--sizes
   realistic`` = ~0.5B (hidden 896, 24 layers) and ~7B (hidden 3584, 28 layers) with Qwen's 151936-row
   embeddings, bf16; ``--sizes tiny`` for a CPU dry run. Oracle and speculative (batch 1 and batch 8) against
   the large model's ``generate``, same prompts, same new tokens.

    python benchmarks/gpu_check.py --device cuda --write benchmarks/results/gpu_check.json   # on a GPU machine
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --device cpu --sizes tiny --new-tokens 8  # CPU dry run

Everything ran is written to ``--write`` (with the device's name) as it finishes, so a run cut short keeps its
finished parts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
           "def add(a, b):", "Weng earns $12 an hour for babysitting.", "A.", "The answer is"]
SIZES = {"tiny": [dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=128),
                  dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=256)],
         "realistic": [dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                            intermediate_size=4864),
                       dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                            intermediate_size=18944)]}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _generate_tokens(model, tok, prompts: list[list[int]], n: int, device: str) -> list[list[int]]:
    """The large model's own greedy tokens, one prompt at a time (no padding)."""
    out = []
    for p in prompts:
        ids = torch.tensor([p], device=device)
        g = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                           min_new_tokens=n, pad_token_id=tok.pad_token_id or 0)
        out.append(g[0, len(p):].tolist())
    return out


def equality(device: str, dtype: str, n: int) -> dict:
    from fsgen_eval.engine.api import encode, generate_ids
    from fsgen_eval.engine.config import make_config
    from fsgen_eval.engine.pair import ModelPair

    micro = REPO / "models" / "micro"
    pair = ModelPair.load(small=str(micro / "micro-s"), large=str(micro / "micro-l"), dtype=dtype, device=device)
    prompts = [encode(pair, p) for p in PROMPTS]
    ref = _generate_tokens(pair.large, pair.tokenizer, prompts, n, device)
    rows = {}
    for name, cfg, bs in (("oracle_b1", make_config(method="oracle", max_new_tokens=n), 1),
                          ("oracle_b5", make_config(method="oracle", max_new_tokens=n), 5),
                          ("speculative_b1", make_config(method="speculative", num_draft=4, max_new_tokens=n), 1),
                          ("speculative_b5", make_config(method="speculative", num_draft=4, max_new_tokens=n), 5)):
        out = generate_ids(pair, prompts, cfg, batch_size=bs)
        firsts = []
        for got, want, tr in zip(out.token_ids, ref, out.traces):
            diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
            margin = None if diff is None or "s2_margin" not in tr else float(tr["s2_margin"][diff])
            firsts.append({"first_difference": diff, "margin_there": margin})
        rows[name] = {"rows_equal": sum(f["first_difference"] is None for f in firsts), "rows": len(firsts),
                      "differences": firsts}
        print(f"equality {dtype} {name}: {rows[name]['rows_equal']}/{len(firsts)} rows equal to generate", flush=True)
    return rows


def _random_model(cfg: dict, vocab: int, dtype: torch.dtype, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    conf = Qwen2Config(vocab_size=vocab, tie_word_embeddings=False, **cfg)
    with torch.device(device):
        model = Qwen2ForCausalLM(conf).to(dtype).eval()
    return model, sum(p.numel() for p in model.parameters())


def timings(device: str, sizes: str, n: int, vocab: int) -> dict:
    from fsgen_eval.engine.api import encode, generate_ids
    from fsgen_eval.engine.config import make_config
    from fsgen_eval.engine.pair import ModelPair, load_tokenizer

    tok = load_tokenizer(str(REPO / "models" / "micro" / "micro-s"), "small")  # the micro tokenizer
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    small, n_small = _random_model(SIZES[sizes][0], vocab, dtype, device)
    large, n_large = _random_model(SIZES[sizes][1], vocab, dtype, device)
    pair = ModelPair.from_models(small, large, tok)
    prompts = [encode(pair, p) for p in PROMPTS * 2][:8]
    out = {"small_params": n_small, "large_params": n_large, "dtype": str(dtype), "new_tokens": n}

    def timed(fn) -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    timed(lambda: _generate_tokens(large, tok, prompts[:1], 4, device))  # warm-up
    out["generate_b1_s"] = timed(lambda: _generate_tokens(large, tok, prompts, n, device))
    for name, cfg in (("oracle", make_config(method="oracle", max_new_tokens=n)),
                      ("speculative_k4", make_config(method="speculative", num_draft=4, max_new_tokens=n))):
        for bs in (1, 8):
            res = {}
            out[f"{name}_b{bs}_s"] = timed(lambda: res.setdefault("o", generate_ids(pair, prompts, cfg, batch_size=bs)))
            out[f"{name}_b{bs}_over_generate_b1"] = out[f"{name}_b{bs}_s"] / out["generate_b1_s"]
            if name.startswith("speculative"):
                out[f"{name}_b{bs}_acceptance_rate"] = res["o"].summary.get("acceptance_rate")
            print(f"timing {name} batch {bs}: {out[f'{name}_b{bs}_s']:.2f} s "
                  f"({out[f'{name}_b{bs}_over_generate_b1']:.2f}x generate batch 1)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", choices=sorted(SIZES), default="realistic")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--vocab", type=int, default=151936, help="embedding rows of the random pair (Qwen's)")
    p.add_argument("--write", type=Path)
    a = p.parse_args()
    if a.device == "cpu":
        torch.set_num_threads(1)
    result = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu", "parts": {}}

    def save() -> None:
        if a.write:
            a.write.parent.mkdir(parents=True, exist_ok=True)
            a.write.write_text(json.dumps(result, indent=2) + "\n")

    for dtype in ("float32", "bfloat16"):
        result["parts"][f"equality_{dtype}"] = equality(a.device, dtype, a.new_tokens)
        save()
    result["parts"]["timings"] = timings(a.device, a.sizes, a.new_tokens, a.vocab)
    save()


if __name__ == "__main__":
    main()
