#!/usr/bin/env bash
# On the GPU machine, side by side: 06's titans_cap at its three seeds, the seed-0 models of the 06
# configurations that have no committed sample (titans_norm at seed 2, its only seed that trains)
# and, with SEARCH=1, the Titans MLP search's round 3 (the cap's size, one seed); then a sample from
# each with the settings of results/06_hope_titans/samples/. Everything but the logs leaves in one
# tar, OUTDIR/runs.tgz (checkpoints stay on the machine), since few files come back from it.
# Usage: [SEARCH=1] scripts/reproduce/titans_cap_06.sh REVISION OUTDIR [SECONDS]
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-420}
work=${WORK:-/tmp/o}  # WORK: where runs live on the machine (checkpoints stay there)
mkdir -p "$out" "$work/samples"
here=$(dirname "$0")
run06() {  # NAME SEEDS LABEL...: 06 configurations into $work/NAME
  local name=$1 seeds=$2
  shift 2
  # shellcheck disable=SC2086
  timeout "$limit" python3 -m nlcore experiment 06_hope_titans --mode full --jobs $(($# * $(wc -w <<< "$seeds"))) --seeds $seeds \
    --configs "$@" --out "$work/$name" > "$out/$name.log" 2>&1
  echo "$name: exit $?"
}
run06 06cap "0 1 2" titans_cap &
run06 06s 0 hope_no_momentum hope_outer_adamw hope_outer_no_momentum &
run06 06n 2 titans_norm &
[[ ${SEARCH:-0} == 1 ]] && "$here/titans_mlp_search.sh" "$1" "$work/search" "$limit" 3 &
wait
cp "$work/search/titans.log" "$out/" 2>/dev/null
prompts=(--prompt $'\n = = Early life = = \n \n ' --prompt ' The city of')
for run in "$work"/06cap/runs/titans_cap/seed0 "$work"/06s/runs/*/seed0 "$work"/06n/runs/titans_norm/seed2; do
  [[ -f $run/checkpoint.pt ]] || { echo "no checkpoint: $run"; continue; }
  name=$(basename "$(dirname "$run")")
  timeout "${SAMPLE_SECONDS:-150}" python3 -m nlcore sample --device cuda --chars 240 --temperature 0.8 --seed 0 "${prompts[@]}" \
    --run "$run" --out "$work/samples/${name}.json" > "$work/samples/${name}.log" 2>&1 &
done
wait
tar -C "$work" --exclude checkpoint.pt -czf "$out/runs.tgz" $(cd "$work" && ls -d 06* samples search 2>/dev/null)
echo "done"
