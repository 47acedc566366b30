#!/usr/bin/env bash
# Round 3 of the tuning behind the `seed` preset's default (chunks fixed at 1/16/256): tighter
# per-level clipping combined with the best round-2 policies. One seed (2), runs share the GPU.
set -euo pipefail
OUT=${1:?output dir}
L5="cms.levels.fast.lr=5e-3 cms.levels.medium.lr=5e-3 cms.levels.slow.lr=5e-3 min_lr_ratio=0.0"
C25="$L5 cms.grad_clip=0.25"
SGD="cms.levels.medium.optimizer=sgd cms.levels.slow.optimizer=sgd cms.levels.medium.momentum=0.9 cms.levels.slow.momentum=0.9 cms.aggregation=sum"
python3 -m nlcore grid --name seed_tuning3 --preset seed --seeds 2 --jobs 12 --out "$OUT" \
  --config "clip0.25: $C25" \
  --config "clip0.1: $L5 cms.grad_clip=0.1" \
  --config "clip0.25_sgd0.5: $C25 $SGD cms.levels.medium.lr=0.5 cms.levels.slow.lr=0.5" \
  --config "clip0.25_sgd2: $C25 $SGD cms.levels.medium.lr=2.0 cms.levels.slow.lr=2.0" \
  --config "sgd2: $L5 $SGD cms.levels.medium.lr=2.0 cms.levels.slow.lr=2.0" \
  --config "clip0.25_med1e-2: $C25 cms.levels.medium.lr=1e-2" \
  --config "clip0.25_fast8e-3: $C25 cms.levels.fast.lr=8e-3" \
  --config "clip0.25_ffnbeta1_0: $C25 cms.levels.medium.beta1=0.0 cms.levels.slow.beta1=0.0" \
  --config "clip0.25_warm200: $C25 warmup=200" \
  --config "clip0.25_lr3e-3: cms.grad_clip=0.25 min_lr_ratio=0.0" \
  --config "clip0.25_chunks_1_2_4: $C25 cms.levels.medium.chunk=2 cms.levels.slow.chunk=4" \
  --config "clip0.25_cms_off: $C25 cms.levels.medium.chunk=1 cms.levels.slow.chunk=1"
