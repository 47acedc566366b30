#!/usr/bin/env bash
# Experiment 08_continual in full on one GPU: 7 configurations x 3 seeds side by side.
# Usage on the GPU machine: scripts/reproduce/continual_08.sh REVISION OUTDIR [SECONDS]
# Runs still going after SECONDS (default 480) are stopped; a later call finishes them (finished
# runs are skipped, the others start again).
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
mkdir -p "$out"
timeout "${3:-480}" python3 -m nlcore experiment 08_continual --mode full --jobs "${JOBS:-21}" --out "$out/08_continual"
echo "08_continual: exit $?"
