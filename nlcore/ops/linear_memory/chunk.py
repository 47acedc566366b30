r"""The linear memory, chunk-parallel: equal to `naive.token_path`, with few sequential steps.

Chunk-parallel form. Split T into chunks of C tokens. Inside a chunk with start states (M_0, S_0)
let c = chunk_coeffs(α, β) and p = shift_prev(c) (nlcore.ops.gates), so that

    M_{t-1} = p.A_t M_0 + p.P_t S_0 − Σ_{s<t} p.K[t,s] η_s G_s k_sᵀ.

Multiplying by k_t gives a unit lower-triangular system for all errors of the chunk at once:

    G_t + Σ_{s<t} p.K[t,s] η_s (k_s·k_t) G_s = p.A_t (M_0 k_t) + p.P_t (S_0 k_t) − v_t
    (I + L) G = R,    L[t,s] = p.K[t,s] η_s (k_s·k_t)  (strictly lower; only k and gates).

Because R is linear in (M_0, S_0), one batched triangular solve for ALL chunks gives
(I+L)^{-1}[p.A ⊙ k, p.P ⊙ k, −v]; with W_s = η_s G_s the chunk's outputs and end states are

    W   = diag(η)(I+L)^{-1}(p.A ⊙ k) M_0ᵀ + diag(η)(I+L)^{-1}(p.P ⊙ k) S_0ᵀ − diag(η)(I+L)^{-1} v
    y_t = c.A_t M_0 q_t + c.P_t S_0 q_t − Σ_{s<=t} c.K[t,s] (k_s·q_t) W_s
    M_C = c.A_C M_0 + c.P_C S_0 − Σ_s c.K[C,s] W_s k_sᵀ,     S_C = c.Bc_C S_0 − Σ_s c.Db[C,s] W_s k_sᵀ.

The end state is affine in the start state (W is linear in M_0, S_0): [M_C S_C] = [M_0 S_0] A_n + B_n
with A_n, B_n built for all chunks at once, so the Python loop over chunks is one batched matmul
per chunk; the solve, the writes W and the reads y are batched over all chunks. A partial last chunk is zero-padded
(η = 0, α = β = 1) and its end state is read at its last real token, not at row C: with momentum
a padded token would still add S to M, so padding must never be stepped over.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nlcore.ops.gates import StepFactors, chunk_coeffs, shift_prev, step_factors
from nlcore.ops.triangular import solve_unit_lower


def chunk_path(q, k, v, eta, alpha, beta, M, S, chunk):
    """The chunk-parallel form above over a whole sequence, shapes as `naive.token_path`'s, inputs
    in the compute dtype; chunk (>= 1) need not divide T. Returns (y, M_T, S_T)."""
    B, H, T, dk = q.shape
    dv = v.shape[-1]
    if T == 0:
        return v.new_zeros(v.shape), M, S
    C = min(chunk, T)
    N = -(-T // C)  # number of chunks
    pad = N * C - T
    last = T - 1 - (N - 1) * C  # index of the last real token inside the last chunk
    mom = beta is not None
    if pad:  # padded tokens: no write (η = 0), gates 1; their outputs are dropped
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        eta = F.pad(eta, (0, pad), value=0.0)
        alpha = F.pad(alpha, (0, pad), value=1.0)
        beta = F.pad(beta, (0, pad), value=1.0) if mom else None
    qc = q.reshape(B, H, N, C, dk)  # (B, H, N, C, dk)
    kc = k.reshape(B, H, N, C, dk)  # (B, H, N, C, dk)
    vc = v.reshape(B, H, N, C, dv)  # (B, H, N, C, dv)
    ec = eta.reshape(B, H, N, C)  # (B, H, N, C)
    c = chunk_coeffs(alpha.reshape(B, H, N, C), beta.reshape(B, H, N, C) if mom else None)
    p = shift_prev(c)  # coefficients of the states before each token

    # (I + L) [Ka, Kp, Gv] = [p.A ⊙ k, p.P ⊙ k, −v], solved for every chunk at once
    L = p.K * ec[..., None, :] * (kc @ kc.transpose(-1, -2))  # (B, H, N, C, C), strictly lower
    rhs = [p.A[..., None] * kc]  # (B, H, N, C, dk)
    if mom:
        rhs.append(p.P[..., None] * kc)  # (B, H, N, C, dk)
    rhs.append(-vc)  # (B, H, N, C, dv)
    sol = solve_unit_lower(L, torch.cat(rhs, -1))  # (B, H, N, C, 2 dk + dv)
    sol = ec[..., None] * sol  # fold η: W = Wa M_0ᵀ + Wp S_0ᵀ + Wc
    Wa, Wc = sol[..., :dk], sol[..., -dv:]  # (B, H, N, C, dk), (B, H, N, C, dv)
    Wp = sol[..., dk:2 * dk] if mom else None  # (B, H, N, C, dk)

    # end-state coefficients: row C of every chunk, row `last` of the (partial) last chunk
    def end(x: Tensor, matrix: bool) -> Tensor:  # (B, H, N, C[, C]) -> (B, H, N[, C])
        full = x[..., C - 1, :] if matrix else x[..., C - 1]
        if last == C - 1:
            return full
        tail = x[:, :, -1:, last, :] if matrix else x[:, :, -1:, last]
        return torch.cat([full[:, :, :-1], tail], dim=2)

    kK = end(c.K, True)[..., None] * kc  # c.K[e, s] k_s: (B, H, N, C, dk)
    A_e = end(c.A, False)[..., None, None]  # (B, H, N, 1, 1)
    eye = torch.eye(dk, dtype=q.dtype, device=q.device)
    # the end state is affine in the start state: Z_C = Z_0 A_n + B_n with Z = [M S] (dv, m dk),
    # since W = Wa M_0ᵀ (+ Wp S_0ᵀ) + Wc; so the sequential part is one batched matmul per chunk
    #   M_C = M_0 (c.A_C I − Waᵀ kK) + S_0 (c.P_C I − Wpᵀ kK) − Wcᵀ kK
    #   S_C = M_0 (−Waᵀ kD)          + S_0 (c.Bc_C I − Wpᵀ kD) − Wcᵀ kD
    if mom:
        kD = end(c.Db, True)[..., None] * kc  # c.Db[e, s] k_s: (B, H, N, C, dk)
        P_e = end(c.P, False)[..., None, None]  # (B, H, N, 1, 1)
        Bc_e = end(c.Bc, False)[..., None, None]  # (B, H, N, 1, 1)
        kKD = torch.cat([kK, kD], -1)  # (B, H, N, C, 2 dk)
        Wap = torch.cat([Wa, Wp], -1)  # (B, H, N, C, 2 dk)
        aI = A_e * eye  # (B, H, N, dk, dk)
        diag = torch.cat([torch.cat([aI, torch.zeros_like(aI)], -1),
                          torch.cat([P_e * eye, Bc_e * eye], -1)], -2)  # (B, H, N, 2 dk, 2 dk)
        An = diag - Wap.transpose(-1, -2) @ kKD  # (B, H, N, 2 dk, 2 dk)
        Bn = -(Wc.transpose(-1, -2) @ kKD)  # (B, H, N, dv, 2 dk)
        Z = torch.cat([M, S], -1)  # (B, H, dv, 2 dk)
    else:
        An = A_e * eye - Wa.transpose(-1, -2) @ kK  # (B, H, N, dk, dk)
        Bn = -(Wc.transpose(-1, -2) @ kK)  # (B, H, N, dv, dk)
        Z = M
    Zs = []
    for A_n, B_n in zip(An.unbind(2), Bn.unbind(2)):  # sequential part: carry Z across chunks
        Zs.append(Z)
        Z = torch.baddbmm(B_n.flatten(0, 1), Z.flatten(0, 1), A_n.flatten(0, 1)).view_as(Z)
    Z0s = torch.stack(Zs, dim=2)  # chunk-start states: (B, H, N, dv, m dk)
    M0s = Z0s[..., :dk]  # (B, H, N, dv, dk)
    M, S = (Z[..., :dk], Z[..., dk:]) if mom else (Z, None)

    # writes and reads, batched over chunks: W = Wa M_0ᵀ + Wp S_0ᵀ + Wc,
    # y = (c.A ⊙ q) M_0ᵀ + (c.P ⊙ q) S_0ᵀ − (c.K ⊙ q kᵀ) W
    W = (Wap if mom else Wa) @ Z0s.transpose(-1, -2) + Wc  # (B, H, N, C, dv)
    QK = c.K * (qc @ kc.transpose(-1, -2))  # (B, H, N, C, C), lower incl. diagonal
    y = (c.A[..., None] * qc) @ M0s.transpose(-1, -2) - QK @ W  # (B, H, N, C, dv)
    if mom:
        y = y + (c.P[..., None] * qc) @ Z0s[..., dk:].transpose(-1, -2)
    y = y.reshape(B, H, N * C, dv)[:, :, :T]  # (B, H, T, dv)
    return y, M, (S if mom else None)


def chunk_write(k: Tensor, v: Tensor, f: StepFactors, Z: Tensor) -> tuple[Tensor, Tensor]:
    """The writes of one full chunk: k (..., C, dk), v (..., C, dv), f = the chunk's `step_factors`,
    Z (..., m, dv, dk) the chunk-start states [M_0, S_0] (m = 2) or [M_0] (m = 1). Returns the
    prediction errors G (..., C, dv) (the writes are W = diag(eta) G) and the end states like Z."""
    m, dv, dk = Z.shape[-3:]
    kZ = (k @ Z.flatten(-3, -2).transpose(-1, -2)).unflatten(-1, (m, dv))  # M_0 k_t, S_0 k_t: (..., C, m, dv)
    R = (f.pc.unsqueeze(-2) @ kZ).squeeze(-2) - v  # p.A_t M_0 k_t + p.P_t S_0 k_t − v_t: (..., C, dv)
    L = f.pK * (k @ k.transpose(-1, -2))  # (..., C, C), strictly lower
    if L.shape[:-2] != R.shape[:-2]:
        L = L.expand(*R.shape[:-2], *L.shape[-2:])
    G = solve_unit_lower(L, R)  # (I + L) G = R
    kc = (f.ke.unsqueeze(-1) * k.unsqueeze(-2)).flatten(-2)  # −η_s [c.K[C,s], c.Db[C,s]] k_s: (.., C, m dk)
    GK = (kc.transpose(-1, -2) @ G).unflatten(-2, (m, dk)).transpose(-1, -2)  # Σ_s (.) G_s k_sᵀ: (.., m, dv, dk)
    return G, (f.mix @ Z.flatten(-2)).unflatten(-1, (dv, dk)) + GK  # mix (M_0, S_0) + the writes


def chunk_read(q: Tensor, k: Tensor, G: Tensor, f: StepFactors, Z: Tensor) -> Tensor:
    """The reads y_t = M_t q_t of one full chunk (or of several: leading dims broadcast) from its
    keys k, prediction errors G (`chunk_write`) and chunk-start states Z; q (..., C, dk)."""
    m, dv, dk = Z.shape[-3:]
    qZ = (q @ Z.flatten(-3, -2).transpose(-1, -2)).unflatten(-1, (m, dv))  # M_0 q_t, S_0 q_t: (..., C, m, dv)
    y = (f.cc.unsqueeze(-2) @ qZ).squeeze(-2)  # c.A_t M_0 q_t + c.P_t S_0 q_t: (..., C, dv)
    return y - (f.cK * (q @ k.transpose(-1, -2))) @ G  # − Σ_{s<=t} c.K[t,s] η_s (k_s·q_t) G_s


def chunk_step(q: Tensor, k: Tensor, v: Tensor, eta: Tensor, c, p, M: Tensor,
               S: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """One full chunk of the chunk-parallel form with its gate coefficients precomputed:
    c = chunk_coeffs(alpha, beta), p = shift_prev(c). The per-chunk form is for a caller that makes
    each chunk's keys from the previous chunk's state: it loops over `chunk_write` with
    `step_factors` computed once for all chunks and reads with one batched `chunk_read` after the
    loop (HOPE's loop, nlcore.ops.hope_memory.chunk, is this arrangement for its three memories).

    q, k: (..., C, dk); v: (..., C, dv); eta: (..., C); c, p: coefficients (..., C[, C]);
    M, S: (..., dv, dk) (S None: no momentum). Leading dims broadcast (e.g. several memories
    sharing keys and gates). Returns (y (..., C, dv), M_C, S_C), equal to `linear_memory` on
    the chunk (tests/ops/test_linear_memory.py).
    """
    f = step_factors(eta, c, p, S is not None)
    Z = M.unsqueeze(-3) if S is None else torch.stack(torch.broadcast_tensors(M, S), -3)  # (..., m, dv, dk)
    G, Z_C = chunk_write(k, v, f, Z)
    return chunk_read(q, k, G, f, Z), Z_C[..., 0, :, :], (None if S is None else Z_C[..., 1, :, :])
