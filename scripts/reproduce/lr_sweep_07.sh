#!/usr/bin/env bash
# Experiment 07_lr_sweep in full (6 models x 5 learning rates, 1 seed, 8.2 M characters each) side
# by side on one GPU, with the search for a Titans MLP memory that trains (titans_mlp_search.sh).
# Usage on the GPU machine: scripts/reproduce/lr_sweep_07.sh REVISION OUTDIR [SECONDS]
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-480}
mkdir -p "$out"
timeout "$limit" python3 -m nlcore experiment 07_lr_sweep --mode full --jobs 30 --out "$out/07_lr_sweep" \
  > "$out/lr_sweep.log" 2>&1 &
bash "$(dirname "$0")/titans_mlp_search.sh" "$1" "$out" "$limit" &
wait
tail -3 "$out/lr_sweep.log" "$out/titans.log"
