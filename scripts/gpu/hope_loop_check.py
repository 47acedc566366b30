"""The fused HOPE loop's kernels (nlcore.ops.hope_loop) against its float64 PyTorch loops on CUDA,
error by output and chunk (a diagnostic for kernel changes; the tests assert the same bar).

    PYTHONPATH=$PWD python3 scripts/gpu/hope_loop_check.py [dh m rows prec warps_keys warps_state]
"""

from __future__ import annotations

import sys

import torch

from nlcore.ops import hope_loop
from tests.ops.test_hope_loop import inputs


def errors(got, ref) -> str:
    """Max |got − ref| / max(1, max |ref|) per chunk (dim 2)."""
    out = []
    for n in range(ref.shape[2]):
        a, b = got[:, :, n].double(), ref[:, :, n]
        out.append(f"{((a - b).abs().max() / b.abs().max().clamp_min(1)).item():.1e}")
    return " ".join(out)


def main(dh=16, m=2, rows=16, prec="tf32x3", wk=8, ws=4) -> None:
    hope_loop.ROWS, hope_loop.PRECISION, hope_loop.WARPS = rows, prec, (wk, ws, ws)
    x = inputs(B=2, H=2, N=3, C=64, dh=dh, m=m, device="cuda")
    want = hope_loop.forward_torch(*x)
    got = hope_loop.forward_triton(*(t.float() for t in x))
    label = f"dh={dh} m={m} rows={rows} prec={prec} warps={wk},{ws}"
    for name, a, b in zip(("Ys", "k", "G", "T"), got, want):
        print(f"CHECK {label} forward {name}: {errors(a, b)}", flush=True)
    g = torch.Generator().manual_seed(3)
    args = (*x[:6], *want, *(torch.randn(t.shape, generator=g, dtype=t.dtype).cuda() for t in want[:3]))
    got = hope_loop.backward_triton(*(t.float() for t in args))
    ref = hope_loop.backward_torch(*args)
    for name, a, b in zip(("x", "pK", "pc", "ke", "mix"), got, ref):
        print(f"CHECK {label} backward {name}: {errors(a, b)}", flush=True)
    for name, a, b in zip(("init", "Y"), got[5:], ref[5:]):
        print(f"CHECK {label} backward {name}: {((a.double() - b).abs().max() / b.abs().max()).item():.1e}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(*(int(v) for v in a[:3]), *(a[3:4]), *(int(v) for v in a[4:6]))
