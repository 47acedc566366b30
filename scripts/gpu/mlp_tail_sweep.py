"""Times mlp_loop's backward alone (CUDA graph) at the 06 Titans layer shape over the settings of its
last kernel, `bwd_tail` (diagnostics for issue 9's throughput line, not a result).

    PYTHONPATH=$PWD python3 scripts/gpu/mlp_tail_sweep.py

Prints one line per (units, warps, precision) and last `BEST units warps` (tf32x3) for a shell to use.
"""

from __future__ import annotations

import itertools

import torch

from nlcore.ops import mlp_loop
from scripts.gpu.mlp_loop_sweep import timed


def main() -> None:
    from tests.ops.test_mlp_loop import inputs

    B, H, N, C, d, h, m = 16, 4, 8, 64, 64, 128, 2
    x = [t if t is None else t.float() for t in inputs(B=B, H=H, N=N, C=C, d=d, h=h, m=m, device="cuda")]
    x[4] = 0.01 * x[4].abs()
    x[5] = torch.tensor([[0.98, 0.9], [0.0, 0.9]], device="cuda").expand(B, H, N, m, m)
    S1, S2, e, a, delta = out = mlp_loop.forward_triton(*x)
    args = (S1, S2, x[2], x[4], x[5], x[6], x[7], e, a, delta, *[torch.randn_like(t) for t in out])
    best = None
    for prec, units, warps in itertools.product(("tf32x3", "ieee"), (16, 32, 64), (1, 2, 4, 8)):
        mlp_loop.PRECISION, mlp_loop.TAIL = prec, (units, warps)
        try:
            ms = timed(lambda: mlp_loop.backward_triton(*args))
        except Exception as err:  # noqa: BLE001  a setting the compiler refuses: report it and go on
            print(f"TAIL {prec:7s} units {units:3d} warps {warps}: failed {type(err).__name__}"[:200], flush=True)
            continue
        print(f"TAIL {prec:7s} units {units:3d} warps {warps}: backward {ms:.3f} ms", flush=True)
        if prec == "tf32x3" and (best is None or ms < best[0]):
            best = (ms, units, warps)
    mlp_loop.PRECISION = "tf32x3"
    print(f"BEST {best[1]} {best[2]}", flush=True)


if __name__ == "__main__":
    main()
