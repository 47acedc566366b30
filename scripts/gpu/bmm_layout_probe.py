"""Which operand layouts make cuBLAS fast for the small float32 batched matmuls of HOPE's chunk loop.

    PYTHONPATH=$PWD python3 scripts/gpu/bmm_layout_probe.py [layouts] [triton]

For each product C = A B (batch 64 = 16 rows x 4 heads, the 06 shapes) every layout is timed:
A stored (M, K) or as the transposed view of a (K, M) tensor, B likewise, and the transposed
product Cᵀ = Bᵀ Aᵀ (same data, the result read through `.mT`). cuBLAS picks its kernel per layout
and shape; the kernel's name is printed beside its time: device time per call from torch.profiler
over 50 calls (the kernels alone: eager launches would hide the small ones), in µs.
`triton`: the same products by a plain Triton kernel per tile setting and dot precision (tf32x3,
ieee, tf32), with each result's error against float64.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

# (label, M, N, K) with batch 64: the loop's products (forward, then the backward's)
SHAPES = [
    ("M_k x, M_v x (x Fkvᵀ)", 64, 128, 64),
    ("k rowsᵀ (kY, kk), s=3", 64, 640, 64),
    ("k rowsᵀ (kY, kk), s=2", 64, 448, 64),
    ("T R (solve)", 64, 192, 64),
    ("Gᵀ kc (writes), s=3", 192, 192, 64),
    ("Gᵀ kc (writes), s=2", 192, 128, 64),
    ("g_out rows (bwd)", 64, 64, 640),
    ("g_outᵀ k (bwd)", 640, 64, 64),
    ("kc gGKᵀ (bwd)", 64, 192, 192),
    ("G gGK (bwd)", 64, 192, 192),
]


def operand(n: int, r: int, c: int, transposed: bool) -> torch.Tensor:
    """An (n, r, c) operand, stored row-major or as the transposed view of an (n, c, r) tensor."""
    if transposed:
        return torch.randn(n, c, r, device="cuda").mT
    return torch.randn(n, r, c, device="cuda")


def kernel_time(fn, calls: int = 50) -> tuple[float, str]:
    """Mean device time per call (µs, the kernels alone, not the launches) and the first kernel's name."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in ev) / calls, (ev[0].name[:60] if ev else "?")


def layouts() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 64
    for label, M, N, K in SHAPES:
        print(f"\n{label}: batch {n}, M={M} N={N} K={K}", flush=True)
        rows = []
        for ta in (False, True):
            for tb in (False, True):
                A, B = operand(n, M, K, ta), operand(n, K, N, tb)
                for flip in (False, True):
                    fn = (lambda A=A, B=B: torch.bmm(B.mT, A.mT)) if flip else (lambda A=A, B=B: torch.bmm(A, B))
                    for _ in range(5):
                        fn()
                    us, name = kernel_time(fn)
                    tag = f"A{'ᵀ' if ta else ' '} B{'ᵀ' if tb else ' '} {'(Bᵀ Aᵀ)ᵀ' if flip else 'A B    '}"
                    rows.append((us, tag, name))
        for us, tag, name in sorted(rows):
            print(f"  {us:7.2f} us  {tag}  {name}", flush=True)


def _triton_bmm():
    """A plain Triton batched matmul (one program per (BM, BN) tile of one batch entry, operands read
    through their strides), with tl.dot's input precision and the tiles as parameters: probed here
    against cuBLAS, not used by nlcore (it was not faster enough to keep, see NOTE.md)."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(a, b, c, M, N, K, sab, sam, sak, sbb, sbk, sbn, scb, scm, scn,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
        tile, bat = tl.program_id(0), tl.program_id(1)
        nn = tl.cdiv(N, BN)
        rm = (tile // nn) * BM + tl.arange(0, BM)
        rn = (tile % nn) * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        a += bat.to(tl.int64) * sab
        b += bat.to(tl.int64) * sbb
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            x = tl.load(a + rm[:, None] * sam + kk[None, :] * sak, mask=(rm[:, None] < M) & (kk[None, :] < K),
                        other=0.0)
            y = tl.load(b + kk[:, None] * sbk + rn[None, :] * sbn, mask=(kk[:, None] < K) & (rn[None, :] < N),
                        other=0.0)
            acc += tl.dot(x, y, input_precision=PREC)
        tl.store(c + bat.to(tl.int64) * scb + rm[:, None] * scm + rn[None, :] * scn, acc,
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    def bmm(A, B, prec: str, tiles: tuple[int, int, int, int]):
        n, M, K = A.shape
        N = B.shape[-1]
        C = A.new_empty(n, M, N)
        BM, BN, BK, warps = tiles
        kernel[(triton.cdiv(M, BM) * triton.cdiv(N, BN), n)](A, B, C, M, N, K, *A.stride(), *B.stride(), *C.stride(),
                                                             BM=BM, BN=BN, BK=BK, PREC=prec, num_warps=warps)
        return C
    return bmm


def _tiles_one(label: str, M: int, N: int, K: int, n: int = 64) -> None:
    bmm = _triton_bmm()
    A, B = torch.randn(n, M, K, device="cuda"), torch.randn(n, K, N, device="cuda")
    ref = torch.bmm(A.double(), B.double())
    print(f"\n{label}: batch {n}, M={M} N={N} K={K}", flush=True)

    def err(C):
        return ((C.double() - ref).abs().max() / ref.abs().max()).item()

    us, name = kernel_time(lambda: torch.bmm(A, B))
    print(f"  {us:7.2f} us  cuBLAS float32             err {err(torch.bmm(A, B)):.1e}  {name}", flush=True)
    for prec in ("tf32x3", "ieee", "tf32"):
        for tiles in ((64, 64, 32, 4), (32, 64, 32, 4), (64, 32, 32, 4), (32, 32, 32, 2), (64, 64, 16, 4),
                      (32, 32, 64, 4), (64, 64, 64, 4), (128, 64, 32, 8)):
            if prec != "tf32x3" and tiles != (64, 64, 32, 4):
                continue
            us, _ = kernel_time(lambda p=prec, t=tiles: bmm(A, B, p, t))
            print(f"  {us:7.2f} us  triton {prec:6s} {str(tiles):16s} err {err(bmm(A, B, prec, tiles)):.1e}",
                  flush=True)


def triton_tiles() -> None:
    """cuBLAS (exact float32) against a Triton kernel (`_triton_bmm`: tf32x3, and ieee, tf32) per
    tile setting, with each result's largest error relative to the float64 product's largest entry."""
    torch.backends.cuda.matmul.allow_tf32 = False
    for label, M, N, K in SHAPES:
        _tiles_one(label, M, N, K)


if __name__ == "__main__":
    import sys

    for part in sys.argv[1:] or ["layouts"]:
        {"layouts": layouts, "triton": triton_tiles}[part]()
