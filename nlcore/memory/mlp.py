r"""Titans' deep memory: a 2-layer residual MLP written by chunk-wise mini-batch gradient descent.

Titans (Behrouz, Zhong & Mirrokni, 2024), "long-term memory" (surprise = gradient of an
associative loss, with momentum and forgetting) and "parallelizing the long-term memory
training" (gradients of a chunk taken at the chunk-start weights). Every batch row b and head h
has its own memory

    M_θ(x) = x + W2 σ(W1 x),    θ = (W1: (h_dim, d), W2: (d, h_dim)),    σ = SiLU,

and inner loss ℓ_t(θ) = ½‖M_θ(k_t) − v_t‖². The sequence is cut into chunks of `chunk` tokens
(the last one may be shorter; the chunk size is part of the definition). Within a chunk starting
from (θ_0, S_0), for t = 1..C:

    ∇_t = ∇_θ ℓ_t(θ_0)                       (all gradients at the chunk-start weights)
    S_t = β_t S_{t-1} − η_t ∇_t              (no momentum, beta=None: S_t = −η_t ∇_t)
    θ_t = α_t θ_{t-1} + S_t                  (same scalar gates for W1 and W2)
    y_t = M_{θ_t}(q_t)                       (read after the write)

The gradients are explicit: with z = W1 k, a = σ(z), e = M(k) − v,

    ∇W2 = e aᵀ,    δ = (W2ᵀ e) ⊙ σ'(z),    ∇W1 = δ kᵀ.

Every update is a sum of rank-1 terms, so with the gates' coefficients (`gates.chunk_coeffs`)
θ_t = A_t θ_0 + P_t S_0 + Σ_{s≤t} K[t,s] U_s and the read needs no per-token weights:

    W1_t q_t = A_t W1_0 q_t + P_t S1_0 q_t − Σ_{s≤t} K[t,s] η_s (k_s·q_t) δ_s
    y_t      = q_t + A_t W2_0 a^q_t + P_t S2_0 a^q_t − Σ_{s≤t} K[t,s] η_s (a_s·a^q_t) e_s,
               a^q_t = σ(W1_t q_t)

`impl="token"` is the reference (a loop over tokens that follows the recurrence literally);
`impl="chunk"` loops over chunks only and equals it. Both are plain autograd graphs (first-order:
the inner gradients are formulas, not `torch.autograd.grad`).

Dtypes: float32/float64 inputs are computed in their promoted dtype. If that dtype is narrower
(bf16/half), the work is done in float32 and y is cast back to q's dtype, the weights and momenta
to W1's dtype (carry float32 states yourself to avoid rounding them between calls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .gates import chunk_coeffs

IMPLS = ("chunk", "token")


def _silu_grad(z: Tensor) -> Tensor:
    """σ'(z) for σ(z) = z sigmoid(z): sigmoid(z) (1 + z (1 − sigmoid(z)))."""
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def grad_factors(W1: Tensor, W2: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-1 factors of ∇ℓ at θ = (W1, W2) for N tokens: ∇W2_s = e_s a_sᵀ, ∇W1_s = δ_s k_sᵀ.

    W1 (..., h, d), W2 (..., d, h), k, v (..., N, d) -> e (..., N, d), a (..., N, h), δ (..., N, h).
    """
    z = k @ W1.transpose(-1, -2)  # z = W1 k: (..., N, h)
    a = F.silu(z)  # a = σ(z): (..., N, h)
    e = k + a @ W2.transpose(-1, -2) - v  # e = M(k) − v: (..., N, d)
    delta = (e @ W2) * _silu_grad(z)  # δ = (W2ᵀ e) ⊙ σ'(z): (..., N, h)
    return e, a, delta


def _chunk_step(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor=None):
    """One chunk, no loop over tokens. q, k, v (B, H, C, d); gates (B, H, C)."""
    e, a, delta = grad_factors(W1, W2, k, v)  # at θ_0: (B, H, C, d), (B, H, C, h), (B, H, C, h)
    c = chunk_coeffs(alpha, beta)  # A, P, Bc (B, H, C); K, Db (B, H, C, C)
    Ke = c.K * eta.unsqueeze(-2)  # K[t, s] η_s: (B, H, C, C)
    A = c.A.unsqueeze(-1)  # (B, H, C, 1)
    a1, a2 = anchor if anchor is not None else (None, None)
    R1, R2 = (W1, W2) if anchor is None else (W1 - a1, W2 - a2)  # the part that retention scales
    zq = A * (q @ R1.transpose(-1, -2))  # A_t W1_0 q_t: (B, H, C, h)
    if anchor is not None:
        zq = zq + q @ a1.transpose(-1, -2)  # + (1 - A_t) a1 q_t, with R1 = W1_0 - a1
    zq = zq - (Ke * (q @ k.transpose(-1, -2))) @ delta  # − Σ_s K η_s (k_s·q_t) δ_s
    if beta is not None:
        zq = zq + c.P.unsqueeze(-1) * (q @ S1.transpose(-1, -2))  # P_t S1_0 q_t
    aq = F.silu(zq)  # a^q_t = σ(W1_t q_t): (B, H, C, h)
    y = q + A * (aq @ R2.transpose(-1, -2))  # q_t + A_t W2_0 a^q_t: (B, H, C, d)
    if anchor is not None:
        y = y + aq @ a2.transpose(-1, -2)
    y = y - (Ke * (aq @ a.transpose(-1, -2))) @ e  # − Σ_s K η_s (a_s·a^q_t) e_s
    if beta is not None:
        y = y + c.P.unsqueeze(-1) * (aq @ S2.transpose(-1, -2))  # P_t S2_0 a^q_t

    wK = (c.K[..., -1, :] * eta).unsqueeze(-1)  # K[C, s] η_s: (B, H, C, 1)
    A_C = c.A[..., -1, None, None]  # (B, H, 1, 1)
    W1n = A_C * R1 - (wK * delta).transpose(-1, -2) @ k  # − Σ_s K η δ_s k_sᵀ: (B, H, h, d)
    W2n = A_C * R2 - (wK * e).transpose(-1, -2) @ a  # − Σ_s K η e_s a_sᵀ: (B, H, d, h)
    if anchor is not None:
        W1n, W2n = W1n + a1, W2n + a2
    if beta is None:
        return y, W1n, W2n, None, None
    P_C = c.P[..., -1, None, None]  # (B, H, 1, 1)
    W1n = W1n + P_C * S1
    W2n = W2n + P_C * S2
    wD = (c.Db[..., -1, :] * eta).unsqueeze(-1)  # Db[C, s] η_s: (B, H, C, 1)
    B_C = c.Bc[..., -1, None, None]  # (B, H, 1, 1)
    S1n = B_C * S1 - (wD * delta).transpose(-1, -2) @ k  # (B, H, h, d)
    S2n = B_C * S2 - (wD * e).transpose(-1, -2) @ a  # (B, H, d, h)
    return y, W1n, W2n, S1n, S2n


def _token_step(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor=None):
    """One chunk, token by token (the reference). Same arguments as `_chunk_step`."""
    e, a, delta = grad_factors(W1, W2, k, v)  # cached gradients at θ_0 (chunk start)
    ys = []
    for t in range(q.shape[-2]):
        eta_t = eta[..., t, None, None]  # (B, H, 1, 1)
        U1 = -eta_t * (delta[..., t, :, None] * k[..., t, None, :])  # −η ∇W1 = −η δ kᵀ: (B, H, h, d)
        U2 = -eta_t * (e[..., t, :, None] * a[..., t, None, :])  # −η ∇W2 = −η e aᵀ: (B, H, d, h)
        if beta is not None:
            b_t = beta[..., t, None, None]
            S1, S2 = b_t * S1 + U1, b_t * S2 + U2  # S_t = β_t S_{t-1} + U_t
            U1, U2 = S1, S2
        a_t = alpha[..., t, None, None]
        W1, W2 = a_t * W1 + U1, a_t * W2 + U2  # θ_t = α_t θ_{t-1} + S_t
        if anchor is not None:  # retention toward the anchor: + (1 − α_t) θ_anchor
            W1, W2 = W1 + (1 - a_t) * anchor[0], W2 + (1 - a_t) * anchor[1]
        q_t = q[..., t, :, None]  # (B, H, d, 1)
        y_t = q_t + W2 @ F.silu(W1 @ q_t)  # M_{θ_t}(q_t): (B, H, d, 1)
        ys.append(y_t.squeeze(-1))
    return torch.stack(ys, dim=-2), W1, W2, S1, S2


def _check(q, k, v, eta, alpha, beta, W1, W2, S1, S2, chunk, impl) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
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
               chunk: int = 64, impl: str = "chunk", anchor: tuple[Tensor, Tensor] | None = None):
    """Write (k, v) into the per-(row, head) MLP memory chunk by chunk and read it at q.

    q, k, v: (B, H, T, d); eta (step), alpha (retention), beta (momentum decay or None): (B, H, T);
    W1: (B, H, h_dim, d), W2: (B, H, d, h_dim); S1, S2: momenta like W1, W2 (zeros when None;
    ignored when beta is None). Returns (y (B, H, T, d), (W1_T, W2_T), (S1_T, S2_T) or None).
    anchor=(W1a, W2a) (broadcastable to W1, W2): retention pulls θ toward the anchor instead of
    zero, θ_t = α_t θ_{t-1} + (1 − α_t) θ_a + S_t, i.e. θ_t − θ_a follows the recurrence above.
    """
    _check(q, k, v, eta, alpha, beta, W1, W2, S1, S2, chunk, impl)
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
    step = _chunk_step if impl == "chunk" else _token_step
    if anchor is not None:
        anchor = (anchor[0].to(dt), anchor[1].to(dt))

    T = q.shape[2]
    ys = []
    sizes = [min(chunk, T - t0) for t0 in range(0, T, chunk)]
    parts = [x.split(sizes, dim=2) for x in (q, k, v)]  # split once: one backward node, not one per chunk
    gates = [x.split(sizes, dim=-1) for x in (eta, alpha, beta if beta is not None else eta)]
    for n in range(len(sizes)):
        y, W1, W2, S1, S2 = step(parts[0][n], parts[1][n], parts[2][n], gates[0][n], gates[1][n],
                                 None if beta is None else gates[2][n], W1, W2, S1, S2, anchor)
        ys.append(y)
    y = torch.cat(ys, dim=2) if ys else q.clone()  # (B, H, T, d)
    momenta = None if beta is None else (S1.to(state_dtype), S2.to(state_dtype))
    return y.to(out_dtype), (W1.to(state_dtype), W2.to(state_dtype)), momenta
