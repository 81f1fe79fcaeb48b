"""Session fixtures: a tokenizer trained here and tiny fp32 model pairs built from configs (nothing downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the tests' own Hugging Face caches, filled from ../shared/hf-datasets (below): an offline lm-eval run here then
# never takes a dataset or a code_eval script from a developer's own cache (a hub code_eval runs unsandboxed)
os.environ.setdefault("HF_DATASETS_CACHE", str(Path.home() / ".cache" / "fsgen-eval-tests" / "datasets"))
os.environ.setdefault("HF_MODULES_CACHE", str(Path.home() / ".cache" / "fsgen-eval-tests" / "modules"))

import pytest

from fsgen_eval.experiments import fixtures as testing

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
# the standard datasets, laid out like the hub, beside the checkout (as in CI); fsgen-eval's own commands (zoo)
# read them from FSGEN_DATASETS_DIR, lm-eval through the caches filled at the session's start
if (SHARED / "hf-datasets").is_dir():
    os.environ.setdefault("FSGEN_DATASETS_DIR", str(SHARED / "hf-datasets"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fill the tests' HF caches from ../shared/hf-datasets (``fsgen-eval offline-cache``; a second session
    finds them filled in about a second), so that lm-eval's unchanged gsm8k/mbpp/mmlu load offline in this
    process and in every subprocess the tests start."""
    if (SHARED / "hf-datasets").is_dir():
        from fsgen_eval.lm_eval.offline import build_offline_cache

        build_offline_cache(SHARED / "hf-datasets")


def skip_or_fail(reason: str) -> None:
    """Skip on a developer's machine that lacks something; fail in CI, where everything must run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tokenizer(models_dir):
    return testing.train_tokenizer(models_dir / "tokenizer")


@pytest.fixture(scope="session")
def llama_pair(models_dir, tokenizer) -> tuple[Path, Path]:
    """(large, small) Llama: the small one is the large one's first layer, embeddings and head."""
    return testing.build_pair(models_dir / "llama", tokenizer, arch="llama")


@pytest.fixture(scope="module")
def pair(request, llama_pair, llama_base):
    """The Llama pair loaded as the engine's ``ModelPair``; with ``llama_base`` as ``small_base`` (proxy tuning)
    in a test module that sets ``PAIR_WITH_BASE = True``. Module scope: a module's tests share one load."""
    from fsgen_eval.engine.pair import ModelPair

    large, small = llama_pair
    base = str(llama_base) if getattr(request.module, "PAIR_WITH_BASE", False) else None
    return ModelPair.load(small=str(small), large=str(large), small_base=base)


@pytest.fixture(scope="session")
def neox_pair(models_dir, tokenizer) -> tuple[Path, Path]:
    return testing.build_pair(models_dir / "neox", tokenizer, arch="gpt_neox", init=0.1, late_scale=0.3)


@pytest.fixture(scope="session")
def llama_base(models_dir, tokenizer) -> Path:
    """A proxy-tuning 'base' small model: same tokenizer, different weights."""
    return testing.build_model(models_dir / "llama-base", tokenizer, layers=1, seed=7)


@pytest.fixture(scope="session")
def padded_large(models_dir, tokenizer) -> Path:
    """A large model whose embedding matrix has more rows than the tokenizer (Qwen1.5-7B style)."""
    large, _ = testing.build_pair(models_dir / "padded", tokenizer, vocab_size=len(tokenizer) + 16, seed=3)
    return large


@pytest.fixture(scope="session")
def other_vocab_model(models_dir) -> Path:
    """A model with a different tokenizer (trained on other text)."""
    tok = testing.train_tokenizer(models_dir / "other-tok", vocab_size=300, corpus=["zebra quartz vexing jumps"] * 5)
    return testing.build_model(models_dir / "other", tok, layers=1)


_VLLM_MISSING = "tests marked vllm deselected: vLLM is not installed in this venv (scripts/ci_vllm.sh runs them in its own)"


def _vllm_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is None and os.environ.get("FSGEN_REQUIRE_VLLM") != "1"


def pytest_report_header(config) -> str | None:
    """Say at the top of every run when the vllm tests are left out, and why (never silently)."""
    return _VLLM_MISSING if _vllm_missing() else None


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``vllm`` are deselected, with the reason in the header, where vLLM is not installed (the main
    suite's venv: a skip there would read as a test this machine could not run); scripts/ci_vllm.sh runs them in
    a venv of its own, where FSGEN_REQUIRE_VLLM=1 makes its absence a failure."""
    if not _vllm_missing():
        return
    left = [item for item in items if item.get_closest_marker("vllm") is not None]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [item for item in items if item.get_closest_marker("vllm") is None]
