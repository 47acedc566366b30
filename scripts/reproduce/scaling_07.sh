#!/usr/bin/env bash
# A part of the 07 study on the GPU machine, its runs side by side, then the long-context measure of
# every finished run it holds (checkpoints never leave the machine), then one tar of OUTDIR's
# experiments without checkpoints. Run again on the same OUTDIR while the machine is held, the grid
# skips finished runs and resumes the others from their last checkpoint.
# Usage: scripts/reproduce/scaling_07.sh REVISION OUTDIR SECONDS PART[=MODEL,MODEL...]...
#   PART: 8.2M | 33M | 131M (07_scaling's runs of that budget) | shakespeare | width | context |
#   bench | bench_wide (the step time of every 07 model at 06's width, or at 07_width's, alone on the
#   GPU before anything else starts: OUTDIR/models_07.json or models_07_wide.json, the prices of
#   nlcore.report.figures.bench_seconds);
#   =MODEL,... keeps that part to those of 07's models (default: all six)
# SEEDS="0 1" (environment) trains only those of each configuration's registered seeds (the 131 M
# budget at fewer seeds than three); later calls may add the others.
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=$3
shift 3
work=${WORK:-/tmp/o}  # WORK: where runs live on the machine (checkpoints stay there)
mkdir -p "$out" "$work"
all_models=nested_lstm,transformer,titans_norm,titans_linear,hope,hope_outer
experiment() {  # STEM [LABEL...]
  local stem=$1
  shift
  # shellcheck disable=SC2086
  timeout "$limit" python3 -m nlcore experiment "$stem" --mode full --jobs "${JOBS:-18}" --out "$work/$stem" \
    ${SEEDS:+--seeds $SEEDS} ${1+--configs "$@"} >> "$out/$stem.log" 2>&1
  echo "$stem $*: exit $?"
}
bench() {  # NAME BASELINE CONFIG...: step times alone on the GPU into OUTDIR/NAME.json
  local name=$1 baseline=$2
  shift 2
  timeout "${BENCH_SECONDS:-400}" python3 -m nlcore bench --warmup 12 --windows 4 --steps 10 \
    --baseline "$baseline" --out "$out/$name.json" --configs "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $?"
}
IFS=, read -ra each <<< "$all_models"
narrow=("${each[@]/#/07_scaling:}")  # a budget changes the number of steps, not a step
[[ " $* " == *" bench "* ]] && bench models_07 07_scaling:transformer_8.2M "${narrow[@]/%/_8.2M}"
[[ " $* " == *" bench_wide "* ]] && bench models_07_wide 07_width:transformer "${each[@]/#/07_width:}"
pids=()
parts=()
for arg in "$@"; do
  part=${arg%%=*}
  parts+=("$part")
  [[ $arg == *=* ]] && list=${arg#*=} || list=$all_models
  IFS=, read -ra models <<< "$list"
  case $part in
    8.2M|33M|131M) experiment 07_scaling "${models[@]/%/_$part}" & pids+=($!) ;;
    shakespeare) experiment 07_shakespeare "${models[@]}" & pids+=($!) ;;
    width) experiment 07_width "${models[@]}" & pids+=($!) ;;
    context|bench|bench_wide) ;;
    *) echo "scaling_07.sh: unknown PART $part" >&2; exit 2 ;;
  esac
done
wait "${pids[@]}"
if [[ " ${parts[*]} " == *" context "* ]]; then
  # One process per run, all side by side: a run measured already, or unfinished, is skipped.
  for run in "$work"/07_*/runs/*/seed*; do
    [[ -d $run ]] || continue
    timeout "${CONTEXT_SECONDS:-150}" python3 -m nlcore evaluate-context --skip --device cuda --run "$run" \
      > "$run/context.log" 2>&1 &
  done
  wait
  cat "$work"/07_*/runs/*/seed*/context.log >> "$out/context.log" 2>/dev/null
  echo "context: done"
fi
experiments=$(cd "$work" && ls -d 07_* 2>/dev/null)
# shellcheck disable=SC2086
[[ -z $experiments ]] || tar -C "$work" --exclude checkpoint.pt -czf "$out/07.tgz" $experiments
