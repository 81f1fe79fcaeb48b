"""Offline standard tasks through Hugging Face's own offline caches: ``fsgen-eval offline-cache``.

lm-eval's unchanged ``gsm8k``, ``mmlu_*`` and ``mbpp`` call ``datasets.load_dataset("openai/gsm8k", "main")``
(and ``evaluate.load("code_eval")`` for MBPP). With ``HF_DATASETS_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``)
``datasets`` does not ask the hub: it loads the latest copy of that dataset in its own cache
(``HF_DATASETS_CACHE``, laid out ``<namespace>___<name>/<config>/<version>/<hash>/``), and ``evaluate`` does the
same with its module cache (``HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--<name>/<hash>/``).
:func:`build_offline_cache` fills those caches from a local folder laid out like the hub (``openai/gsm8k``,
``cais/mmlu``, ``google-research-datasets/mbpp``, each with its dataset card's ``configs``), as loading each
dataset once from the hub would have done. Nothing is patched: every process, with or without fsgen_eval
imported, then resolves the hub ids offline by the libraries' own rules, and a user with hub access changes
nothing at all.

The ``code_eval`` entry is fsgen_eval's own sandboxed pass@k (:mod:`fsgen_eval.lm_eval.code_eval_metric`), not
the hub's script: offline MBPP runs its programs contained. Online, ``evaluate`` fetches the hub's ``code_eval``
as usual (unsandboxed); the project's ``fsgen_mbpp`` task scores through the sandbox either way.

Why not a hub cache (``HF_HUB_CACHE``) of symlinks: with ``HF_HUB_OFFLINE=1``, ``datasets`` 5.x refuses the hub
before it looks at the hub cache (``dataset_module_factory``) and falls back only to its own cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fsgen_eval.core.shipped import CHECKOUT

SOURCE_ENV = "FSGEN_DATASETS_DIR"  # read by fsgen_eval's own commands only (never by datasets or lm-eval)
CODE_EVAL = "code_eval"
CODE_EVAL_SOURCE = Path(__file__).with_name("code_eval_metric.py")


@dataclass(frozen=True)
class CacheEntry:
    """One dataset configuration (or metric) in a Hugging Face cache."""

    name: str  # hub id and configuration, e.g. ``openai/gsm8k:main``, or ``code_eval``
    path: Path  # the cache folder that offline loading resolves
    built: bool  # written now (False: it was there already)


def default_source(environ: dict[str, str] | None = None) -> Path:
    """``$FSGEN_DATASETS_DIR``, else ``../shared/hf-datasets`` beside a source checkout."""
    env = os.environ if environ is None else environ
    given = env.get(SOURCE_ENV, "").strip()
    return Path(given).expanduser() if given else CHECKOUT.parent / "shared" / "hf-datasets"


def hub_folders(source: Path) -> list[tuple[str, Path]]:
    """``(hub id, folder)`` for each ``<namespace>/<name>`` folder under ``source`` that holds a dataset card.

    Raises ``FileNotFoundError`` (one line) when ``source`` is not a folder or holds no such dataset.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"offline datasets: {source} is not a folder (laid out like the hub: "
                                f"openai/gsm8k/README.md, ...); pass it or set {SOURCE_ENV}")
    found = sorted((f"{card.parent.parent.name}/{card.parent.name}", card.parent)
                   for card in source.glob("*/*/README.md"))
    if not found:
        raise FileNotFoundError(f"offline datasets: {source} holds no <namespace>/<name>/README.md dataset card")
    return found


def dataset_folder(repo_id: str, cache_root: Path) -> Path:
    """Where datasets keeps a hub dataset in its cache: ``<namespace>___<snake_case name>`` (its naming rule for
    a hub id, the folder its offline fallback searches); below it ``<config>/<version>/<hash>/``."""
    from datasets.naming import camelcase_to_snakecase

    namespace, name = repo_id.split("/")
    return cache_root / f"{namespace}___{camelcase_to_snakecase(name)}"


def cached_config(repo_id: str, config: str, cache_root: Path) -> Path | None:
    """The newest prepared copy of ``repo_id``'s ``config`` in datasets' cache ``cache_root``, else ``None``
    (whether it came from the hub or from :func:`cache_dataset`: offline loading takes the newest too)."""
    found = (dataset_folder(repo_id, cache_root) / config).glob("*/*/dataset_info.json")
    newest = max(found, key=lambda info: info.stat().st_mtime, default=None)
    return newest.parent if newest is not None else None


def cache_dataset(repo_id: str, folder: Path, config: str, cache_root: Path) -> CacheEntry:
    """Prepare ``folder``'s configuration ``config`` in ``cache_root`` under ``repo_id``'s name, unless a copy
    is there already (from the hub or an earlier call: checked first, as building a builder costs ~0.5 s).

    datasets' own builder for the local folder writes the Arrow files (``download_and_prepare``, public API);
    only the folder's name is chosen here: the one ``load_dataset(repo_id, config)`` reads offline.
    """
    import datasets

    present = cached_config(repo_id, config, cache_root)
    if present is not None:
        return CacheEntry(f"{repo_id}:{config}", present, built=False)
    builder = datasets.load_dataset_builder(str(folder), config, cache_dir=str(cache_root))
    target = dataset_folder(repo_id, cache_root) / builder.config_id / str(builder.config.version) / builder.hash
    builder.download_and_prepare(output_dir=str(target))
    return CacheEntry(f"{repo_id}:{config}", target, built=True)


def cache_code_eval(modules_root: Path) -> CacheEntry:
    """Put the sandboxed ``code_eval`` metric where ``evaluate.load("code_eval")`` finds it offline.

    evaluate's module cache keeps each canonical metric as ``evaluate-metric--<name>/<64-hex hash>/<name>.py``
    and offline uses the newest script; the hash here is the file's own SHA-256, so a changed metric is a new
    entry. A script cached after ours (the hub's, unsandboxed, from an online run) would win offline: ours is
    then made the newest again.
    """
    text = CODE_EVAL_SOURCE.read_text(encoding="utf-8")
    metrics = modules_root / "evaluate_modules" / "metrics"
    target = metrics / f"evaluate-metric--{CODE_EVAL}" / hashlib.sha256(text.encode()).hexdigest()
    script = target / f"{CODE_EVAL}.py"
    others = max((s.stat().st_mtime for s in target.parent.glob(f"*/{CODE_EVAL}.py") if s != script), default=0.0)
    if script.is_file() and script.read_text(encoding="utf-8") == text and script.stat().st_mtime > others:
        return CacheEntry(CODE_EVAL, target, built=False)
    target.mkdir(parents=True, exist_ok=True)
    for package in (modules_root / "evaluate_modules", metrics, target.parent, target):
        (package / "__init__.py").touch()  # evaluate imports the script as evaluate_modules.metrics.<...>
    tmp = script.with_suffix(".py.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(script)  # whole or absent: a reader never sees half a script
    if script.stat().st_mtime <= others:  # another script's time lies ahead of ours (a clock set differently)
        os.utime(script, (others + 1, others + 1))
    return CacheEntry(CODE_EVAL, target, built=True)


def build_offline_cache(source: Path, datasets_cache: Path | None = None,
                        modules_cache: Path | None = None) -> list[CacheEntry]:
    """Every dataset configuration under ``source`` into datasets' cache, and ``code_eval`` into evaluate's.

    ``datasets_cache`` / ``modules_cache`` default to the libraries' own (``HF_DATASETS_CACHE``,
    ``HF_MODULES_CACHE``, as the environment sets them). Entries already there are kept (idempotent).
    """
    import datasets
    import evaluate.config

    folders = hub_folders(source)  # one-line error before any work
    data_root = Path(datasets_cache or datasets.config.HF_DATASETS_CACHE).expanduser()
    modules_root = Path(modules_cache or evaluate.config.HF_MODULES_CACHE).expanduser()
    entries = [cache_dataset(repo_id, folder, config, data_root)
               for repo_id, folder in folders
               for config in datasets.get_dataset_config_names(str(folder))]
    return [*entries, cache_code_eval(modules_root)]
