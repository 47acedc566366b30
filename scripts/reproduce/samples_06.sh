#!/usr/bin/env bash
# 06's models trained again at seed 0 with their checkpoints kept, then text from each: the same
# prompts, seed and temperature for every model; and each model's weights in float16 to bring back.
# Usage on the GPU machine: scripts/reproduce/samples_06.sh REVISION OUTDIR [SECONDS]
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2/06_samples
models="nested_lstm transformer titans titans_linear hope hope_outer hope_static"
mkdir -p "$out"
timeout "${3:-420}" python3 -m nlcore experiment 06_hope_titans --mode full --seeds 0 --jobs 7 \
  --configs $models --out "$out"
echo "06 seed 0: exit $?"
runs=$(for m in $models; do [ -f "$out/runs/$m/seed0/checkpoint.pt" ] && echo "$out/runs/$m/seed0"; done)
timeout 150 python3 -m nlcore sample --device cuda --chars 300 --temperature 0.8 --seed 0 \
  --prompt $'\n = = Early life = = \n \n ' --prompt ' The city of' --run $runs --out "$out/samples.json"
echo "samples: exit $?"
for r in $runs; do
  python3 scripts/reproduce/export_weights.py "$r/checkpoint.pt" "$2/weights/$(basename "$(dirname "$r")").pt"
done
