#!/usr/bin/env bash
# The committed speed measurements (results/bench/): the named configurations of the seed preset
# (fast path on and off, surprise, delta rule, a plain LSTM LM) and the scaling sweeps.
# Usage on the GPU machine: scripts/reproduce/bench_final.sh REVISION OUTDIR [seed|scaling ...] (default: both)
set -euo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
shift 2
mkdir -p "$out"
for part in "${@:-seed scaling}"; do
  for p in $part; do
    case $p in
      seed) python3 -m nlcore bench --warmup 60 --windows 12 --out "$out/seed.json" --configs seed_reset \
              seed_persistent seed_surprise_hooks seed_surprise_reference seed_delta plain_lstm seed_nocompile \
              seed_batch256 seed_persistent_eager seed_surprise_hooks_eager plain_lstm_eager ;;
      scaling) python3 -m nlcore bench --warmup 60 --windows 8 --scaling --out "$out/scaling.json" ;;
      *) echo "bench_final.sh: unknown part $p" >&2; exit 2 ;;
    esac
  done
done
