#!/usr/bin/env bash
# A search for a Titans MLP memory that trains, side by side on one GPU: 06's titans configuration
# (1000 steps of 16 x 512 WikiText-2 characters, 1 seed) with the memory's options changed.
# Usage on the GPU machine: scripts/reproduce/titans_mlp_search.sh REVISION OUTDIR [SECONDS] [ROUND]
# ROUND 1: retention toward zero or toward the initial weights, several ceilings of the write step,
#          and each token's inner gradient divided by its curvature bound (mem_normalize) at 1, 4 and
#          16 times 1/chunk (results/06_hope_titans_extra/titans_mlp_search_3beb2c0/).
# ROUND 2 (default): the normalised write at the ceilings 0.5 and 1 (1: the step undivided by the
#          chunk), at a chunk of 32, with longer retention, and retained toward zero.
# ROUND 3: the normalised write (ceiling 0.5) with the carried state capped at the chunk's end
#          (model.mem_state_max) at 0.25, 0.5, 1 and 2 times the initial weights' norm; the cap 0.5 at
#          the learning rate 1e-3, and with memory chunks of 4, 8, 16 and 32 (gradients taken at the
#          chunk's start, so a shorter chunk is closer to token-by-token writes; a chunk of 4 helped
#          a small CPU model: results/06_hope_titans_extra/titans_chunk_cpu_probe/).
# ROUND 4: round 3's cap 0.5 at memory chunks of 16, 128 and 256 (a chunk of 32 was worse than 64),
#          and the chunk 128 at the cap 0.25.
# ROUND 5: a chunk's summed write step (chunk x ceiling) at 2, the largest at which a chunk's write,
#          linearised, cannot grow the state when the tokens' curvatures align (gradient descent's
#          2/L): chunks 8 and 16 at ceilings 0.25 and 0.125, with the cap and (chunk 16) without it;
#          and at 4 (chunk 16), as the normaliser's bound is loose (tests/ops/test_mlp_memory_normalized.py:
#          with one key, 4 never raises the key's error in its draws, 8 does). A chunk of 16 at 0.5
#          (a sum of 8) had an exploding outer gradient.
# ROUND 6: round 5 at the chunk 4 (ceilings 0.5, with and without the cap, and 1): the slowest runs,
#          128 memory chunks per window.
# ROUND 7: truncated backprop through the memory's state (model.mem_grad_chunks k: a gradient crosses
#          at most k chunk writes; the forward values do not change) on round 3's cap 0.5: the chunk
#          16 (round 4's bigram-level run, whose outer gradient exploded) at k = 1 and 4, the chunk 64
#          (06's titans_cap) at k = 1 and 4, and the chunk 128 (round 4's best) at k = 1. A CPU probe
#          measured the backward through the state growing with the writes per window once trained,
#          and k = 1 or 4 bounding it (results/06_hope_titans_extra/titans_jacobian_cpu_probe/).
# writes OUTDIR/titans_mlp_step.tgz (the grid without checkpoints: runs.csv, summary.json, every
# run's folder) and OUTDIR/titans.log; the grid itself lives under WORK (default /tmp/o)
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
limit=${3:-480}
round=${4:-2}
work=${WORK:-/tmp/o}
mkdir -p "$out" "$work"
base="--set data.seq_len=512 --set data.batch_size=16 --set model.mem_chunk=64 --set steps=1000 --set warmup=100
  --set eval_every=0 --set model.kind=titans --set model.memory=mlp --set model.d_model=256 --set model.n_layers=4
  --set model.n_heads=4 --set model.d_ff=768 --set cms.levels.fast.lr=0.002"
norm="model.mem_retention=init model.mem_normalize=true"
case $round in
  1) configs=("zero_c64: model.mem_retention=zero" "init_c64: model.mem_retention=init"
              "init_c256: model.mem_retention=init model.mem_step_max=0.00390625"
              "init_c1024: model.mem_retention=init model.mem_step_max=0.0009765625"
              "init_x4: model.mem_retention=init model.mem_step_max=0.0625"
              "init_a995_c256: model.mem_retention=init model.mem_alpha0=0.995 model.mem_step_max=0.00390625"
              "norm_c64: $norm" "norm_x4: $norm model.mem_step_max=0.0625"
              "norm_x16: $norm model.mem_step_max=0.25") ;;
  2) configs=("norm_x32: $norm model.mem_step_max=0.5" "norm_x64: $norm model.mem_step_max=1.0"
              "norm_c32_x32: $norm model.mem_chunk=32 model.mem_step_max=1.0"
              "norm_x32_a995: $norm model.mem_step_max=0.5 model.mem_alpha0=0.995"
              "normzero_x32: model.mem_retention=zero model.mem_normalize=true model.mem_step_max=0.5"
              "normzero_x64: model.mem_retention=zero model.mem_normalize=true model.mem_step_max=1.0") ;;
  3) cap="$norm model.mem_step_max=0.5 model.mem_state_max"
     configs=("cap0.25: $cap=0.25" "cap0.5: $cap=0.5" "cap1: $cap=1.0" "cap2: $cap=2.0"
              "cap0.5_lr1e-3: $cap=0.5 cms.levels.fast.lr=0.001" "cap0.5_c16: $cap=0.5 model.mem_chunk=16"
              "cap0.5_c32: $cap=0.5 model.mem_chunk=32" "cap0.5_c8: $cap=0.5 model.mem_chunk=8"
              "cap0.5_c4: $cap=0.5 model.mem_chunk=4") ;;
  4) cap="$norm model.mem_step_max=0.5 model.mem_state_max"
     configs=("cap0.5_c16: $cap=0.5 model.mem_chunk=16" "cap0.5_c128: $cap=0.5 model.mem_chunk=128"
              "cap0.5_c256: $cap=0.5 model.mem_chunk=256" "cap0.25_c128: $cap=0.25 model.mem_chunk=128") ;;
  5) configs=("c8_s0.25: $norm model.mem_chunk=8 model.mem_step_max=0.25 model.mem_state_max=0.5"
              "c16_s0.125: $norm model.mem_chunk=16 model.mem_step_max=0.125 model.mem_state_max=0.5"
              "c16_s0.125_free: $norm model.mem_chunk=16 model.mem_step_max=0.125"
              "c16_s0.25: $norm model.mem_chunk=16 model.mem_step_max=0.25 model.mem_state_max=0.5") ;;
  6) configs=("c4_s0.5: $norm model.mem_chunk=4 model.mem_step_max=0.5 model.mem_state_max=0.5"
              "c4_s0.5_free: $norm model.mem_chunk=4 model.mem_step_max=0.5"
              "c4_s1: $norm model.mem_chunk=4 model.mem_step_max=1.0 model.mem_state_max=0.5") ;;
  7) cap="$norm model.mem_step_max=0.5 model.mem_state_max=0.5"
     configs=("c16_g1: $cap model.mem_chunk=16 model.mem_grad_chunks=1"
              "c16_g4: $cap model.mem_chunk=16 model.mem_grad_chunks=4"
              "c64_g1: $cap model.mem_chunk=64 model.mem_grad_chunks=1"
              "c64_g4: $cap model.mem_chunk=64 model.mem_grad_chunks=4"
              "c128_g1: $cap model.mem_chunk=128 model.mem_grad_chunks=1") ;;
  *) echo "titans_mlp_search.sh: ROUND must be 1 to 7, got $round" >&2; exit 2 ;;
esac
args=()
for c in "${configs[@]}"; do args+=(--config "$c"); done
# shellcheck disable=SC2086
timeout "$limit" python3 -m nlcore grid --name titans_mlp_step --preset seed --seeds 0 --jobs "${#configs[@]}" $base \
  "${args[@]}" --out "$work/titans_mlp_step" > "$out/titans.log" 2>&1
echo "titans_mlp_step: exit $?"
if [[ -d $work/titans_mlp_step ]]; then
  tar -C "$work" --exclude checkpoint.pt -czf "$out/titans_mlp_step.tgz" titans_mlp_step
fi
