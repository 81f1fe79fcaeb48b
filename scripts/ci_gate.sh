#!/usr/bin/env bash
# The collaboration-rate regression gate (docs/demo.md): one micro pair, oracle with router=always, fp32 greedy
# on the CPU, a fixed set of GSM8K problems, compared by `fsgen-eval check` with the committed baseline. A change
# to the decoding code that moves the collaboration rate (or the call rate, or accuracy) exits 1.
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
DATA=${FSGEN_DATASETS_DIR:-../shared/hf-datasets}
if [ ! -d "$DATA/openai/gsm8k" ]; then
    echo "ci_gate: no offline datasets: $DATA/openai/gsm8k is not a folder (set FSGEN_DATASETS_DIR)" >&2
    exit 2
fi
# the gate's setup: changing any of these changes what the baseline means (rerun with --update-baseline)
MODEL_ARGS=small=models/micro/micro-m,large=models/micro/micro-xl,method=oracle,router=always,dtype=float32,device=cpu
# Tolerances for a deterministic run: greedy fp32 on one thread repeats bit for bit (1 and 2 threads gave
# identical runs too), so these only absorb float noise between CPUs, where a near-tie may flip one token and
# change the rest of that generation: 0.01 is ~24 of the ~2400 generated tokens; accuracy may lose or gain one
# of the 20 problems. Intervals are off (--no-intervals): the run's sampling interval (+-0.1) is not its noise.
TOLERANCES=(--no-intervals --tol-collab 0.01 --tol-call 0.005 --tol-acc 0.05)
rm -rf "$OUT" && mkdir -p "$OUT"
start=$(date +%s)
# one thread: the reduction order of a multi-threaded matmul depends on the thread count
OMP_NUM_THREADS=1 FSGEN_DATASETS_DIR=$DATA HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    "$PYTHON" -m lm_eval --model fsgen --model_args "$MODEL_ARGS" --tasks gsm8k --limit 20 --num_fewshot 3 \
    --batch_size 8 --output_path "$OUT" > "$OUT/lm_eval.log" 2>&1 \
    || { echo "ci_gate: lm-eval failed (log: $OUT/lm_eval.log)" >&2; tail -5 "$OUT/lm_eval.log" >&2; exit 2; }
echo "ci_gate: lm-eval run took $(( $(date +%s) - start )) s"
mkdir -p "$(dirname "$BASELINE")"
"$PYTHON" -m fsgen_eval.cli check "$OUT" --baseline "$BASELINE" "${TOLERANCES[@]}" "$@"
