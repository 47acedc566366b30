#!/usr/bin/env bash
# Experiment 07_lr_sweep in full (6 models x 5 learning rates, 1 seed, 8.2 M characters each) side
# by side on one GPU, or the part of it named by LABEL... (its configuration labels, e.g.
# hope_lr0.001). Run again on the same OUTDIR while the machine is held, it skips the finished runs
# and resumes the others from their last checkpoint.
# Usage on the GPU machine: scripts/reproduce/lr_sweep_07.sh REVISION OUTDIR [SECONDS] [LABEL...]
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-480}
shift $(( $# < 3 ? $# : 3 ))
labels=("$@")
mkdir -p "$out"
timeout "$limit" python3 -m nlcore experiment 07_lr_sweep --mode full --jobs "${JOBS:-30}" --out "$out/07_lr_sweep" \
  ${labels[@]+--configs "${labels[@]}"} >> "$out/lr_sweep.log" 2>&1
echo "07_lr_sweep: exit $?"
tail -3 "$out/lr_sweep.log"
