#!/usr/bin/env bash
# The 06 models' step times, each model in its own process beside its own Transformer baseline, so
# that a failure (or a compile) in one cannot touch another's measurement. Dynamo's recompiles are
# logged (TORCH_LOGS=recompiles) to each model's log.
# Usage on the GPU machine: scripts/gpu/bench_06_each.sh REVISION OUTDIR [MODEL ...] (default: all)
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
shift 2
mkdir -p "$out"
S="data.seq_len=512,data.batch_size=16"
T4="model.d_model=256,model.n_layers=4,model.n_heads=4"
declare -A CFG=(
  [nested_lstm]="$S,model.d_model=416,model.d_ff=1024"
  [titans]="$S,model.kind=titans,$T4,model.d_ff=768"
  [titans_linear]="$S,model.kind=titans,model.memory=linear,$T4,model.d_ff=768"
  [hope]="$S,model.kind=hope,$T4,model.d_ff=448"
  [hope_outer]="$S,model.kind=hope,$T4,model.d_ff=448,model.cms_mode=outer"
)
for m in "${@:-titans_linear titans hope_outer hope nested_lstm}"; do
  for name in $m; do
    TORCH_LOGS=recompiles timeout "${EACH_TIMEOUT:-170}" python3 -m nlcore bench --warmup 12 --windows 4 --steps 10 \
      --baseline transformer --out "$out/$name.json" --configs \
      "transformer=$S,model.kind=transformer,$T4,model.d_ff=1024" "$name=${CFG[$name]}" > "$out/$name.log" 2>&1
    echo "$name: exit $? $(grep -E "^$name " "$out/$name.log")"
  done
done
