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

and the chunk's end state is, with θ_a the anchor of `mlp_memory` (0 without one),

    θ_C − θ_a = A_C (θ_0 − θ_a) + P_C S_0 − Σ_s K[C,s] η_s ∇_s,    S_C = Bc_C S_0 − Σ_s Db[C,s] η_s ∇_s.

`impl="token"` is the reference (a loop over tokens that follows the recurrence literally);
`impl="chunk"` equals it and keeps the sequential part small. What does not depend on the
chunk-start state (the coefficients, K[t,s] η_s, the masked q·k products, the end weights) is
computed once for all N chunks, batched over a chunk axis; the loop over chunks computes only
(e, a, δ) at θ_0 and the end state (five matmuls: three for the factors, one for W1 and S1 from
the shared keys k, one for W2 and S2 from the shared a); the reads follow for all chunks at once
from the stacked chunk-start states and factors. A short last chunk is padded with no-op tokens
(η = 0, α = β = 1) and its end state is taken at its last real token. The loop lives in
`mlp_loop`: a plain autograd graph, or (`LOOP`; by default where its kernels run: CUDA, float32)
one op whose forward and hand-written backward are each one Triton kernel. Everything else is
plain autograd (first-order: the inner gradients are formulas, not `torch.autograd.grad`).

Dtypes: float32/float64 inputs are computed in their promoted dtype. If that dtype is narrower
(bf16/half), the work is done in float32 and y is cast back to q's dtype, the weights and momenta
to W1's dtype (carry float32 states yourself to avoid rounding them between calls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nlcore.ops.gates import chunk_coeffs
from nlcore.ops.mlp_loop import factors, forward_torch, kernel_fits, mlp_loop_fwd

IMPLS = ("chunk", "token")
LOOPS = ("auto", "autograd", "op")
LOOP = "auto"  # the chunk path's loop: "op" = mlp_loop's fused op, "auto" = it where its kernel runs


def use_op(X1: Tensor, k: Tensor) -> bool:
    """Whether `_chunk_path` runs its loop over chunks as the `mlp_loop` op (see LOOP)."""
    if LOOP not in LOOPS:
        raise ValueError(f"nlcore.ops.mlp_memory.LOOP must be one of {LOOPS}, got {LOOP!r}")
    return LOOP == "op" or (LOOP == "auto" and kernel_fits(X1, k))


def grad_factors(W1: Tensor, W2: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-1 factors of ∇ℓ at θ = (W1, W2) for N tokens: ∇W2_s = e_s a_sᵀ, ∇W1_s = δ_s k_sᵀ.

    W1 (..., h, d), W2 (..., d, h), k, v (..., N, d) -> e (..., N, d), a (..., N, h), δ (..., N, h).
    """
    return factors(W1, W2, k, k - v)


def _end_row(x: Tensor, r: int) -> Tensor:
    """Each chunk's coefficients at its last token: row C, and row r in the last chunk (its last real
    token, before the padding). x (B, H, N, C, ...) -> (B, H, N, ...)."""
    return torch.cat([x[:, :, :-1, -1], x[:, :, -1:, r - 1]], dim=2)


def _plus(x: Tensor, a: Tensor | None) -> Tensor:
    """x + a, or x without an anchor (a = None)."""
    return x if a is None else x + a


def _chunk_path(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor, C: int):
    """All chunks: the state-independent factors at once, a loop over chunks for the states, then
    the reads at once. q, k, v (B, H, T, d); gates (B, H, T); W1 (B, H, h, d), W2 (B, H, d, h)."""
    B, H, T, d = q.shape
    h, mom = W1.shape[-2], beta is not None
    if T == 0:
        return q.clone(), W1, W2, S1, S2
    N = -(-T // C)  # chunks; the last has r real tokens and is padded to C with no-op tokens
    r, pad = T - (N - 1) * C, N * C - T
    q, k, v = (F.pad(x, (0, 0, 0, pad)).unflatten(2, (N, C)) for x in (q, k, v))  # (B, H, N, C, d)
    eta = F.pad(eta, (0, pad)).unflatten(2, (N, C))  # η = 0 on padding: (B, H, N, C)
    alpha, beta = (None if g is None else F.pad(g, (0, pad), value=1.0).unflatten(2, (N, C))
                   for g in (alpha, beta))  # α = β = 1 on padding (never stepped over: `_end_row`)
    c = chunk_coeffs(alpha, beta)  # A, P, Bc (B, H, N, C); K, Db (B, H, N, C, C)
    Ke = c.K * eta.unsqueeze(-2)  # K[t, s] η_s: (B, H, N, C, C)
    # the state in m channels (θ − θ_a, S) with momentum, else m = 1 (θ − θ_a); per chunk:
    # cc (B, H, N, C, m): the weights of (θ_0 − θ_a, S_0) in θ_t, [A_t, P_t]
    # w (B, H, N, C, m): the weights of η_s ∇_s in (θ_C, S_C), [K[C, s], Db[C, s]] η_s
    # mix (B, H, N, m, m): (θ_0 − θ_a, S_0) -> (θ_C − θ_a, S_C), [[A_C, P_C], [0, Bc_C]]
    A_C, wK = _end_row(c.A, r), _end_row(Ke, r)  # (B, H, N), (B, H, N, C)
    if mom:
        cc = torch.stack([c.A, c.P], -1)
        w = torch.stack([wK, _end_row(c.Db, r) * eta], -1)
        zero = torch.zeros_like(A_C)
        mix = torch.stack([A_C, _end_row(c.P, r), zero, _end_row(c.Bc, r)], -1).unflatten(-1, (2, 2))
    else:
        cc, w, mix = c.A.unsqueeze(-1), wK.unsqueeze(-1), A_C[..., None, None]
    m = cc.shape[-1]
    a1, a2 = anchor if anchor is not None else (None, None)
    R1, R2 = (W1, W2) if anchor is None else (W1 - a1, W2 - a2)  # θ_0 − θ_a: what retention scales
    X1 = torch.stack([R1, S1], 2) if mom else R1.unsqueeze(2)  # (B, H, m, h, d)
    X2 = torch.stack([R2, S2], 2) if mom else R2.unsqueeze(2)  # (B, H, m, d, h)

    # the loop over chunks (mlp_loop): every chunk's start and the end state, S1s (B, H, N + 1, m, h, d),
    # S2s (B, H, N + 1, m, d, h); each chunk's factors at its start, e (B, H, N, C, d), a, δ (B, H, N, C, h)
    loop = mlp_loop_fwd if use_op(X1, k) else forward_torch  # one fused op, or a plain autograd graph
    # contiguous here, where the compiler can make the producers write them so (the op would copy them)
    S1s, S2s, e, a, delta = loop(X1, X2, k.contiguous(), (k - v).contiguous(), -w, mix, a1, a2)
    X1s, X2s = (x[:, :, :-1].flatten(3, 4) for x in (S1s, S2s))  # (B, H, N, m·h, d), (B, H, N, m·d, h)
    X1, X2 = S1s[:, :, -1], S2s[:, :, -1]
    cc = cc.unsqueeze(-1)  # (B, H, N, C, m, 1)
    zq = (cc * (q @ X1s.transpose(-1, -2)).unflatten(-1, (m, h))).sum(-2)  # A_t R1_0 q_t + P_t S1_0 q_t
    zq = zq - (Ke * (q @ k.transpose(-1, -2))) @ delta  # − Σ_s K η_s (k_s·q_t) δ_s: (B, H, N, C, h)
    if anchor is not None:
        zq = zq + q @ a1.unsqueeze(-3).transpose(-1, -2)  # + θ_a q_t (θ_0 − θ_a is what retention scales)
    aq = F.silu(zq)  # a^q_t = σ(W1_t q_t): (B, H, N, C, h)
    y = q + (cc * (aq @ X2s.transpose(-1, -2)).unflatten(-1, (m, d))).sum(-2)  # + A_t R2_0 a^q + P_t S2_0 a^q
    y = y - (Ke * (aq @ a.transpose(-1, -2))) @ e  # − Σ_s K η_s (a_s·a^q_t) e_s: (B, H, N, C, d)
    if anchor is not None:
        y = y + aq @ a2.unsqueeze(-3).transpose(-1, -2)
    y = y.flatten(2, 3)[:, :, :T]  # (B, H, T, d)
    S1, S2 = (X1[:, :, 1], X2[:, :, 1]) if mom else (None, None)
    return y, _plus(X1[:, :, 0], a1), _plus(X2[:, :, 0], a2), S1, S2


def _token_step(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor=None):
    """One chunk, token by token (the reference). q, k, v (B, H, C, d); gates (B, H, C); states as in
    `mlp_memory`."""
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
    if anchor is not None:
        anchor = (anchor[0].to(dt), anchor[1].to(dt))
    if impl == "chunk":
        y, W1, W2, S1, S2 = _chunk_path(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor, chunk)
    else:
        T, ys = q.shape[2], []
        sizes = [min(chunk, T - t0) for t0 in range(0, T, chunk)]
        parts = [x.split(sizes, dim=2) for x in (q, k, v)]
        gates = [x.split(sizes, dim=-1) for x in (eta, alpha, beta if beta is not None else eta)]
        for n in range(len(sizes)):
            y, W1, W2, S1, S2 = _token_step(parts[0][n], parts[1][n], parts[2][n], gates[0][n], gates[1][n],
                                            None if beta is None else gates[2][n], W1, W2, S1, S2, anchor)
            ys.append(y)
        y = torch.cat(ys, dim=2) if ys else q.clone()  # (B, H, T, d)
    momenta = None if beta is None else (S1.to(state_dtype), S2.to(state_dtype))
    return y.to(out_dtype), (W1.to(state_dtype), W2.to(state_dtype)), momenta
