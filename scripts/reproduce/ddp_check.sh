#!/usr/bin/env bash
# Data-parallel training (nlcore.accel.ddp) on 1 vs 2 GPUs, seed model, fast_path auto (graph).
#  1. Throughput (chars/s) at global batches 512, 1024, 2048, 4096 x 256 characters: 1 GPU alone,
#     then 2 GPUs under torchrun (B/2 rows each). Speedup = 2-GPU / 1-GPU chars/s at the same
#     global batch, reported at the batch that saturates one GPU (the smallest whose 1-GPU chars/s
#     is within 10 % of the best measured; target >= 1.8x), plus every batch and the weak-scaling
#     efficiency (same rows per GPU); the 2-GPU runs' graphed/eager step counts are kept.
#  2. Correctness: 50 steps at global batch 64 with chunks 1/4/16 (every level updates): per-step
#     losses, every update's gradient norm and the valid bpc (20 windows) of 1 vs 2 GPUs, for bf16
#     (tolerance 2e-2 relative), fp32 (2e-3), bf16 + surprise, fp32 + delta-rule levels.
# Writes the JSON report (both parts in full) to $1 and prints a table; about 2 minutes, < 4.
# Usage on the 2-GPU machine:  scripts/reproduce/ddp_check.sh OUT.json
# CPU self-test of this script (gloo, smoke preset):  NLCORE_DDP_CHECK_SMOKE=1 scripts/reproduce/ddp_check.sh OUT.json
set -euo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1  # NVLink multicast stays off on these machines
export PYTHONUNBUFFERED=1 NLCORE_DIST_TIMEOUT_S=${NLCORE_DIST_TIMEOUT_S:-90}
out=$(realpath -m "${1:?usage: scripts/reproduce/ddp_check.sh OUT.json}")
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
args=()
if [[ "${NLCORE_DDP_CHECK_SMOKE:-0}" == 1 ]]; then
  args=(--smoke --batches 8 16 --loss-batch 8 --loss-steps 16 --warmup 2 --windows 2 --steps 3 --eval-windows 3)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
echo "== 1 process (1 GPU)"
timeout 100 "$PY" -m nlcore.bench.ddp_check check --out "$tmp/one.json" ${args[@]+"${args[@]}"} || echo "!! the 1-GPU part failed (rc $?)"
echo "== 2 processes under torchrun (2 GPUs)"
timeout 125 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 \
  -m nlcore.bench.ddp_check check --out "$tmp/two.json" ${args[@]+"${args[@]}"} || echo "!! the 2-GPU part failed (rc $?)"
echo "== report -> $out"
"$PY" -m nlcore.bench.ddp_check report "$out" "$tmp/one.json" "$tmp/two.json"
rm -rf "$tmp"
