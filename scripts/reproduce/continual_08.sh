#!/usr/bin/env bash
# Experiment 08_continual in full on one GPU (7 configurations x 3 seeds side by side), then text
# from the seed-0 models of its phase A (06's configurations trained on WikiText-2) and from 06's
# Titans MLP configuration trained once more at seed 0 beside them (SAMPLE_06 below): the same
# prompts, seed and temperature for every model, written to OUTDIR/06_samples/samples.json.
# Usage on the GPU machine: scripts/reproduce/continual_08.sh REVISION OUTDIR [SECONDS]
# Runs still going after SECONDS (default 420) are stopped; a later call on the same machine and
# OUTDIR finishes them (finished runs are skipped, the others resume from their last checkpoint:
# phase A's every 500 steps, phase B's at each evaluation point).
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-420}
mkdir -p "$out"
# SAMPLE_06 (environment): 06's configurations trained at seed 0 for their samples (default titans,
# which 08 does not train; add hope when CONFIGS leaves it out)
# shellcheck disable=SC2086
timeout "$limit" python3 -m nlcore experiment 06_hope_titans --mode full --seeds 0 --jobs 2 --configs ${SAMPLE_06:-titans} \
  --out "$out/06_samples" > "$out/titans_06.log" 2>&1 &
# CONFIGS (environment): run only these configurations now, e.g. CONFIGS="transformer hope"
# shellcheck disable=SC2086
timeout "$limit" python3 -m nlcore experiment 08_continual --mode full --jobs "${JOBS:-21}" --out "$out/08_continual" \
  ${CONFIGS:+--configs $CONFIGS}
echo "08_continual: exit $?"
wait
runs=$(ls -d "$out"/08_continual/runs/*/seed0/phase_a "$out"/06_samples/runs/*/seed0 2>/dev/null |
  while read -r r; do [ -f "$r/checkpoint.pt" ] && [ -f "$r/summary.json" ] && echo "$r"; done)
# shellcheck disable=SC2086
timeout "${SAMPLE_SECONDS:-100}" python3 -m nlcore sample --device cuda --chars 240 --temperature 0.8 --seed 0 \
  --prompt $'\n = = Early life = = \n \n ' --prompt ' The city of' --run $runs --out "$out/06_samples/samples.json"
echo "samples: exit $?"
