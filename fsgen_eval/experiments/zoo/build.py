"""Train a whole family: corpus → tokenizer → each model (resumable) → committed files.

Every stage leaves its result on disk before the next starts and is skipped when that result exists, so a
crash or kill never loses finished work: rerunning the same command picks up where it stopped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fsgen_eval.experiments.zoo import corpus as C
from fsgen_eval.experiments.zoo.agreement import agreement_matrix, gsm8k_prompts
from fsgen_eval.experiments.zoo.export import (METRICS, export_model, load_exported, param_counts, write_family_yaml,
                                   write_metrics, write_model_card, write_task_card)
from fsgen_eval.experiments.zoo.family import FamilyConfig, ModelSpec
from fsgen_eval.experiments.zoo.tokenizer import encode_episodes, train_tokenizer
from fsgen_eval.experiments.zoo.train import LOSS_LOG, heldout_loss, train_model

AGREEMENT_PROMPTS = 16  # GSM8K test questions for the agreement check (evaluation only)
AGREEMENT_NEW_TOKENS = 128  # greedy tokens generated per prompt (a GSM8K answer is ~100)
FEWSHOT = 3  # GSM8K shots the micro family is meant to be evaluated with (see the card's context section)


def prepare_data(family: FamilyConfig, datasets_dir: Path, work_dir: Path) -> tuple[PreTrainedTokenizerFast, np.ndarray, np.ndarray, dict]:
    """Tokenizer, training stream, held-out stream and corpus statistics, cached in ``work_dir``."""
    tok_dir, train_ids, held_ids, stats_path = (work_dir / "tokenizer", work_dir / "train_ids.npy",
                                                work_dir / "heldout_ids.npy", work_dir / "corpus.json")
    if not stats_path.exists():
        episodes, heldout = _episodes(family, datasets_dir)
        tok = train_tokenizer([e.text for e in episodes], family.vocab_size, tok_dir, family.split_digits)
        train = encode_episodes(tok, episodes)
        held = encode_episodes(tok, heldout)
        np.save(train_ids, train)
        np.save(held_ids, held)
        stats = (_corpus_stats(tok, episodes, train, datasets_dir) if family.corpus == "benchmarks"
                 else _arith_stats(tok, episodes, train))
        write_metrics(stats_path, stats)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    return tok, np.load(train_ids), np.load(held_ids), json.loads(stats_path.read_text())


def _episodes(family: FamilyConfig, datasets_dir: Path | None) -> tuple[list[C.Episode], list[C.Episode]]:
    """(training episodes, held-out episodes) of the family's corpus."""
    if family.corpus == "arith":
        return (C.arith_training_episodes(family.seed, family.per_episode),
                C.arith_heldout_episodes(family.per_episode))
    if family.corpus != "benchmarks":
        raise ValueError(f"unknown corpus {family.corpus!r}; valid: benchmarks, arith")
    return (C.training_episodes(datasets_dir, seed=family.seed, per_episode=family.per_episode),
            C.heldout_episodes(datasets_dir, family.per_episode))


def _arith_stats(tok: PreTrainedTokenizerFast, episodes: list[C.Episode], train: np.ndarray) -> dict:
    from fsgen_eval.core import arith

    docs = [arith.doc_text(p) for p in arith.split_problems()["test"]]
    lengths = [len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"]]
    return {"corpus_tokens": int(len(train)), "corpus_chars": sum(len(e.text) for e in episodes),
            "corpus_episodes": len(episodes), "arith_tokens_per_doc": float(np.mean(lengths)),
            "arith_tokens_per_doc_max": int(max(lengths))}


def _corpus_stats(tok: PreTrainedTokenizerFast, episodes: list[C.Episode], train: np.ndarray, root: Path) -> dict:
    # Tokens per GSM8K exemplar decide how many shots fit the training window.
    docs = [C.gsm8k_doc(d) for d in C.read_jsonl(root / C.GSM8K / "train.jsonl")]
    per_doc = float(np.mean([len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"]]))
    return {
        "corpus_tokens": int(len(train)),
        "corpus_chars": sum(len(e.text) for e in episodes),
        "corpus_episodes": len(episodes),
        "gsm8k_tokens_per_doc": per_doc,
        "fewshot": FEWSHOT,
        # n exemplars + the question (about a third of an exemplar) + 256 generated tokens
        "fewshot_budget": per_doc * (FEWSHOT + 0.35) + 256,
        "five_shot_budget": per_doc * 5.35 + 256,
    }


def build_one(spec: ModelSpec, family: FamilyConfig, tok, train: np.ndarray, held: np.ndarray,
              out_dir: Path, work_dir: Path, log: Callable[[str], None]) -> dict:
    """Train (or resume) one model, export it and score it; return its metrics (also saved beside it)."""
    metrics_path = work_dir / spec.name / METRICS
    if metrics_path.exists() and (out_dir / spec.name / "model.safetensors").exists():
        log(f"{spec.name}: already trained, skipping")
        return json.loads(metrics_path.read_text())
    result = train_model(spec, family, train, work_dir / spec.name, tok.eos_token_id, log=log)
    export_model(result.model, tok, out_dir / spec.name, torch.float16)
    curves = out_dir / "curves"
    curves.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work_dir / spec.name / LOSS_LOG, curves / f"{spec.name}.csv")
    exported = load_exported(out_dir / spec.name)
    loss, scored = heldout_loss(exported, held, family.seq_len, family.heldout_tokens)
    total, non_emb = param_counts(exported)
    with open(work_dir / spec.name / LOSS_LOG) as f:
        last = f.read().strip().splitlines()[-1].split(",")
    metrics = {"name": spec.name, "hidden": spec.hidden, "layers": spec.layers, "heads": spec.heads, "lr": spec.lr,
               "total_params": total, "non_embedding_params": non_emb, "train_tokens": result.tokens,
               "train_steps": result.steps, "train_seconds": round(result.elapsed_s, 1),
               "final_train_loss": float(last[3]), "heldout_loss": loss, "heldout_tokens_scored": scored}
    write_metrics(metrics_path, metrics)
    log(f"{spec.name}: {total:,} params, held-out loss {loss:.4f}, {result.elapsed_s / 60:.1f} min")
    return metrics


def build_family(family: FamilyConfig, datasets_dir: Path, out_dir: Path, yaml_path: Path, work_dir: Path,
                 only: list[str] | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Train every model of ``family`` (or those named in ``only``) and write the yaml and the card."""
    tok, train, held, stats = prepare_data(family, datasets_dir, work_dir)
    log(f"corpus: {stats['corpus_tokens']:,} tokens; held-out stream {len(held):,} tokens")
    tok.save_pretrained(str(out_dir / "tokenizer"))
    specs = [s for s in family.models if only is None or s.name in only]
    metrics = [build_one(s, family, tok, train, held, out_dir, work_dir, log) for s in specs]
    if only is None:  # the yaml and card describe the whole family, so only a full build writes them
        agreement = family_agreement(family, datasets_dir, out_dir, tok, log)
        write_family_yaml(yaml_path, family.name, out_dir / "tokenizer", metrics, out_dir)
        if family.task is None:
            write_model_card(out_dir / "README.md", family.as_dict(), metrics, stats, agreement)
        else:  # a family with a task: the card also reports each model's accuracy (zoo evaluate), so keep its inputs
            write_metrics(out_dir / FAMILY_JSON, {"metrics": metrics, "corpus": stats})
            rewrite_card(family, out_dir, None, None)
    return metrics


FAMILY_JSON = "family.json"  # a task family's training metrics and corpus statistics, for re-rendering its card


def rewrite_card(family: FamilyConfig, out_dir: Path, summaries: dict | None, alone_dir: Path | None) -> None:
    """(Re)write a task family's model card from its committed files: ``family.json``, ``agreement.json`` and,
    once ``fsgen-eval zoo evaluate`` has run, each model's accuracy summary (``summaries``, from ``alone_dir``)."""
    saved = json.loads((out_dir / FAMILY_JSON).read_text())
    agreement = json.loads((out_dir / "agreement.json").read_text())
    write_task_card(out_dir / "README.md", family.as_dict(), saved["metrics"], saved["corpus"], agreement,
                    summaries, alone_dir)


def family_agreement(family: FamilyConfig, datasets_dir: Path, out_dir: Path, tok, log: Callable[[str], None]) -> dict:
    """Greedy oracle agreement of every smaller member with every larger one on GSM8K test prompts.

    Saved as ``agreement.json``; the card shows it. Cached: it only depends on the committed weights.
    """
    path = out_dir / "agreement.json"
    if path.exists():
        return json.loads(path.read_text())
    if family.corpus == "arith":  # the task's own zero-shot prompts (test split; evaluation only)
        from fsgen_eval.core import arith

        shots = 0
        prompts = [f"Question: {p.question}\nAnswer:" for p in arith.split_problems()["test"][:AGREEMENT_PROMPTS]]
    else:
        shots = FEWSHOT
        prompts = gsm8k_prompts(datasets_dir, n=AGREEMENT_PROMPTS, shots=FEWSHOT)
    models = {s.name: load_exported(out_dir / s.name) for s in family.models}
    matrix = agreement_matrix(models, tok, prompts, max_new_tokens=AGREEMENT_NEW_TOKENS)
    result = {"prompts": len(prompts), "shots": shots, "max_new_tokens": AGREEMENT_NEW_TOKENS,
              "agreement": {lg: {sm: {"agree": a.agree, "tokens": a.tokens, "rate": a.rate} for sm, a in row.items()}
                            for lg, row in matrix.items()}}
    write_metrics(path, result)
    largest = family.models[-1].name
    log("agreement with " + largest + ": " + ", ".join(f"{s} {a['rate']:.2f}" for s, a in result["agreement"][largest].items()))
    return result
