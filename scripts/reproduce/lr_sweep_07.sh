#!/usr/bin/env bash
# Experiment 07_lr_sweep in full (6 models x 5 learning rates, 1 seed, 8.2 M characters each) side
# by side on one GPU, with a search for a Titans MLP memory step that trains (06's titans
# configuration with retention toward the initial weights and several step ceilings, and with each
# token's inner gradient divided by its curvature bound (mem_normalize) at steps of 1, 4 and 16
# times 1/chunk, 1 seed).
# Usage on the GPU machine: scripts/reproduce/lr_sweep_07.sh REVISION OUTDIR [SECONDS]
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-480}
mkdir -p "$out"
timeout "$limit" python3 -m nlcore experiment 07_lr_sweep --mode full --jobs 30 --out "$out/07_lr_sweep" \
  > "$out/lr_sweep.log" 2>&1 &
base="--set data.seq_len=512 --set data.batch_size=16 --set model.mem_chunk=64 --set steps=1000 --set warmup=100
  --set eval_every=0 --set model.kind=titans --set model.memory=mlp --set model.d_model=256 --set model.n_layers=4
  --set model.n_heads=4 --set model.d_ff=768 --set cms.levels.fast.lr=0.002"
# shellcheck disable=SC2086
timeout "$limit" python3 -m nlcore grid --name titans_mlp_step --preset seed --seeds 0 --jobs 9 $base \
  --config "zero_c64: model.mem_retention=zero" \
  --config "init_c64: model.mem_retention=init" \
  --config "init_c256: model.mem_retention=init model.mem_step_max=0.00390625" \
  --config "init_c1024: model.mem_retention=init model.mem_step_max=0.0009765625" \
  --config "init_x4: model.mem_retention=init model.mem_step_max=0.0625" \
  --config "init_a995_c256: model.mem_retention=init model.mem_alpha0=0.995 model.mem_step_max=0.00390625" \
  --config "norm_c64: model.mem_retention=init model.mem_normalize=true" \
  --config "norm_x4: model.mem_retention=init model.mem_normalize=true model.mem_step_max=0.0625" \
  --config "norm_x16: model.mem_retention=init model.mem_normalize=true model.mem_step_max=0.25" \
  --out "$out/titans_mlp_step" > "$out/titans.log" 2>&1 &
wait
tail -3 "$out/lr_sweep.log" "$out/titans.log"
