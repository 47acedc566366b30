"""Times mlp_loop's Triton kernels alone at the 06 Titans layer shape over their launch settings
(diagnostics for issue 9's throughput line, not a result).

    PYTHONPATH=$PWD python3 scripts/gpu/mlp_loop_sweep.py

B 16, H 4, N 8 chunks of C 64, d 64, h 128, m 2 (momentum), with gates at the scale of training
(retention ~0.98, momentum decay ~0.9, write weights ~0.01). For each (PRECISION, BLOCK, ROWS,
WARPS): the median of 20 runs of the forward loop and of the backward loop (2 launches per chunk
each), and their largest errors against the float64 PyTorch loops relative to the largest entry.
"""

from __future__ import annotations

import itertools
import statistics

import torch

from nlcore.ops import mlp_loop


def timed(fn, reps: int = 20) -> float:
    """Median ms of `fn` replayed as a CUDA graph (no host launch time in it)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    ms = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        ms.append(start.elapsed_time(end))
    return statistics.median(ms)


def rel(got, want) -> float:
    return max(((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(got, want))


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    from tests.ops.test_mlp_loop import inputs

    B, H, N, C, d, h, m = 16, 4, 8, 64, 64, 128, 2
    x = inputs(B=B, H=H, N=N, C=C, d=d, h=h, m=m, device="cuda")  # float64
    x[4] = 0.01 * x[4].abs()  # write weights u = −w (K[C, s] η_s, Db[C, s] η_s ~ 0.01)
    x[5] = torch.tensor([[0.98, 0.9], [0.0, 0.9]], dtype=x[5].dtype, device="cuda").expand(B, H, N, m, m)
    want_f = mlp_loop.forward_torch(*x)
    S1, S2, e, a, delta = want_f
    gs = [torch.randn_like(t) for t in want_f]
    args = (S1, S2, x[2], x[4], x[5], x[6], x[7], e, a, delta, *gs)
    want_b = mlp_loop.backward_torch(*args)[:6]
    x = [t if t is None else t.float() for t in x]
    args = [t if t is None else t.float() for t in args]
    t_f = timed(lambda: mlp_loop.forward_torch(*x))
    t_b = timed(lambda: mlp_loop.backward_torch(*args))
    print(f"torch loops (eager, float32): forward {t_f:.3f} ms, backward {t_b:.3f} ms", flush=True)
    for prec, block, rows, warps in itertools.product(("tf32x3", "ieee"), (16,), (16, 32, 64), (2, 4, 8)):
        mlp_loop.PRECISION, mlp_loop.BLOCK, mlp_loop.ROWS, mlp_loop.WARPS = prec, block, rows, warps
        label = f"{prec:7s} block {block:3d} rows {rows:3d} warps {warps}"
        try:
            ef = rel(mlp_loop.forward_triton(*x), want_f)
            eb = rel(mlp_loop.backward_triton(*args)[:6], want_b)
            tf, tb = timed(lambda: mlp_loop.forward_triton(*x)), timed(lambda: mlp_loop.backward_triton(*args))
            print(f"SWEEP {label}: forward {tf:.3f} ms, backward {tb:.3f} ms (errors {ef:.1e}, {eb:.1e})", flush=True)
        except Exception as err:  # noqa: BLE001  a setting the compiler refuses: report it and go on
            print(f"SWEEP {label}: failed: {type(err).__name__}: {err}"[:300], flush=True)


if __name__ == "__main__":
    main()
