#!/usr/bin/env bash
# Issue 9: the MLP memory's loop over chunks as mlp_loop's Triton op against the plain autograd loop,
# on one GPU. Phases: tests (the CUDA tests); sweep (scripts/gpu/mlp_loop_sweep.py: the kernels alone
# over their settings); tail (scripts/gpu/mlp_tail_sweep.py: bwd_tail's settings); probe (one layer,
# scripts/gpu/mlp_probe.py, each of VARIANTS, LOOP:PREC words); bench (the Transformer and Titans (MLP
# memory) step times with the op, in the kernel settings PREC, BLOCK, ROWS_PER_TILE, WARPS, TAIL of the
# environment (mlp_loop's defaults where unset), and, unless AUTOGRAD=0, with the autograd loop).
# Usage: scripts/gpu/mlp_loop_ab.sh REVISION DIRTY(0|1) OUTDIR PHASE...
set -uo pipefail
export NLCORE_GIT_REVISION=$1 NLCORE_GIT_DIRTY=$2 PYTHONUNBUFFERED=1
out=$3
shift 3
mkdir -p "$out"
settings='import os, sys
from nlcore.ops import mlp_memory as mlp, mlp_loop
mlp.LOOP = os.environ.get("LOOP", mlp.LOOP)
mlp_loop.PRECISION = os.environ.get("PREC", mlp_loop.PRECISION)
mlp_loop.BLOCK = int(os.environ.get("BLOCK", mlp_loop.BLOCK))
mlp_loop.ROWS = int(os.environ.get("ROWS_PER_TILE", mlp_loop.ROWS))
mlp_loop.WARPS = int(os.environ.get("WARPS", mlp_loop.WARPS))
if os.environ.get("TAIL"):
    mlp_loop.TAIL = tuple(int(v) for v in os.environ["TAIL"].split())
from nlcore.cli import main
sys.exit(main(sys.argv[1:]))'
for phase in "$@"; do
  case $phase in
    tests)
      timeout 240 python3 -m pytest -q -p no:cacheprovider tests/ops/test_mlp_loop.py tests/ops/test_mlp_memory.py 2>&1 \
        | tail -5 > "$out/tests.log" ;;
    tail)  # bwd_tail's settings; the best (tf32x3) goes to the later phases as TAIL="units warps"
      timeout 200 python3 scripts/gpu/mlp_tail_sweep.py > "$out/tail.log" 2>&1
      export TAIL="$(grep '^BEST' "$out/tail.log" | cut -d' ' -f2-)" ;;
    sweep)
      timeout 300 python3 scripts/gpu/mlp_loop_sweep.py > "$out/sweep.log" 2>&1 ;;
    probe)
      for v in ${VARIANTS:-autograd:ieee op:ieee op:tf32x3}; do
        LOOP=${v%%:*} PREC=${v##*:} PROFILE=${PROFILE:-} ROWS=16 timeout 100 python3 scripts/gpu/mlp_probe.py "$v" 2>&1 \
          | grep -v -i warn
      done > "$out/probe.log" ;;
    bench)
      bench="bench --warmup 12 --windows 4 --steps 10 --baseline transformer --configs transformer titans"
      timeout 170 python3 -c "$settings" $bench --out "$out/titans_op.json" > "$out/bench_op.log" 2>&1
      [ "${AUTOGRAD:-1}" = 1 ] && LOOP=autograd timeout 170 python3 -c "$settings" $bench \
        --out "$out/titans_autograd.json" > "$out/bench_autograd.log" 2>&1 ;;
  esac
done
