#!/usr/bin/env bash
# Run registered experiments in FULL mode on the GPU machine, recording the revision the tree
# was copied from (the copy has no git history). Usage:
#   scripts/reproduce/run_experiments.sh REVISION DIRTY(0|1) JOBS STEM[:label,label...] ...
set -euo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=$2 PYTHONUNBUFFERED=1
jobs=$3
shift 3
for spec in "$@"; do
  stem=${spec%%:*}
  if [[ $spec == *:* ]]; then
    IFS=, read -r -a labels <<< "${spec#*:}"
    python3 -m nlcore experiment "$stem" --mode full --jobs "$jobs" --configs "${labels[@]}"
  else
    python3 -m nlcore experiment "$stem" --mode full --jobs "$jobs"
  fi
done
