#!/usr/bin/env bash
# The committed micro-family study (reports/micro/): every (large, small) micro pair with the oracle on
# GSM8K test (3-shot: the micro models' 1024-token training window, see docs/zoo.md) and MBPP test, then the
# scaling-law fit, the uncertainty analysis and the report. Resumable: rerun to continue a killed sweep.
# Takes about 25 minutes on a 2-core CPU (the two sweeps run side by side, one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-150}  # LIMIT=all: whole test sets
OUT=${OUT:-runs/study}
export FSGEN_DATASETS_DIR=${FSGEN_DATASETS_DIR:-$(cd .. && pwd)/shared/hf-datasets}
export HF_ALLOW_CODE_EVAL=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
sweep() {
    local limit=()
    [ "$LIMIT" = all ] || limit=(--limit "$LIMIT")
    fsgen-eval sweep --family micro --methods oracle --routers always --output-path "$OUT" "${limit[@]}" \
        --model-args-extra dtype=float32,batch_size=8 "$@"
}
sweep --tasks gsm8k --lm-eval-args='--num_fewshot 3' > "$OUT.gsm8k.log" 2>&1 &
sweep --tasks mbpp --lm-eval-args=--confirm_run_unsafe_code > "$OUT.mbpp.log" 2>&1 &
wait
fsgen-eval fit "$OUT" --json > reports/micro/fit.json
fsgen-eval fit "$OUT" > reports/micro/fit.txt
fsgen-eval analyze "$OUT" --target-call-rate 0.5 > reports/micro/analyze.txt
fsgen-eval report "$OUT" -o reports/micro --title "FS-GEN on the micro family (oracle; GSM8K and MBPP test, ${LIMIT} problems each)"
python scripts/rate_intervals.py "$OUT" > reports/micro/rates.md
