"""``fsgen-eval offline-cache``: fill Hugging Face's own caches from a local hub-like datasets folder, so that
lm-eval's unchanged tasks run offline (``HF_HUB_OFFLINE=1``) by the libraries' own rules; see
:mod:`fsgen_eval.lm_eval.offline`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fsgen-eval offline-cache`` to the dispatcher's subparsers."""
    p = subparsers.add_parser(
        "offline-cache", help="prepare HF's datasets/evaluate caches from a local hub-like folder (offline runs)",
        description="Every dataset configuration under SOURCE (<namespace>/<name>/README.md with its configs, "
                    "as on the hub) goes into datasets' cache under its hub id, and the sandboxed code_eval into "
                    "evaluate's module cache; then HF_HUB_OFFLINE=1 lm_eval ... --tasks gsm8k,mbpp,mmlu runs "
                    "unchanged. Entries already cached are kept.")
    p.add_argument("source", nargs="?", type=Path, default=None,
                   help="the hub-like folder (default $FSGEN_DATASETS_DIR, else ../shared/hf-datasets beside the "
                        "checkout)")
    p.add_argument("--datasets-cache", type=Path, default=None,
                   help="datasets' cache to fill (default: datasets' own, HF_DATASETS_CACHE)")
    p.add_argument("--modules-cache", type=Path, default=None,
                   help="evaluate's module cache to fill (default: evaluate's own, HF_MODULES_CACHE)")
    p.set_defaults(func=cmd_offline_cache)


def cmd_offline_cache(args: argparse.Namespace) -> int:
    """Build the caches; one line per entry written, a summary line."""
    from fsgen_eval.lm_eval.offline import build_offline_cache, default_source, hub_folders

    source = (args.source or default_source()).expanduser()
    hub_folders(source)  # one-line error before datasets is imported
    entries = build_offline_cache(source, args.datasets_cache, args.modules_cache)
    for entry in entries:
        if entry.built:
            print(f"offline-cache: {entry.name} -> {entry.path}")
    print(f"offline-cache: {sum(e.built for e in entries)} written, {sum(not e.built for e in entries)} already "
          f"cached, from {source}")
    return 0
