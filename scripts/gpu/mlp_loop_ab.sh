#!/usr/bin/env bash
# Issue 9: the MLP memory's loop over chunks as mlp_loop's Triton op against the plain autograd loop,
# on one GPU: the CUDA tests, the one-layer probe (scripts/gpu/mlp_probe.py) with each loop, then the
# Transformer and Titans (MLP memory) step times with each loop.
# Usage: scripts/gpu/mlp_loop_ab.sh REVISION DIRTY(0|1) OUTDIR
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=$2 PYTHONUNBUFFERED=1
out=$3
mkdir -p "$out"
python3 -m pytest -q -p no:cacheprovider tests/test_memory_mlp_loop.py tests/test_memory_mlp.py -k "not interpreter" 2>&1 | tail -5 > "$out/tests.log"
python3 scripts/gpu/mlp_loop_sweep.py > "$out/sweep.log" 2>&1
for v in autograd:ieee op:ieee op:tf32x3; do
  LOOP=${v%%:*} PREC=${v##*:} PROFILE=${PROFILE:-} ROWS=16 python3 scripts/gpu/mlp_probe.py "$v" 2>&1 | grep -v -i warn
done > "$out/probe.log"
bench="bench --warmup 12 --windows 4 --steps 10 --baseline transformer --configs transformer titans"
python3 -m nlcore $bench --out "$out/titans_op.json" > "$out/bench_op.log" 2>&1
python3 -c 'import sys; from nlcore.memory import mlp; mlp.LOOP = "autograd"  # the loop without the op
from nlcore.cli import main; sys.exit(main(sys.argv[1:]))' $bench --out "$out/titans_autograd.json" > "$out/bench_autograd.log" 2>&1
