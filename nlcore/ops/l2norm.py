r"""L2 normalisation of rows with its hand-written backward: the one PyTorch copy in nlcore.

Along the last dim, with n = ‖x‖ and r = max(n, eps):

    y = x / r                                     (a row with n < eps is scaled by 1/eps: 0 stays 0)
    ∂L/∂x = (g − y ⟨g, y⟩) / r   where n >= eps,    g / r   where n < eps (the clamp passes no
                                                      gradient through the norm)

for an upstream gradient g = ∂L/∂y. `l2norm` is the definition, differentiated by autograd
(F.normalize's values, and its gradients to rounding); `l2norm_with_backward` computes the same with the
backward above, a few ops instead of autograd's decomposition of the norm, for the memories' loops
over chunks; `l2norm_parts` and `l2norm_backward` are its two halves, for hand-written backwards
that recompute the forward. The Triton kernels of nlcore.ops.hope_memory compute the same in
registers (`kernels._unit`, `kernels._unit_grad`, with EPS as a literal).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-12  # the floor on ‖x‖ (F.normalize's default eps), for every memory and nlcore.delta


def l2norm(x: Tensor, eps: float = EPS) -> Tensor:
    """x / max(‖x‖, eps) along the last dim, through autograd (the definition)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def l2norm_parts(x: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor, Tensor]:
    """The forward and what the backward needs: (y, n, r) with n = ‖x‖, r = max(n, eps), y = x / r,
    n and r (..., 1)."""
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    r = n.clamp_min(eps)
    return x / r, n, r


def l2norm_backward(g: Tensor, y: Tensor, n: Tensor, r: Tensor, eps: float = EPS, *, dot: str = "sum",
                    addcmul: bool = False) -> Tensor:
    """∂L/∂x = (g − y ⟨g, y⟩) / r from `l2norm_parts`' (y, n, r) and g = ∂L/∂y (no ⟨g, y⟩ term where
    n < eps). dot="sum": ⟨g, y⟩ as a product and a sum, which inductor fuses (compiled, the batched
    product runs as a slow gemv kernel: results/bench/profiles/NOTE.md); "matmul": as a batched
    (1 x d) @ (d x 1) product, one op in eager mode. addcmul: g − y ⟨g, y⟩ as one addcmul (one op,
    whose rounding may differ in the last bit from the product and subtraction of addcmul=False).
    Each caller keeps the arithmetic it was checked with."""
    if dot == "sum":
        d = (g * y).sum(-1, keepdim=True)  # ⟨g, y⟩: (..., 1)
    elif dot == "matmul":
        d = (g.unsqueeze(-2) @ y.unsqueeze(-1)).squeeze(-1)
    else:
        raise ValueError(f"dot must be 'sum' or 'matmul', got {dot!r}")
    d = d.masked_fill(n < eps, 0.0)  # the norm is clamped there: no gradient through it
    if addcmul:
        return torch.addcmul(g, y, d, value=-1.0) / r
    return (g - y * d) / r


class _L2Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dot: str) -> Tensor:
        y, n, r = l2norm_parts(x)
        ctx.dot = dot
        ctx.save_for_backward(y, n, r)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        y, n, r = ctx.saved_tensors
        return l2norm_backward(g, y, n, r, dot=ctx.dot, addcmul=True), None


def l2norm_with_backward(x: Tensor, dot: str = "matmul") -> Tensor:
    """`l2norm(x)` (EPS) with the hand-written backward; `dot` arranges its ⟨g, y⟩ (`l2norm_backward`)."""
    return _L2Norm.apply(x, dot)
