#!/usr/bin/env bash
# One arith pair, arith-s -> arith-l, on LIMIT fsgen_arith test problems per level with System 1's and System 2's
# top-K probabilities traced (trace_topk=K), for the report's top-10 generation figure and t-SNE/k-means figure,
# beside FS-GEN's contrastive variant (s + beta (l - s)) and proxy tuning on the same large model.
# The arith family has no tuned/untuned pair, so the proxy run lets arith-sm stand in for a "tuned" System 1 over
# the base arith-s (System 2 = arith-l + (arith-sm - arith-s)): it shows the proxy mechanics and FS-GEN's
# base_collaboration_rate convention, not a tuning effect.
# Traces (tens of MB with K=100) stay in OUT (ignored); the report (figures, small tables) goes to REPORT.
#   scripts/topk_study.sh                    # LIMIT=25 K=100 OUT=runs/arith-topk REPORT=reports/arith-topk
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/arith-topk}
REPORT=${REPORT:-reports/arith-topk}
LIMIT=${LIMIT:-25}
K=${K:-100}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
m=$(pwd)/models/arith
common="large=$m/arith-l,router=always,trace=true,dtype=float32"
mkdir -p "$OUT" "$REPORT"
run() {  # name, model_args: one lm-eval run, its log beside it; a finished run (results file present) is kept
    if compgen -G "$OUT/$1/**/results_*.json" > /dev/null || compgen -G "$OUT/$1/results_*.json" > /dev/null; then
        echo "$1: already complete"; return; fi
    "$PY" -m fsgen_eval.cli run --model fsgen --model_args "$2" --include_path tasks --tasks fsgen_arith --limit "$LIMIT" --batch_size 8 \
        --output_path "$OUT/$1" > "$OUT/$1.log" 2>&1 || { echo "$1: failed, see $OUT/$1.log" >&2; exit 1; }
    echo "$1: done"
}
run oracle "small=$m/arith-s,$common,method=oracle,trace_topk=$K"
run contrastive-fsgen "small=$m/arith-s,$common,method=contrastive,contrastive_variant=fsgen"
run proxy "small=$m/arith-sm,small_base=$m/arith-s,$common,method=proxy"
"$PY" -m fsgen_eval.cli report "$OUT"/*/ -o "$REPORT" --params model_configs/arith.yaml \
    --title "arith-s -> arith-l: top-K traces, FS-GEN's contrastive variant and proxy ($LIMIT problems per level)"
