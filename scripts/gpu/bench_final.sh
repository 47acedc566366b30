#!/usr/bin/env bash
# The committed speed measurements (results/bench/): the named configurations of the seed preset
# (fast path on and off, surprise, delta rule, a plain LSTM LM) and the scaling sweeps.
# Usage on the GPU machine: scripts/gpu/bench_final.sh REVISION OUTDIR
set -euo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=0 PYTHONUNBUFFERED=1
out=$2
python3 -m nlcore bench --warmup 60 --windows 12 --out "$out/seed.json"
python3 -m nlcore bench --warmup 60 --windows 8 --scaling --out "$out/scaling.json"
