#!/usr/bin/env bash
# A family's committed study: every (large, small) pair with the oracle through the replaying sweep, then the
# scaling-law fit, the per-cell uncertainty analysis, the report and the clustered rate intervals.
#   FAMILY=micro (reports/micro/): GSM8K test 3-shot (the micro models' 1024-token window, docs/zoo.md) and MBPP test;
#                LIMIT=all: the sweep takes 27 minutes on a 2-core CPU (1639 s, reports/micro/replay_vs_lockstep.json;
#                JOBS=2 cells at once, one thread each).
#   FAMILY=arith (reports/arith/): fsgen_arith test (1,200 problems, zero-shot, docs/arith.md), and each model alone
#                (fsgen-eval zoo evaluate) for the accuracy column.
#
#   FAMILY=arith LIMIT=all OUT=runs/arith-study REPORT=reports/arith FORCE=1 scripts/study.sh   # regenerate the committed arith study
#   LIMIT=150 scripts/study.sh                                         # micro, runs in runs/study, report in runs/study/report
#
# The report goes to REPORT (default OUT/report); a folder holding committed files is refused unless FORCE=1, so
# a smaller study never overwrites a committed whole-test-set one. FSGEN_DRY_RUN=1 checks the arguments and prints
# the sweep's grid, running nothing. Resumable: rerun to continue a killed sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
FAMILY=${FAMILY:-micro}
LIMIT=${LIMIT:-150}  # LIMIT=all: whole test sets
OUT=${OUT:-runs/study}
REPORT=${REPORT:-$OUT/report}
case "$FAMILY" in
    micro) tasks=gsm8k,mbpp
           # MBPP is 3-shot in lm-eval's own task, so --num_fewshot 3 changes GSM8K only; --confirm_run_unsafe_code
           # lets MBPP run its tests (in code_eval's sandbox)
           lm_eval_args='--num_fewshot 3 --confirm_run_unsafe_code'
           title="FS-GEN on the micro family (oracle; GSM8K and MBPP test"
           whole="whole test sets: 1319 and 500 problems" ;;
    arith) tasks=fsgen_arith
           lm_eval_args='--include_path tasks/'
           title="FS-GEN on the arith family (oracle; fsgen_arith test"
           whole="whole test split: 1200 problems, 300 per level" ;;
    *) echo "study: unknown FAMILY=$FAMILY; valid: micro, arith" >&2; exit 2 ;;
esac
if [ "${FORCE:-0}" != 1 ] && command -v git > /dev/null && git ls-files --error-unmatch -- "$REPORT" > /dev/null 2>&1; then
    echo "study: $REPORT holds committed results; pass FORCE=1 to overwrite them, or another REPORT=folder" >&2
    exit 2
fi
if [ "${FSGEN_DRY_RUN:-0}" != 1 ]; then mkdir -p "$(dirname "$OUT")" "$REPORT"; fi
export HF_ALLOW_CODE_EVAL=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
# lm-eval's gsm8k/mbpp read datasets' own cache offline: fill it from the hub-like folder ($FSGEN_DATASETS_DIR, else
# ../shared/hf-datasets; entries already cached are kept)
if [ "$FAMILY" = micro ] && [ "${FSGEN_DRY_RUN:-0}" != 1 ]; then fsgen-eval offline-cache; fi
limit=()
[ "$LIMIT" = all ] || limit=(--limit "$LIMIT")
# One sweep for every task, JOBS cells at a time (one thread each): System 2 decodes once per (large, task) and
# every small model is replayed on it (docs/replay.md), with greedy speculative counters for draft lengths 1-8.
sweep=(fsgen-eval sweep --family "$FAMILY" --methods oracle --routers always --tasks "$tasks" --jobs "${JOBS:-2}"
    --output-path "$OUT" "${limit[@]}" --model-args-extra dtype=float32,batch_size=${BATCH:-8} --draft-lengths 1,2,3,4,5,6,7,8
    --lm-eval-args="$lm_eval_args")
if [ "${FSGEN_DRY_RUN:-0}" = 1 ]; then "${sweep[@]}" --dry-run; echo "study (dry run): $FAMILY, report to $REPORT"; exit 0; fi
"${sweep[@]}" > "$OUT.log" 2>&1
if [ "$FAMILY" = arith ] && [ "$LIMIT" = all ]; then  # each model alone, for the accuracy of both ends of every pair
    fsgen-eval zoo evaluate --family arith --out-dir "$REPORT/alone" >> "$OUT.log" 2>&1
fi
fsgen-eval fit "$OUT" --json > "$REPORT/fit.json"
fsgen-eval fit "$OUT" > "$REPORT/fit.txt"
# one analysis per cell (OUT/_system2 holds the System 2 runs the cells were replayed from)
fsgen-eval analyze "$OUT"/*__*/ --target-call-rate 0.5 > "$REPORT/analyze.txt"
if [ "$LIMIT" = all ]; then size="$whole"; else size="$LIMIT problems each"; fi
fsgen-eval report "$OUT"/*__*/ -o "$REPORT" --title "$title, $size)"
python scripts/rate_intervals.py "$OUT"/*__*/ --params "model_configs/$FAMILY.yaml" > "$REPORT/rates.md"
