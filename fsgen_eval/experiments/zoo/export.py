"""What gets committed: half-precision safetensors per model, ``model_configs/<family>.yaml`` and a model card."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast

METRICS = "metrics.json"


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameters, shared tensors counted once.

    Non-embedding excludes the token embedding and the LM head (Kaplan et al.'s convention), which
    dominate the smallest models and say little about their capacity.
    """
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    emb = {id(model.get_input_embeddings().weight): model.get_input_embeddings().weight,
           id(model.get_output_embeddings().weight): model.get_output_embeddings().weight}
    return total, total - sum(p.numel() for p in emb.values())


def export_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path, dtype: torch.dtype,
                 load_dtype: torch.dtype = torch.float32) -> None:
    """Save weights (safetensors, stored in ``dtype``) and a copy of the shared tokenizer, so the folder loads
    on its own.

    ``config.json`` names ``load_dtype``: ``from_pretrained(dtype="auto")`` (lm-eval's default) then upcasts
    the stored half-precision values, which fp32 holds exactly, and decoding does not depend on the batch size
    (in fp16, padding a batch changes rounding, and a batch of 4 gave other text than batch 1).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    half = LlamaForCausalLM(model.config).to(dtype)
    half.load_state_dict(model.state_dict())
    half.save_pretrained(str(out_dir), safe_serialization=True)
    # save_pretrained writes the weights' own dtype into config.json; name the one to load in instead
    config = out_dir / "config.json"
    obj = json.loads(config.read_text())
    obj["dtype"] = str(load_dtype).removeprefix("torch.")
    config.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(out_dir))


def load_exported(path: Path) -> LlamaForCausalLM:
    """The committed weights upcast to fp32 — what the held-out loss is measured on, as users will load it."""
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def write_metrics(path: Path, metrics: dict) -> None:
    """Write ``metrics`` as JSON through a temporary file and a rename (a crash leaves the old file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(path)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def write_family_yaml(yaml_path: Path, family_name: str, tokenizer_dir: Path, metrics: list[dict], models_dir: Path) -> None:
    """``model_configs/<family>.yaml``; paths are relative to the repo root (the yaml's grandparent)."""
    root = yaml_path.resolve().parent.parent
    doc = {
        "family": family_name,
        "tokenizer": _rel(tokenizer_dir, root),
        "models": [
            {
                "name": m["name"],
                "path": _rel(models_dir / m["name"], root),
                "total_params": m["total_params"],
                "non_embedding_params": m["non_embedding_params"],
                "hidden_size": m["hidden"],
                "num_layers": m["layers"],
                "num_heads": m["heads"],
                "train_tokens": m["train_tokens"],
                "heldout_loss": round(m["heldout_loss"], 4),
            }
            for m in metrics
        ],
    }
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_model_card(path: Path, family: dict, metrics: list[dict], corpus: dict, agreement: dict) -> None:
    """The model card: how the family was made and, per model, size, training tokens, time, held-out loss."""
    rows = "\n".join(
        f"| {m['name']} | {m['hidden']} | {m['layers']} | {m['heads']} | {m['total_params']:,} | "
        f"{m['non_embedding_params']:,} | {m['train_tokens']:,} | {m['train_seconds'] / 60:.1f} | "
        f"{m['final_train_loss']:.3f} | {m['heldout_loss']:.3f} |"
        for m in metrics
    )
    span = metrics[-1]["total_params"] / metrics[0]["total_params"]
    text = CARD.format(
        name=family["name"], rows=rows, span=span, n=len(metrics), context=context_note(family, corpus),
        agreement_table=_agreement_table(metrics, agreement),
        **{k: family[k] for k in CARD_KEYS}, **corpus, **{f"agreement_{k}": agreement[k] for k in ("prompts", "shots", "max_new_tokens")},
    )
    path.write_text(text)


def _agreement_table(metrics: list[dict], agreement: dict) -> str:
    """Rows: System 1 (small); columns: the large model; cells: greedy agreement in percent."""
    names = [m["name"] for m in metrics]
    head = "| small \\ large | " + " | ".join(names[1:]) + " |\n|---|" + "---|" * (len(names) - 1)
    lines = []
    for i, small in enumerate(names[:-1]):
        cells = [f"{agreement['agreement'][lg][small]['rate'] * 100:.1f}" if j > i else "" for j, lg in enumerate(names[1:], start=1)]
        lines.append(f"| {small} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(lines)


CARD_KEYS = ("vocab_size", "seq_len", "max_positions", "batch_size", "warmup_steps", "min_lr_ratio",
             "weight_decay", "grad_clip", "seed", "heldout_tokens")

CARD = """# The `{name}` model family

{n} decoder-only Llama models (`LlamaForCausalLM`, RoPE, SwiGLU, RMSNorm, tied input/output embeddings) that
share one byte-level BPE tokenizer, trained from scratch on one CPU thread by `fsgen-eval zoo train` so that
FS-GEN collaboration (small System 1, large System 2) can be studied across a {span:.0f}× span of model sizes.
Weights are stored in half precision (safetensors) to keep the repository small; `config.json` says
`float32`, so `from_pretrained(..., dtype="auto")` (lm-eval's default) loads them in float32, which holds the
half-precision values exactly. Every folder holds a copy of the shared tokenizer (`tokenizer/`), so
`AutoModelForCausalLM`/`AutoTokenizer.from_pretrained(<folder>)` work offline.

## Training data (training splits only)

GSM8K train, MBPP (full) train/validation/prompt, MMLU dev/validation (all subjects), formatted exactly as
lm-eval's `gsm8k`, `mbpp` and `mmlu` tasks show few-shot examples, a few documents of one task per episode
joined by `"\\n\\n"`, episodes separated by `<|endoftext|>`: {corpus_tokens:,} tokens
({corpus_chars:,} characters, {corpus_episodes:,} episodes). No test split is trained on. Held-out loss is
the mean next-token loss (nats) on the first {heldout_tokens:,} tokens of GSM8K **test** in the same format
(evaluation only), measured on the committed half-precision weights.

## Models

| model | hidden | layers | heads | params | non-embedding params | training tokens | training time (min, 1 thread) | final train loss | held-out loss (GSM8K test) |
|---|---|---|---|---|---|---|---|---|---|
{rows}

Training: AdamW (betas 0.9/0.95, weight decay {weight_decay} on matrices), {warmup_steps} warm-up steps then
cosine decay to {min_lr_ratio}× the peak rate, gradient clip {grad_clip}, {batch_size} sequences of
{seq_len} tokens per step, seed {seed}; vocabulary {vocab_size}; `max_position_embeddings` {max_positions}.
Per-step loss curves are in `curves/<model>.csv`. Times are wall-clock on a CPU shared with other jobs.

## Greedy oracle agreement

Along the larger model's own greedy continuation of {agreement_prompts} GSM8K **test** questions (each after the
first {agreement_shots} GSM8K training exemplars; at most {agreement_max_new_tokens} new tokens, stopped at
`Question:`), the percentage of generated positions where the smaller model's greedy token is the same.
One minus it is FS-GEN's oracle collaboration rate. (`agreement.json` holds the counts.)

{agreement_table}

## Context length

{context}
"""


def context_note(family: dict, corpus: dict) -> str:
    """How many GSM8K shots fit the trained window, from the measured tokens per exemplar."""
    per_doc, seq, shots = corpus["gsm8k_tokens_per_doc"], family["seq_len"], corpus["fewshot"]
    fits = "fits" if corpus["fewshot_budget"] <= seq else "does not fit"
    five = "fits as well" if corpus["five_shot_budget"] <= seq else (
        "runs past it into positions these models never trained on (RoPE accepts them up to "
        f"{family['max_positions']}, but quality falls)")
    return (
        f"Trained on {seq}-token windows. A GSM8K exemplar in lm-eval's format takes {per_doc:.0f} tokens on average "
        f"with this tokenizer, so a {shots}-shot GSM8K prompt plus 256 generated tokens (≈ {corpus['fewshot_budget']:.0f} "
        f"tokens) {fits} the trained window; lm-eval's default 5-shot (≈ {corpus['five_shot_budget']:.0f} tokens with "
        f"256 generated) {five}. Evaluate this family on GSM8K with `--num_fewshot {shots}`."
    )


def write_task_card(path: Path, family: dict, metrics: list[dict], corpus: dict, agreement: dict,
                    summaries: dict | None, alone_dir: Path | None) -> None:
    """The model card of a family trained on a task (``arith``): training facts, and — once
    ``fsgen-eval zoo evaluate`` has run — each model's accuracy per level, lengths and repetition."""
    rows = "\n".join(
        f"| {m['name']} | {m['hidden']} | {m['layers']} | {m['heads']} | {m['total_params']:,} | "
        f"{m['non_embedding_params']:,} | {m['train_tokens']:,} | {m['train_seconds'] / 60:.1f} | "
        f"{m['final_train_loss']:.3f} | {m['heldout_loss']:.3f} |"
        for m in metrics
    )
    minutes = sum(m["train_seconds"] for m in metrics) / 60
    span = metrics[-1]["total_params"] / metrics[0]["total_params"]
    text = TASK_CARD.format(
        name=family["name"], n=len(metrics), span=span, rows=rows, minutes=minutes, task=family["task"],
        accuracy=_accuracy_section(metrics, summaries, alone_dir, family["name"]),
        agreement_table=_agreement_table(metrics, agreement),
        **{k: family[k] for k in CARD_KEYS}, **corpus,
        **{f"agreement_{k}": agreement[k] for k in ("prompts", "shots", "max_new_tokens")},
    )
    path.write_text(text)


def _accuracy_section(metrics: list[dict], summaries: dict | None, alone_dir: Path | None, name: str) -> str:
    if not summaries:
        return f"Not measured yet: `fsgen-eval zoo evaluate --family {name}` runs each model alone and fills this in."
    pct = lambda a: f"{100 * a['accuracy']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]"  # noqa: E731
    levels = sorted(k for k in summaries[metrics[0]["name"]]["strict"] if k.startswith("level"))
    cols = (["model", "params", "accuracy % (strict, 95 % Wilson)"] + [f"{l} %" for l in levels]
            + ["flexible %", "tokens mean / p50 / p90 / max", "ended by stop or EOS", "repetitive"])
    head = "| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|"
    lines = []
    for m in metrics:
        s = summaries[m["name"]]
        t = s["tokens"]
        lines.append(f"| {m['name']} | {m['total_params']:,} | {pct(s['strict']['all'])} | "
                     + " | ".join(f"{100 * s['strict'][l]['accuracy']:.1f}" for l in levels)
                     + f" | {100 * s['flexible']['all']['accuracy']:.1f} | {t['mean']:.1f} / {t['p50']} / {t['p90']} / "
                     f"{t['max']} | {100 * s['ended_share']:.1f} % | {100 * s['repetitive_share']:.1f} % |")
    first = summaries[metrics[0]["name"]]
    where = f"`{alone_dir}`" if alone_dir else "the evaluation folder"
    return (f"Each model alone (lm-eval's own `hf` model, greedy, zero-shot, the whole test split: "
            f"{first['generations']} problems, {first['strict']['level1']['n']} per level; `max_gen_toks` "
            f"{first['max_gen_toks']}). Per level: strict-match accuracy in percent. Tokens: the response "
            f"re-tokenised; ended: {first['ended_rule']}; repetitive: {first['repetition_rule']}. Files: {where} "
            f"(`<model>.json` summary, `<model>.samples.jsonl` one row per problem).\n\n" + head + "\n" + "\n".join(lines))


TASK_CARD = """# The `{name}` model family

{n} decoder-only Llama models (`LlamaForCausalLM`, RoPE, SwiGLU, RMSNorm, tied input/output embeddings) that
share one byte-level BPE tokenizer in which every digit is a token of its own, trained from scratch on one CPU
thread by `fsgen-eval zoo train --family {name}` on the train split of the `{task}` task (procedural GSM8K-style
arithmetic word problems, [docs/arith.md](../../docs/arith.md)), so that FS-GEN collaboration can be studied on a
task where accuracy moves with size: a {span:.0f}× span of parameters. Weights are stored in half precision;
`config.json` says `float32`, so lm-eval's default `dtype=auto` loads them in float32. Every folder holds a copy
of the shared tokenizer (`tokenizer/`), so `from_pretrained(<folder>)` works offline.

## Training data

The `{task}` train split (never a validation or test problem: the generator drops any train problem whose
question is also a validation or test question), formatted as lm-eval's prompt + target
(`Question: ...\\nAnswer: ...#### N`), a few problems per episode joined by `"\\n\\n"`, episodes separated by
`<|endoftext|>`: {corpus_tokens:,} tokens ({corpus_chars:,} characters, {corpus_episodes:,} episodes). A test
problem takes {arith_tokens_per_doc:.0f} tokens on average (at most {arith_tokens_per_doc_max}). Held-out loss:
mean next-token loss (nats) on the first {heldout_tokens:,} tokens of the **validation** split, on the committed
half-precision weights.

## Models

| model | hidden | layers | heads | params | non-embedding params | training tokens | training time (min, 1 thread) | final train loss | held-out loss (validation) |
|---|---|---|---|---|---|---|---|---|---|
{rows}

The whole family: {minutes:.1f} minutes of training on one thread (wall-clock, on a CPU shared with other jobs).
Training: AdamW (betas 0.9/0.95, weight decay {weight_decay} on matrices), {warmup_steps} warm-up steps then
cosine decay to {min_lr_ratio}× the peak rate, gradient clip {grad_clip}, {batch_size} sequences of
{seq_len} tokens per step, seed {seed}; vocabulary {vocab_size}; `max_position_embeddings` {max_positions}.
Per-step loss curves: `curves/<model>.csv`; `family.json` holds the numbers of this table.

## Accuracy on the test split

{accuracy}

## Greedy oracle agreement

Along the larger model's own greedy continuation of the first {agreement_prompts} test questions
({agreement_shots}-shot; at most {agreement_max_new_tokens} new tokens, stopped at `Question:`), the percentage of
generated positions where the smaller model's greedy token is the same (`agreement.json`). One minus it is
FS-GEN's oracle collaboration rate on these few prompts; the study in `reports/{name}/` measures it on the whole
test split with intervals.

{agreement_table}

## Context length

Trained on {seq_len}-token windows. A zero-shot prompt plus its worked answer fits (a whole problem is at most
{arith_tokens_per_doc_max} tokens); the task's default is zero-shot, and few-shot prompts (`--num_fewshot N`) run
past the trained window after about one exemplar.
"""
