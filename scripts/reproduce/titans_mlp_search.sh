#!/usr/bin/env bash
# A search for a Titans MLP memory that trains, side by side on one GPU: 06's titans configuration
# (1000 steps of 16 x 512 WikiText-2 characters, 1 seed) with its memory retained toward zero or
# toward its initial weights, several ceilings of the write step, and each token's inner gradient
# divided by its curvature bound (mem_normalize) at 1, 4 and 16 times 1/chunk.
# Usage on the GPU machine: scripts/reproduce/titans_mlp_search.sh REVISION OUTDIR [SECONDS]
# writes OUTDIR/titans_mlp_step/ (a grid: runs.csv, summary.json) and OUTDIR/titans.log
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-480}
mkdir -p "$out"
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
  --out "$out/titans_mlp_step" > "$out/titans.log" 2>&1
echo "titans_mlp_step: exit $?"
