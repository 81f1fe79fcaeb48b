#!/usr/bin/env bash
# The committed micro-family study (reports/micro/): every (large, small) micro pair with the oracle on
# GSM8K test (3-shot: the micro models' 1024-token training window, see docs/zoo.md) and MBPP test, then the
# scaling-law fit, the uncertainty analysis and the report. Resumable: rerun to continue a killed sweep.
# LIMIT=all: the sweep takes 27 minutes on a 2-core CPU (1639 s, reports/micro/replay_vs_lockstep.json; JOBS=2 cells at once, one thread each; lockstep, --no-replay: 76).
#
#   LIMIT=150 scripts/micro_study.sh                                         # runs in runs/study, report in runs/study/report
#   LIMIT=all OUT=runs/study-all REPORT=reports/micro FORCE=1 scripts/micro_study.sh   # regenerate the committed study
#
# The report goes to REPORT (default OUT/report); a folder holding committed files (reports/micro) is refused
# unless FORCE=1, so a smaller study never overwrites the committed whole-test-set one. FSGEN_DRY_RUN=1 checks the
# arguments and prints the sweep's grid, running nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-150}  # LIMIT=all: whole test sets
OUT=${OUT:-runs/study}
REPORT=${REPORT:-$OUT/report}
if [ "${FORCE:-0}" != 1 ] && command -v git > /dev/null && git ls-files --error-unmatch -- "$REPORT" > /dev/null 2>&1; then
    echo "micro_study: $REPORT holds committed results; pass FORCE=1 to overwrite them, or another REPORT=folder" >&2
    exit 2
fi
if [ "${FSGEN_DRY_RUN:-0}" != 1 ]; then mkdir -p "$(dirname "$OUT")" "$REPORT"; fi
export FSGEN_DATASETS_DIR=${FSGEN_DATASETS_DIR:-$(cd .. && pwd)/shared/hf-datasets}
export HF_ALLOW_CODE_EVAL=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
limit=()
[ "$LIMIT" = all ] || limit=(--limit "$LIMIT")
# One sweep for both tasks, JOBS cells at a time (one thread each): System 2 decodes once per (large, task) and
# every small model is replayed on it (docs/replay.md), with greedy speculative counters for draft lengths 1-8. MBPP is 3-shot in lm-eval's own task, so
# --num_fewshot 3 changes GSM8K only; --confirm_run_unsafe_code lets MBPP run its tests (in code_eval's sandbox).
sweep=(fsgen-eval sweep --family micro --methods oracle --routers always --tasks gsm8k,mbpp --jobs "${JOBS:-2}"
    --output-path "$OUT" "${limit[@]}" --model-args-extra dtype=float32,batch_size=8 --draft-lengths 1,2,3,4,5,6,7,8
    --lm-eval-args='--num_fewshot 3 --confirm_run_unsafe_code')
if [ "${FSGEN_DRY_RUN:-0}" = 1 ]; then "${sweep[@]}" --dry-run; echo "micro_study (dry run): report to $REPORT"; exit 0; fi
"${sweep[@]}" > "$OUT.log" 2>&1
fsgen-eval fit "$OUT" --json > "$REPORT/fit.json"
fsgen-eval fit "$OUT" > "$REPORT/fit.txt"
# one analysis per cell (OUT/_system2 holds the System 2 runs the cells were replayed from)
fsgen-eval analyze "$OUT"/*__*/ --target-call-rate 0.5 > "$REPORT/analyze.txt"
if [ "$LIMIT" = all ]; then size="whole test sets: 1319 and 500 problems"; else size="$LIMIT problems each"; fi
fsgen-eval report "$OUT"/*__*/ -o "$REPORT" --title "FS-GEN on the micro family (oracle; GSM8K and MBPP test, $size)"
python scripts/rate_intervals.py "$OUT"/*__*/ > "$REPORT/rates.md"
