"""The chunk paths' unit lower-triangular solves on the GPU: cuBLAS trsm vs the Triton inverse
(nlcore.ops.triangular), forward and forward + backward, at the shapes of the 06 models.

    PYTHONPATH=$PWD python3 scripts/gpu/solve_probe.py

Shapes: Titans linear solves all chunks of a layer at once (16 rows x 4 heads x 8 chunks = 512
systems of 64 with 2 dk + dv = 192 right-hand sides); HOPE solves one chunk at a time (64 systems,
dv = 3 dh = 192). Median of 7 repeats of 50 calls each (nlcore.bench.floor.ms_per_call).
"""

from __future__ import annotations

import statistics

import torch

from nlcore.bench.floor import ms_per_call
from nlcore.ops import triangular as tri


def case(n: int, C: int, m: int, path: str, backward: bool) -> float:
    g = torch.Generator(device="cuda").manual_seed(0)
    L = (torch.randn(n, C, C, device="cuda", generator=g) * 0.1).tril(-1).requires_grad_(backward)
    R = torch.randn(n, C, m, device="cuda", generator=g).requires_grad_(backward)
    gG = torch.randn(n, C, m, device="cuda", generator=g)
    tri.PREFERRED = path

    def fn():
        G = tri.solve_unit_lower(L, R)
        if backward:
            torch.autograd.backward(G, gG)

    for _ in range(5):
        fn()
    return statistics.median(ms_per_call(fn, 50, "cuda") for _ in range(7)) * 1e3


def main() -> None:
    g = torch.Generator(device="cuda").manual_seed(1)
    L = (torch.randn(512, 64, 64, device="cuda", generator=g) * 0.1).tril(-1)
    T = tri.triton_inverse(L)
    eye = torch.eye(64, device="cuda")
    err = (T - torch.linalg.solve_triangular(eye + L, eye.expand_as(L), upper=False)).abs().max().item()
    print(f"triton inverse vs trsm, 512 x 64 x 64 float32: max abs diff {err:.2e}")
    for label, n in (("Titans linear (all chunks)", 512), ("HOPE (one chunk)", 64)):
        for bwd in (False, True):
            t = {p: case(n, 64, 192, p, bwd) for p in ("solve", "inverse")}
            print(f"{label:28s} {'fwd+bwd' if bwd else 'fwd    '}: trsm {t['solve']:7.1f} us, "
                  f"Triton inverse + matmuls {t['inverse']:7.1f} us, x{t['solve'] / t['inverse']:.2f}")
    from nlcore.ops.triangular import _inverse_kernels

    _, rows_kernel, _ = _inverse_kernels()
    for n in (512, 64):
        Lk = L[:n].contiguous()
        T = torch.empty_like(Lk)
        kernels = {"blocked (tri.triton_inverse)": lambda Lk=Lk: tri.triton_inverse(Lk),
                   "row by row": lambda n=n, Lk=Lk, T=T: rows_kernel[(n,)](Lk, T, C=64, BC=64, num_warps=4)}
        for name, fn in kernels.items():
            fn()
            ms = statistics.median(ms_per_call(fn, 50, "cuda") for _ in range(7))
            print(f"inverse kernel alone, {name}, {n} x 64 x 64: {ms * 1e3:.1f} us")


if __name__ == "__main__":
    main()
