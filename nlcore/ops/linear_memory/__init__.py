r"""Titans' linear memory: the gated delta rule with momentum (`naive.py` defines it token by
token, `chunk.py` computes the same chunk-parallel); `linear_memory` runs either.

Dtypes: the computation runs in the promoted dtype of the inputs, raised to float32 if that is
float16/bfloat16, with autocast disabled inside (the triangular solve needs float32). y comes
back in q's dtype, M_T and S_T in M0's (S0's) dtype. In float32 the chunk path's dL/dβ loses
accuracy roughly as eps/β when β → 0 (the log-space gate products of nlcore.ops.gates); other
gradients and the forward stay within ~1e-6 of the token path relative to their scale.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor

from nlcore.ops.linear_memory.chunk import chunk_path, chunk_read, chunk_step, chunk_write
from nlcore.ops.linear_memory.naive import token_path

__all__ = ["IMPLS", "chunk_read", "chunk_step", "chunk_write", "linear_memory", "linear_memory_chunked",
           "linear_memory_reference"]

IMPLS = ("chunk", "token")


def _check(q, k, v, eta, alpha, beta, M0, S0, chunk, impl) -> None:
    """Raise ValueError naming the first inconsistent argument."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if q.dim() != 4:
        raise ValueError(f"q must be (B, H, T, dk), got shape {tuple(q.shape)}")
    B, H, T, dk = q.shape
    if tuple(k.shape) != (B, H, T, dk):
        raise ValueError(f"k must have q's shape {(B, H, T, dk)}, got {tuple(k.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, H, T):
        raise ValueError(f"v must be (B, H, T, dv) = ({B}, {H}, {T}, dv), got {tuple(v.shape)}")
    dv = v.shape[-1]
    for name, g in (("eta", eta), ("alpha", alpha), ("beta", beta)):
        if g is not None and tuple(g.shape) != (B, H, T):
            raise ValueError(f"{name} must be (B, H, T) = {(B, H, T)}, got {tuple(g.shape)}")
    if tuple(M0.shape) != (B, H, dv, dk):
        raise ValueError(f"M0 must be (B, H, dv, dk) = {(B, H, dv, dk)}, got {tuple(M0.shape)}")
    if beta is not None and S0 is not None and tuple(S0.shape) != (B, H, dv, dk):
        raise ValueError(f"S0 must be (B, H, dv, dk) = {(B, H, dv, dk)}, got {tuple(S0.shape)}")
    for name, x in (("q", q), ("k", k), ("v", v), ("eta", eta), ("alpha", alpha),
                    ("beta", beta), ("M0", M0), ("S0", S0)):
        if x is not None and not x.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _compute_dtype(*xs: Tensor | None) -> torch.dtype:
    dt = functools.reduce(torch.promote_types, [x.dtype for x in xs if x is not None])
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


def _no_autocast(device: torch.device):
    # a plain device-type test, not torch.amp.is_autocast_available: dynamo (torch 2.11) cannot
    # trace that builtin, and the compiled Titans block runs this
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def linear_memory(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, alpha: Tensor,
                  beta: Tensor | None, M0: Tensor, S0: Tensor | None = None, *,
                  chunk: int = 64, impl: str = "chunk") -> tuple[Tensor, Tensor, Tensor | None]:
    r"""Run the gated delta rule with momentum over a sequence; returns (y, M_T, S_T).

    S_t = β_t S_{t-1} − η_t (M_{t-1} k_t − v_t) k_tᵀ,   M_t = α_t M_{t-1} + S_t,   y_t = M_t q_t

    q, k: (B, H, T, dk); v: (B, H, T, dv); eta, alpha: (B, H, T); beta: (B, H, T) or None (no
    momentum, S_t = U_t); M0: (B, H, dv, dk); S0: (B, H, dv, dk) or None (zeros when beta is
    given; ignored when beta is None, and S_T is then None). impl="token" is the token-by-token
    reference, impl="chunk" the chunk-parallel path; `chunk` (>= 1) only changes the
    computation, not the result (T need not be a multiple of it). Differentiable in every input.
    """
    _check(q, k, v, eta, alpha, beta, M0, S0, chunk, impl)
    if beta is None:
        S0 = None
    dt = _compute_dtype(q, k, v, eta, alpha, beta, M0, S0)
    with _no_autocast(q.device):
        q_, k_, v_, eta_, alpha_, M = (x.to(dt) for x in (q, k, v, eta, alpha, M0))
        beta_ = None if beta is None else beta.to(dt)
        S = None
        if beta is not None:
            S = torch.zeros_like(M) if S0 is None else S0.to(dt)
        if impl == "token":
            y, M_T, S_T = token_path(q_, k_, v_, eta_, alpha_, beta_, M, S)
        else:
            y, M_T, S_T = chunk_path(q_, k_, v_, eta_, alpha_, beta_, M, S, chunk)
    if S_T is not None:
        S_T = S_T.to(M0.dtype if S0 is None else S0.dtype)
    return y.to(q.dtype), M_T.to(M0.dtype), S_T


def linear_memory_reference(q, k, v, eta, alpha, beta, M0, S0=None):
    """Token-by-token reference; `linear_memory(..., impl="token")`."""
    return linear_memory(q, k, v, eta, alpha, beta, M0, S0, impl="token")


def linear_memory_chunked(q, k, v, eta, alpha, beta, M0, S0=None, *, chunk: int = 64):
    """Chunk-parallel path; `linear_memory(..., impl="chunk")`."""
    return linear_memory(q, k, v, eta, alpha, beta, M0, S0, chunk=chunk, impl="chunk")
