#!/usr/bin/env bash
# The collaboration regression gate (docs/demo.md): the arith pair arith-s -> arith-l on fixed fsgen_arith test
# problems, fp32 greedy on the CPU, twice — the oracle (router=always: System 2 at every token) and the oracle
# behind an entropy router at a fixed threshold (System 2 at about a third of the tokens) — compared by
# `fsgen-eval check` with the committed baseline: collaboration rate, call rate and accuracy (exact match). A
# change to the decoding code that moves any of them exits 1.
#
#   bash scripts/ci_gate.sh                     # check (exit 0 pass, 1 regression, 2 bad input)
#   bash scripts/ci_gate.sh --update-baseline   # record reports/ci/baseline.json after an intended change
#
# Extra arguments go to `fsgen-eval check`. GATE_OUT (default runs/ci-gate) is where lm-eval writes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${GATE_OUT:-runs/ci-gate}
BASELINE=reports/ci/baseline.json
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then
    echo "ci_gate: GATE_OUT=$OUT exists and is not a folder" >&2
    exit 2
fi
# the gate's setup: changing any of these changes what the baseline means (rerun with --update-baseline)
PAIR=small=models/arith/arith-s,large=models/arith/arith-l,dtype=float32,device=cpu
# entropy threshold: the 70th percentile of arith-s's entropy on the study's oracle traces of this pair (a ~30 % call rate)
CONFIGS=("oracle:method=oracle,router=always" "entropy:method=oracle,router=entropy,threshold=0.015")
# Tolerances for a deterministic run: greedy fp32 on one thread repeats bit for bit, so these only absorb float
# noise between CPUs, where a near-tie may flip one token and change the rest of that generation: 0.01 is ~25 of
# the ~2,500 generated tokens of each run; accuracy may lose or gain two of the 40 problems. Intervals are off
# (--no-intervals): the run's sampling interval is not its noise.
TOLERANCES=(--no-intervals --tol-collab 0.01 --tol-call 0.01 --tol-acc 0.05)
rm -rf "$OUT" && mkdir -p "$OUT"
start=$(date +%s)
for config in "${CONFIGS[@]}"; do
    name=${config%%:*}
    # one thread: the reduction order of a multi-threaded matmul depends on the thread count; 10 problems per level
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
        "$PYTHON" -m fsgen_eval.cli run --model fsgen --model_args "$PAIR,${config#*:}" --include_path tasks/ \
        --tasks fsgen_arith --limit 10 --batch_size 8 --output_path "$OUT/$name" > "$OUT/$name.log" 2>&1 \
        || { echo "ci_gate: lm-eval failed (log: $OUT/$name.log)" >&2; tail -5 "$OUT/$name.log" >&2; exit 2; }
done
echo "ci_gate: lm-eval runs took $(( $(date +%s) - start )) s"
mkdir -p "$(dirname "$BASELINE")"
"$PYTHON" -m fsgen_eval.cli check "$OUT" --baseline "$BASELINE" "${TOLERANCES[@]}" "$@"
