#!/usr/bin/env bash
# The committed arith frontiers (reports/arith/frontier/<pair>/, docs/frontier.md): for arith-s -> arith-l and
# arith-sm -> arith-m, System 1 alone, System 2 alone, max_prob / margin / entropy at the default target call
# rates and a learned router trained on the pair's mismatches, all on fsgen_arith's first LIMIT test problems
# of each level (lm-eval's --limit is per level task: LIMIT=50 -> 200 problems, level-balanced).
#
# Calibration and training never see an evaluated problem: thresholds are set on System 1 alone over the whole
# validation split (fsgen_arith_validation, 400 problems), and the learned router (`fsgen-eval router train`,
# logistic on scalar features) is fitted on the oracle's traces of that same validation split.
# Resumable: rerun to continue (finished cells are reused; cells are locked, so two copies may run at once).
# NECESSARY_ROUTER_<pair>=ROUTER.json adds a router trained on outcome labels (fsgen-eval label) beside it.
# The third field of a pair names the routers whose thresholds also run FS-GEN's lossy speculative decoding
# (--speculative-fsgen; measured for arith-s -> arith-l with entropy, num_draft 5).
# FSGEN_DRY_RUN=1 prints the commands and runs nothing.
set -euo pipefail
if [ "${FSGEN_DRY_RUN:-0}" = 1 ]; then run() { echo "$@"; }; else run() { "$@"; }; fi
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-50}
OUT=${OUT:-runs/frontier}
EXTRA=dtype=float32,batch_size=${BATCH:-64}
for pair in arith-s:arith-l:entropy arith-sm:arith-m:; do
  IFS=: read -r small large spec <<< "$pair"
  name=${small}__${large}
  report=reports/arith/frontier/$name
  # the learned router's training traces: the oracle on the validation split (System 2 once, replayed)
  run fsgen-eval sweep --family arith --models "$small,$large" --methods oracle --routers always \
    --tasks fsgen_arith_validation --output-path "$OUT/train" --model-args-extra "$EXTRA" \
    --lm-eval-args='--include_path tasks/'
  if [ ! -f "$report/router_mismatch.json" ]; then
    run mkdir -p "$report"
    run fsgen-eval router train "$OUT/train/$name/oracle-always/fsgen_arith_validation/$name"/traces_*.jsonl \
      --target-call-rate 0.2 -o "$report/router_mismatch.json"
  fi
  necessary_var="NECESSARY_ROUTER_${small//-/_}__${large//-/_}"
  learned=("$report/router_mismatch.json" ${!necessary_var:+"${!necessary_var}"})
  run fsgen-eval frontier --small "models/arith/$small" --large "models/arith/$large" --task fsgen_arith \
    --limit "$LIMIT" --calibration-task fsgen_arith_validation --learned "${learned[@]}" \
    --model-args-extra "$EXTRA" --lm-eval-args '--include_path tasks/' --n-boot 20000 \
    ${spec:+--speculative-fsgen "$spec"} -o "$OUT/$name"
  run cp "$OUT/$name"/frontier.{json,md,png} "$report/"
done
