#!/usr/bin/env bash
# The committed learned-router study (reports/micro/learned_router.md): micro-m -> micro-xl, oracle with
# router=always and trace_topk=20 on N GSM8K train questions (to fit on) and N test questions (held out), 3-shot,
# greedy, at most 128 new tokens; then every learned router is fitted on the train traces at a 0.3 target call
# rate and compared with the max_prob, margin and entropy routers at equal call rate on the test traces.
# N=200 takes about 20 minutes on the shared 2-core CPU (one thread). Resumable: finished splits are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
OUT=${OUT:-runs/learned_router}
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python scripts/learned_router_traces.py "$OUT" --n "$N" --topk 20 --max-new-tokens 128
routers=()
: > "$OUT/train.log"
for spec in scalar:logistic:downsample scalar:svm:downsample topk:logistic:downsample topk:svm:downsample \
            scalar:logistic:weight; do
    IFS=: read -r features model balance <<< "$spec"
    name="$features-$model-$balance"
    fsgen-eval router train "$OUT/train.jsonl" --features "$features" --k 10 --model "$model" \
        --balance "$balance" --target-call-rate 0.3 -o "$OUT/$name.json" | tee -a "$OUT/train.log"
    routers+=("$OUT/$name.json")
done
{
    echo "# Learned routers vs threshold routers on held-out GSM8K (micro-m -> micro-xl)"
    echo
    echo "Made by \`scripts/learned_router_study.sh\` (N=$N). Traces: oracle, \`router=always\`, \`trace_topk=20\`,"
    echo "3-shot GSM8K, greedy, at most 128 new tokens, stopped at \`Question:\`; fitted on $N **train** questions"
    echo "(after the 3 exemplars), evaluated on the first $N **test** questions. A handoff is System 2's"
    echo "(micro-xl's) token differing from System 1's (micro-m's) greedy token."
    echo
    python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from fsgen_eval.analysis.files import read_trace_file
out = Path(sys.argv[1])
for split in ("train", "test"):
    recs = read_trace_file(out / f"{split}.jsonl")
    n = sum(len(r["token_id"]) for r in recs)
    h = sum(sum(r["handoff"]) for r in recs)
    print(f"- {split}: {len(recs)} questions, {n} tokens, {h} handoffs (collaboration rate {h / n:.3f})")
PY
    echo
    echo "Routers fitted (\`fsgen-eval router train --target-call-rate 0.3\`, at most 4000 training tokens;"
    echo "\`scalar\` = s1_entropy, s1_top1_prob, s1_margin, position; \`topk\` = System 1's 10 largest probabilities,"
    echo "FS-GEN's SVM input; \`downsample\` = FS-GEN's 1:1 negatives, \`weight\` = class weights):"
    echo
    sed 's/^/    /' "$OUT/train.log"
    echo
    echo "Handoffs caught on the **test** tokens at equal call rate (\`fsgen-eval router compare\`): each router's"
    echo "threshold chosen on the test tokens' own what-if curve at the largest call rate not above the target"
    echo "(reached rate in brackets); the last column applies each learned router's saved (training) threshold."
    echo
    fsgen-eval router compare "$OUT/test.jsonl" --routers "${routers[@]}" --rates 0.1,0.2,0.3,0.5
} > reports/micro/learned_router.md
echo "wrote reports/micro/learned_router.md"
