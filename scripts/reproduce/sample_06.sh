#!/usr/bin/env bash
# On the GPU machine: train 06 configurations at one seed each, side by side, then sample each with
# the settings of results/06_hope_titans/samples/ (two prompts, 240 characters, temperature 0.8,
# sampling seed 0, memories writing). One tar back, OUTDIR/samples.tgz: the runs without their
# checkpoints, each sample's JSON and log (the log shows the sampler's progress bar).
# Usage: [SAMPLE_SECONDS=600] scripts/reproduce/sample_06.sh REVISION OUTDIR SECONDS CONFIG:SEED...
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=$3
shift 3
work=${WORK:-/tmp/o}/sample_06  # WORK: where runs live on the machine (checkpoints stay there)
mkdir -p "$out" "$work/samples"
prompts=(--prompt $'\n = = Early life = = \n \n ' --prompt ' The city of')
for item in "$@"; do
  config=${item%%:*} seed=${item##*:}
  name=${config}_seed$seed  # its own experiment folder: two seeds of one configuration never share one
  (
    timeout "$limit" python3 -m nlcore experiment 06_hope_titans --mode full --jobs 1 --seeds "$seed" \
      --configs "$config" --out "$work/$name" > "$work/$name.log" 2>&1
    echo "$name: exit $?"
    timeout "${SAMPLE_SECONDS:-600}" python3 -m nlcore sample --device cuda --chars 240 --temperature 0.8 \
      --seed 0 "${prompts[@]}" --run "$work/$name/runs/$config/seed$seed" \
      --out "$work/samples/$name.json" > "$work/samples/$name.log" 2>&1
    echo "$name sample: exit $?"
  ) &
done
wait
tar -C "$work" --exclude checkpoint.pt -czf "$out/samples.tgz" .
