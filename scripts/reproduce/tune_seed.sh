#!/usr/bin/env bash
# Tuning sweep behind the `seed` preset's default CMS policy (issue: CMS engine).
# One seed per configuration, 2000 steps x 32 x 256 chars of WikiText-2; runs share the GPU.
set -euo pipefail
OUT=${1:?output dir}
L5="cms.levels.fast.lr=5e-3 cms.levels.medium.lr=5e-3 cms.levels.slow.lr=5e-3 min_lr_ratio=0.0"
SGD="cms.levels.medium.optimizer=sgd cms.levels.slow.optimizer=sgd cms.levels.medium.momentum=0.9 cms.levels.slow.momentum=0.9 cms.aggregation=sum"
python3 -m nlcore grid --name seed_tuning2 --preset seed --seeds 1 --jobs 12 --out "$OUT" \
  --config "lr5e-3_min0: $L5" \
  --config "med1e-2: $L5 cms.levels.medium.lr=1e-2" \
  --config "sgd_ffn_0.05: $L5 $SGD cms.levels.medium.lr=0.05 cms.levels.slow.lr=0.05" \
  --config "sgd_ffn_0.5: $L5 $SGD cms.levels.medium.lr=0.5 cms.levels.slow.lr=0.5" \
  --config "chunks_1_4_16: $L5 cms.levels.medium.chunk=4 cms.levels.slow.chunk=16" \
  --config "chunks_1_2_4: $L5 cms.levels.medium.chunk=2 cms.levels.slow.chunk=4" \
  --config "warm200: $L5 warmup=200" \
  --config "fast8e-3: $L5 cms.levels.fast.lr=8e-3" \
  --config "beta2_099: $L5 cms.levels.fast.beta2=0.99 cms.levels.medium.beta2=0.99 cms.levels.slow.beta2=0.99" \
  --config "cms_off_lr5e-3: $L5 cms.levels.medium.chunk=1 cms.levels.slow.chunk=1" \
  --config "clip0.25: $L5 cms.grad_clip=0.25" \
  --config "seq512_b16: $L5 data.seq_len=512 data.batch_size=16"
