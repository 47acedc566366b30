#!/usr/bin/env bash
# The 06 models' step times, each model in its own process beside its own Transformer baseline, so
# that a failure (or a compile) in one cannot touch another's measurement. Dynamo's recompiles are
# logged (TORCH_LOGS=recompiles) to each model's log. Models: nlcore.bench.step.MODELS_06.
# Usage on the GPU machine: scripts/reproduce/bench_06_each.sh REVISION OUTDIR [MODEL ...] (default: all)
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
shift 2
mkdir -p "$out"
for m in "${@:-titans_linear titans hope_outer hope nested_lstm}"; do
  for name in $m; do
    TORCH_LOGS=recompiles timeout "${EACH_TIMEOUT:-170}" python3 -m nlcore bench --warmup 12 --windows 4 --steps 10 \
      --baseline transformer --out "$out/$name.json" --configs transformer "$name" > "$out/$name.log" 2>&1
    echo "$name: exit $? $(grep -E "^$name " "$out/$name.log")"
  done
done
