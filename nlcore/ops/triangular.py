r"""Batched unit lower-triangular solves with their autograd: the one copy for every memory.

The chunk form of the delta rule (nlcore.ops.linear_memory, nlcore.ops.hope_memory) needs, per
chunk of C tokens, the solution of a unit lower-triangular system

    (I + L) G = R,    L (..., C, C) strictly lower,   R (..., C, n),   G (..., C, n),

and its backward  gR = (I + L)^{-T} gG,  gL = −tril(gR Gᵀ, −1)  (only L's strictly lower part is
used; its entries on and above the diagonal get no gradient). HOPE's system has L = pK ⊙ k kᵀ with
pK strictly lower: `solve_unit_lower_product` takes the two factors and returns their gradients.

Two ways to compute it, equal up to rounding (tests/ops/test_triangular.py):

* ``"solve"``: `torch.linalg.solve_triangular` forward and backward (cuBLAS's batched trsm on a
  GPU). Any device and dtype.
* ``"inverse"``: T = (I + L)^{-1} once, then G = T R and gR = Tᵀ gG, both batched matmuls. T comes
  from the custom op ``nlcore::unit_lower_inverse``: on a CUDA device with Triton installed, one
  Triton program per matrix runs the forward substitution  T_i = e_i − Σ_{j<i} L_ij T_j  over the
  rows (`triangular_kernels.py`: in 4 x 4 blocks for C = 64 or 128 in float32); elsewhere
  `solve_triangular(L, I)`.

``"auto"`` (the default, `PREFERRED`) takes ``"inverse"`` when the Triton kernel can run (a CUDA
tensor and Triton importable), else ``"solve"``: at the memories' shapes (C = 64) the blocked
kernel takes a fraction of a trsm call, and the CUDA-graphed HOPE step takes less time with the
inverse path than with trsm (results/bench/profiles/NOTE.md).
Forming T explicitly is accurate enough here: the systems come from unit keys and step sizes in
(0, 1), T agrees with trsm's solution to float32 rounding (the same NOTE), and the memories'
exactness tests run both paths.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import Tensor

METHODS = ("auto", "solve", "inverse")


_HAS_TRITON = importlib.util.find_spec("triton") is not None  # looked up, not imported


def triton_available() -> bool:
    """Whether Triton is installed: a global read, so torch.compile traces it without a break."""
    return _HAS_TRITON


@functools.lru_cache(maxsize=1)
def _inverse_kernels():
    """The Triton kernels (`triangular_kernels.py`, imported on first use: Triton is optional)."""
    import triton

    from nlcore.ops import triangular_kernels as tri_kernels

    return triton, tri_kernels.rows_kernel, tri_kernels.blocks_kernel


def triton_inverse(L: Tensor) -> Tensor:
    """(I + L)^{-1} by a Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1); L (..., C, C).
    C = 64 or 128 (float32): by 4 x 4 blocks; any other C: row by row."""
    triton, rows_kernel, blocks_kernel = _inverse_kernels()
    C = L.shape[-1]
    Lc = L.contiguous()
    n = Lc.numel() // (C * C) if C else 0
    T = torch.empty_like(Lc)  # either kernel writes every entry, zeros above the diagonal
    if not n:
        return T
    if C in (64, 128) and Lc.dtype == torch.float32:
        blocks_kernel[(n,)](Lc, T, C=C, B=C // 4, num_warps=4)
    else:
        rows_kernel[(n,)](Lc, T, C=C, BC=triton.next_power_of_2(C), num_warps=4 if C <= 64 else 8)
    return T


# a custom op (registered when this module is imported), so that torch.compile calls it as one
# opaque kernel instead of tracing into the Triton launch
@torch.library.custom_op("nlcore::unit_lower_inverse", mutates_args=())
def unit_lower_inverse(L: Tensor) -> Tensor:
    """(I + L)^{-1} for a batch of strictly lower L (..., C, C): the Triton kernel on CUDA when
    Triton is installed, else `solve_triangular(L, I)` (entries of L on and above the diagonal are
    ignored either way)."""
    if L.is_cuda and triton_available():
        return triton_inverse(L)
    eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand(L.shape)
    return torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True).contiguous()


@unit_lower_inverse.register_fake
def _(L: Tensor) -> Tensor:
    return torch.empty_like(L, memory_format=torch.contiguous_format)


# switch, read at every solve
PREFERRED = "auto"  # "auto", "solve" or "inverse" (see above); tests set "inverse" to run it on the CPU


def use_inverse(L: Tensor) -> bool:
    """Whether the solve of L runs the "inverse" path (see the module docstring and PREFERRED)."""
    if PREFERRED not in METHODS:
        raise ValueError(f"nlcore.ops.triangular.PREFERRED must be one of {METHODS}, got {PREFERRED!r}")
    return PREFERRED == "inverse" or (PREFERRED == "auto" and L.is_cuda and triton_available())


def solve_forward(L: Tensor, R: Tensor) -> tuple[Tensor, Tensor, bool]:
    """G = (I + L)^{-1} R and what the backward needs: (G, F, inverse) with F = T (inverse path)
    or L (solve path)."""
    if use_inverse(L):
        T = unit_lower_inverse(L)
        return T @ R, T, True
    # Gᵀ (I + L)ᵀ = Rᵀ: the solver returns its result column-major, so G comes back row-major
    return torch.linalg.solve_triangular(L.mT, R.mT, upper=True, left=False, unitriangular=True).mT, L, False


def rhs_grad(F: Tensor, gG: Tensor, inverse: bool) -> Tensor:
    """gR = (I + L)^{-T} gG from `solve_forward`'s F."""
    if inverse:
        return F.mT @ gG
    return torch.linalg.solve_triangular(F, gG.mT, upper=False, left=False, unitriangular=True).mT


class _Solve(torch.autograd.Function):
    """(I + L) G = R with L = a (b None: `solve_unit_lower`) or L = a ⊙ b (`solve_unit_lower_product`),
    each form with its own gL."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor | None, R: Tensor) -> Tensor:
        ctx.product = b is not None
        G, F, ctx.inverse = solve_forward(a if b is None else a * b, R)  # L = a, or L = a ⊙ b
        ctx.save_for_backward(F, G, *((a, b) if ctx.product else ()))
        return G

    @staticmethod
    def backward(ctx, gG: Tensor):
        F, G, *ab = ctx.saved_tensors
        gR = rhs_grad(F, gG, ctx.inverse)
        if not ctx.product:
            gL = -(gR @ G.mT).tril(-1) if ctx.needs_input_grad[0] else None
            return gL, None, gR
        a, b = ab
        C = F.shape[-1]
        gL = torch.baddbmm(F.reshape(-1, C, C), gR.reshape(-1, C, gR.shape[-1]), G.reshape(-1, C, G.shape[-1]).mT,
                           beta=0, alpha=-1).view(F.shape)  # −gR Gᵀ (a's zeros mask it: no tril)
        return (gL * b if ctx.needs_input_grad[0] else None), (gL * a if ctx.needs_input_grad[1] else None), gR


def solve_unit_lower(L: Tensor, R: Tensor) -> Tensor:
    """G = (I + L)^{-1} R for strictly lower L (..., C, C) and R (..., C, n) (leading dims equal);
    the gradient reaches L's strictly lower part only."""
    return _Solve.apply(L, None, R)


def solve_unit_lower_product(a: Tensor, b: Tensor, R: Tensor) -> Tensor:
    """G = (I + a ⊙ b)^{-1} R for strictly lower a (..., C, C), any b like a, R (..., C, n): HOPE's
    system, L = pK ⊙ k kᵀ. Its backward takes fewer ops than autograd through
    `solve_unit_lower(a * b, R)`: gL = −gR Gᵀ in one product with the sign folded in and no tril
    (a's zeros on and above the diagonal mask b's gradient there, and a's entries there are
    structural zeros of the caller), then a's gradient gL ⊙ b and b's gL ⊙ a."""
    return _Solve.apply(a, b, R)
