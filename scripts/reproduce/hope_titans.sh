#!/usr/bin/env bash
# The 06 results on the GPU machine: memory path speed, model throughput, and the 06 experiments.
# Usage: scripts/reproduce/hope_titans.sh REVISION DIRTY(0|1) OUTDIR PHASE...
#   PHASE: speed | bench | bench_teach | STEM[:labels]
# Every phase copies what it produced to OUTDIR as soon as it ends, so a time-out loses one phase.
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=$2 PYTHONUNBUFFERED=1
out=$3
shift 3
for phase in "$@"; do
  case $phase in
    speed)
      mkdir -p "$out/bench"
      python3 -m nlcore.bench.memory_paths --window 2048 --batch 8 --graph --out "$out/bench/memory_paths.json" ;;
    bench)
      mkdir -p "$out/bench"
      python3 -m nlcore bench --warmup 12 --windows 4 --steps 10 --baseline transformer \
        --out "$out/bench/models_06.json" --configs nested_lstm transformer transformer_eager titans \
        titans_linear hope hope_outer ;;  # nlcore.bench.step.MODELS_06
    bench_teach)  # the layer teach against the Transformer and HOPE
      mkdir -p "$out/bench"
      python3 -m nlcore bench --warmup 12 --windows 4 --steps 10 --baseline transformer \
        --out "$out/bench/models_06_teach.json" --configs transformer hope hope_layer_teach ;;
    *)
      stem=${phase%%:*}
      "$(dirname "$0")/run_experiments.sh" "$NLCORE_GIT_REVISION" "$NLCORE_GIT_DIRTY" "${JOBS:-4}" "$phase"
      mkdir -p "$out/results"
      cp -r "results/$stem" "$out/results/" ;;
  esac
done
