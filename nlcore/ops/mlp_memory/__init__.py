r"""Titans' deep memory: a 2-layer residual MLP written by chunk-wise mini-batch gradient descent
(`naive.py` defines it token by token, `chunk.py` computes the same chunk-parallel, `loop.py`
holds its loop over chunks as one op, `kernels.py` that op's Triton kernels); `mlp_memory` runs
either path.

Dtypes: float32/float64 inputs are computed in their promoted dtype. If that dtype is narrower
(bf16/half), the work is done in float32 and y is cast back to q's dtype, the weights and momenta
to W1's dtype (carry float32 states yourself to avoid rounding them between calls).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlcore.ops.mlp_memory.chunk import chunk_path
from nlcore.ops.mlp_memory.naive import token_path

__all__ = ["IMPLS", "mlp_memory"]

IMPLS = ("chunk", "token")


def _check(q, k, v, eta, alpha, beta, W1, W2, S1, S2, chunk, impl, grad_chunks=0) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if isinstance(grad_chunks, bool) or not isinstance(grad_chunks, int) or grad_chunks < 0:
        raise ValueError(f"grad_chunks must be an int >= 0 (0: the full graph), got {grad_chunks!r}")
    named = dict(q=q, k=k, v=v, eta=eta, alpha=alpha, beta=beta, W1=W1, W2=W2, S1=S1, S2=S2)
    for name, x in named.items():
        if x is not None and not (isinstance(x, Tensor) and x.is_floating_point()):
            raise ValueError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                             f"{'' if not isinstance(x, Tensor) else ' of ' + str(x.dtype)}")
    if q.dim() != 4:
        raise ValueError(f"q must be (B, H, T, d), got shape {tuple(q.shape)}")
    B, H, T, d = q.shape
    if W1.dim() != 4 or W1.shape[:2] != (B, H) or W1.shape[-1] != d:
        raise ValueError(f"W1 must be (B, H, h_dim, d) = ({B}, {H}, h_dim, {d}), "
                         f"got {tuple(W1.shape)}")
    hd = W1.shape[2]
    want = {"k": (B, H, T, d), "v": (B, H, T, d), "eta": (B, H, T), "alpha": (B, H, T),
            "beta": (B, H, T), "W2": (B, H, d, hd), "S1": (B, H, hd, d), "S2": (B, H, d, hd)}
    for name, shape in want.items():
        x = named[name]
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")


def mlp_memory(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor, beta: Tensor | None,
               W1: Tensor, W2: Tensor, S1: Tensor | None = None, S2: Tensor | None = None, *,
               chunk: int = 64, impl: str = "chunk", anchor: tuple[Tensor, Tensor] | None = None,
               normalize: bool = False, bound: Tensor | None = None, grad_chunks: int = 0):
    """Write (k, v) into the per-(row, head) MLP memory chunk by chunk and read it at q.

    q, k, v: (B, H, T, d); eta (step), alpha (retention), beta (momentum decay or None): (B, H, T);
    W1: (B, H, h_dim, d), W2: (B, H, d, h_dim); S1, S2: momenta like W1, W2 (zeros when None;
    ignored when beta is None). Returns (y (B, H, T, d), (W1_T, W2_T), (S1_T, S2_T) or None).
    anchor=(W1a, W2a) (broadcastable to W1, W2): retention pulls θ toward the anchor instead of
    zero, θ_t = α_t θ_{t-1} + (1 − α_t) θ_a + S_t (see naive.py). impl="token" is the
    reference, impl="chunk" the chunk-parallel path that equals it. normalize: each token's gradient
    divided by a bound on its curvature (`naive.factors`). bound (broadcastable to (B, H)) or None:
    at every chunk's end the memory's distance from its anchor, |θ − θ_a| over W1 and W2, is scaled
    down to at most `bound`, its momenta by the same factor (`naive.cap_factor`). grad_chunks k > 0:
    truncated backprop through the memory's state, the write of every k-th chunk starting from the
    state detached, so a gradient crosses at most k writes (`naive.token_path`); the values are those
    of the full graph (0).
    """
    _check(q, k, v, eta, alpha, beta, W1, W2, S1, S2, chunk, impl, grad_chunks)
    if beta is None:
        S1 = S2 = None
    out_dtype, state_dtype = q.dtype, W1.dtype  # each output keeps its input's dtype
    dt = out_dtype
    for x in (k, v, eta, alpha, beta, W1, W2, S1, S2):
        dt = dt if x is None else torch.promote_types(dt, x.dtype)
    if dt not in (torch.float32, torch.float64):
        dt = torch.float32  # bf16/half: compute in float32, cast back at the end
    q, k, v, eta, alpha, W1, W2 = (x.to(dt) for x in (q, k, v, eta, alpha, W1, W2))
    if beta is not None:
        beta = beta.to(dt)
        S1 = torch.zeros_like(W1) if S1 is None else S1.to(dt)
        S2 = torch.zeros_like(W2) if S2 is None else S2.to(dt)
    if anchor is not None:
        anchor = (anchor[0].to(dt), anchor[1].to(dt))
    path = chunk_path if impl == "chunk" else token_path
    if bound is not None:
        bound = torch.as_tensor(bound, dtype=dt, device=q.device)
    y, W1, W2, S1, S2 = path(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor, chunk, normalize, bound,
                             grad_chunks)
    momenta = None if beta is None else (S1.to(state_dtype), S2.to(state_dtype))
    return y.to(out_dtype), (W1.to(state_dtype), W2.to(state_dtype)), momenta
