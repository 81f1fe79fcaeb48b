"""``fsgen-eval zoo train``: build a model family (tokenizer + models + yaml + card) from the datasets folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fsgen-eval zoo train | agree`` to the dispatcher's subparsers."""
    zoo = subparsers.add_parser("zoo", help="train the micro model family on GSM8K/MBPP/MMLU training splits")
    sub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    train = sub.add_parser("train", help="train (or resume) a family: tokenizer, models, micro.yaml, model card")
    train.add_argument("--family", default="micro", help="family preset: micro (committed) or toy (seconds)")
    train.add_argument("--datasets-dir", default=os.environ.get("FSGEN_DATASETS_DIR"),
                       help="folder laid out like the HF hub (openai/gsm8k/main/...); default $FSGEN_DATASETS_DIR")
    train.add_argument("--out-dir", default=None, help="where models go (default models/<family>)")
    train.add_argument("--config-yaml", default=None, help="family list to write (default model_configs/<family>.yaml)")
    train.add_argument("--work-dir", default=None, help="checkpoints and caches (default runs/zoo/<family>)")
    train.add_argument("--models", nargs="+", default=None, help="train only these members (no yaml/card written)")
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1: results then repeat exactly)")
    train.add_argument("--dry-run", action="store_true", default=os.environ.get("FSGEN_DRY_RUN") == "1",
                       help="check the arguments, print what would be trained and where; train nothing "
                            "(default with FSGEN_DRY_RUN=1)")
    train.set_defaults(func=run_train)
    agree = sub.add_parser("agree", help="greedy oracle agreement of two models on GSM8K test prompts")
    agree.add_argument("--small", required=True, help="System 1 model folder")
    agree.add_argument("--large", required=True, help="System 2 model folder (same tokenizer)")
    agree.add_argument("--datasets-dir", default=os.environ.get("FSGEN_DATASETS_DIR"),
                       help="folder with openai/gsm8k/main/{train,test}.jsonl; default $FSGEN_DATASETS_DIR")
    agree.add_argument("--prompts", type=int, default=16, help="GSM8K test questions to use")
    agree.add_argument("--shots", type=int, default=3, help="GSM8K training exemplars before each question")
    agree.add_argument("--max-new-tokens", type=int, default=128, help="greedy tokens per prompt")
    agree.add_argument("--threads", type=int, default=1, help="torch threads")
    agree.set_defaults(func=run_agree)
    ev = sub.add_parser("evaluate", help="each member alone on the family's task through lm-eval's hf model "
                                         "(accuracy per level, lengths, repetition) and the model card")
    ev.add_argument("--family", default="arith", help="family preset with a task (arith)")
    ev.add_argument("--out-dir", default=None, help="where per-model results go (default reports/<family>/alone)")
    ev.add_argument("--models-dir", default=None, help="the family's models (default models/<family>)")
    ev.add_argument("--limit", type=int, default=None, help="problems per level task (default: the whole test split)")
    ev.add_argument("--batch-size", type=int, default=32, help="lm-eval batch size")
    ev.add_argument("--threads", type=int, default=1, help="torch threads")
    ev.set_defaults(func=run_evaluate)
    zoo.set_defaults(func=lambda args: zoo.print_help() or 2)


def run_train(args: argparse.Namespace) -> int:
    """``fsgen-eval zoo train``: train (or resume) a family after checking every input."""
    from fsgen_eval.experiments.zoo.corpus import resolve_datasets_dir
    from fsgen_eval.experiments.zoo.family import get_family

    # Validate every input before any work starts.
    family = get_family(args.family)
    # the arith family's corpus is generated (fsgen_eval.core.arith); only the benchmark corpus reads datasets
    datasets = resolve_datasets_dir(args.datasets_dir) if family.corpus == "benchmarks" else None
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    names = [m.name for m in family.models]
    unknown = [n for n in args.models or [] if n not in names]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r} in family {family.name}; valid: {', '.join(names)}")

    out = Path(args.out_dir or f"models/{family.name}")
    yaml_path = Path(args.config_yaml or f"model_configs/{family.name}.yaml")
    work = Path(args.work_dir or f"runs/zoo/{family.name}")
    if args.dry_run:
        print(f"zoo train (dry run): family {family.name}, models {', '.join(args.models or names)}; datasets "
              f"{datasets}; models to {out}, family list to {yaml_path}, checkpoints in {work}")
        return 0

    import torch
    from transformers.utils import logging as hf_logging

    from fsgen_eval.experiments.zoo.build import build_family

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()  # the log is read as a file; bars only clutter it
    build_family(family, datasets, out, yaml_path, work, only=args.models, log=lambda m: print(m, flush=True))
    return 0


def run_agree(args: argparse.Namespace) -> int:
    """``fsgen-eval zoo agree``: greedy agreement of ``--small`` with ``--large`` on GSM8K test prompts (1 − it is
    the oracle's collaboration rate)."""
    from fsgen_eval.experiments.zoo.corpus import resolve_datasets_dir

    datasets = resolve_datasets_dir(args.datasets_dir)
    for flag in ("prompts", "max_new_tokens", "threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.shots < 0:
        raise ValueError(f"--shots must be at least 0, got {args.shots}")
    for flag in ("small", "large"):
        if not (Path(getattr(args, flag)) / "config.json").is_file():
            raise FileNotFoundError(f"--{flag} {getattr(args, flag)} is not a model folder (no config.json)")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from fsgen_eval.experiments.zoo.agreement import greedy_agreement, gsm8k_prompts

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(args.small)
    if tok.get_vocab() != AutoTokenizer.from_pretrained(args.large).get_vocab():
        raise ValueError(f"{args.small} and {args.large} have different tokenizers")
    small, large = (AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for p in (args.small, args.large))
    result = greedy_agreement(small, large, tok, gsm8k_prompts(datasets, args.prompts, args.shots), args.max_new_tokens)
    print(f"greedy agreement {result.rate:.4f} ({result.agree}/{result.tokens} tokens); "
          f"oracle collaboration rate {1 - result.rate:.4f}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``fsgen-eval zoo evaluate``: every member alone on the family's task, then the model card again."""
    from fsgen_eval.experiments.zoo.family import get_family

    family = get_family(args.family)
    if family.task is None:
        raise ValueError(f"family {family.name} has no evaluation task; families with one: arith")
    for flag in ("batch_size", "threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    models_dir = Path(args.models_dir or f"models/{family.name}")
    missing = [s.name for s in family.models if not (models_dir / s.name / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{models_dir / missing[0]} is not a trained model (train it: fsgen-eval zoo train "
                                f"--family {family.name})")
    out = Path(args.out_dir or f"reports/{family.name}/alone")

    import torch
    from transformers.utils import logging as hf_logging

    from fsgen_eval.core.shipped import project_dir
    from fsgen_eval.experiments.zoo.build import rewrite_card
    from fsgen_eval.experiments.zoo.evaluate import evaluate_family
    from fsgen_eval.experiments.zoo.export import load_exported, param_counts

    torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    tasks_dir = project_dir("tasks")
    members = [(s.name, models_dir / s.name, param_counts(load_exported(models_dir / s.name))[0]) for s in family.models]
    summaries = evaluate_family(members, family.task, tasks_dir, out, args.limit, args.batch_size,
                                log=lambda m: print(m, flush=True))
    if args.limit is None:  # the card reports the whole test split only
        rewrite_card(family, models_dir, summaries, out)
    return 0
