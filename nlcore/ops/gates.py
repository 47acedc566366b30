r"""Within-chunk coefficients of the gated momentum recurrence shared by every nlcore memory.

A memory state M (any tensor shape) with momentum S is written once per token t = 1..C of a chunk
by an update U_t, with per-token scalar retention alpha_t (forget gate) and momentum decay beta_t:

    S_t = beta_t S_{t-1} + U_t
    M_t = alpha_t M_{t-1} + S_t

(without momentum, beta = 0 and S_t = U_t). Unrolled from the chunk-start states (M_0, S_0):

    M_t = A_t M_0 + P_t S_0 + sum_{s<=t} K[t, s] U_s
    S_t = Bc_t S_0 + sum_{s<=t} Db[t, s] U_s

with Da[t, r] = prod_{j=r+1..t} alpha_j (1 on the diagonal, 0 above it), Db likewise for beta,

    A_t  = prod_{j<=t} alpha_j,      Bc_t = prod_{j<=t} beta_j,
    K    = Da @ Db,                  P_t  = sum_{r<=t} Da[t, r] Bc_r.

All of them are scalars per (batch, head, token), so a chunk of C tokens costs C x C matrices
instead of C sequential state updates. Products are taken as exp of sums of log gates, summed
per segment rather than as differences of one long cumulative sum, so that small gates keep
float32 gradients accurate; gates are clamped to >= TINY first, so a gate of exactly 0 stays finite.

`step_factors` folds the step sizes eta into the factors that a chunk of the linear delta rule
needs (`chunk_write` / `chunk_read` of nlcore.ops.linear_memory.chunk, and HOPE's loop in
nlcore.ops.hope_memory), once for all chunks of a window.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

TINY = 1e-30  # the floor on a gate before its log


class ChunkCoeffs(NamedTuple):
    A: torch.Tensor  # (..., C)    prod_{j<=t} alpha_j
    P: torch.Tensor  # (..., C)    weight of S_0 in M_t (zeros without momentum)
    K: torch.Tensor  # (..., C, C) weight of U_s in M_t (lower triangular, s <= t)
    Bc: torch.Tensor  # (..., C)   prod_{j<=t} beta_j (zeros without momentum)
    Db: torch.Tensor  # (..., C, C) weight of U_s in S_t (identity without momentum)


def decay_matrix(a: torch.Tensor) -> torch.Tensor:
    """(..., C) gates -> (..., C, C) with D[t, r] = prod_{j=r+1..t} a_j for t >= r, else 0."""
    C = a.shape[-1]
    la = torch.log(a.clamp_min(TINY))  # (..., C)
    strict = torch.ones(C, C, dtype=torch.bool, device=a.device).tril(-1)  # j > r
    # log prod_{j=r+1..t} a_j as a cumulative sum over j of the terms with j > r, per column r:
    # no difference of two long cumulative sums, so small gates keep float32 gradients accurate
    seg = la.unsqueeze(-1).expand(*la.shape, C).masked_fill(~strict, 0.0).cumsum(-2)  # (..., C, C)
    lower = torch.ones(C, C, dtype=torch.bool, device=a.device).tril()
    return torch.exp(seg.masked_fill(~lower, float("-inf")))


def chunk_coeffs(alpha: torch.Tensor, beta: torch.Tensor | None) -> ChunkCoeffs:
    """Coefficients for one chunk; alpha, beta: (..., C). beta=None: no momentum."""
    Da = decay_matrix(alpha)  # (..., C, C)
    A = torch.exp(torch.log(alpha.clamp_min(TINY)).cumsum(-1))  # (..., C)
    if beta is None:
        zeros = torch.zeros_like(alpha)
        eye = torch.eye(alpha.shape[-1], dtype=alpha.dtype, device=alpha.device).expand_as(Da)
        return ChunkCoeffs(A=A, P=zeros, K=Da, Bc=zeros, Db=eye)
    Db = decay_matrix(beta)  # (..., C, C)
    Bc = torch.exp(torch.log(beta.clamp_min(TINY)).cumsum(-1))  # (..., C)
    K = Da @ Db  # (..., C, C): sum_{s<=r<=t} Da[t, r] Db[r, s]
    P = (Da @ Bc.unsqueeze(-1)).squeeze(-1)  # (..., C)
    return ChunkCoeffs(A=A, P=P, K=K, Bc=Bc, Db=Db)


def shift_prev(c: ChunkCoeffs) -> ChunkCoeffs:
    """The coefficients of the states *before* each token (M_{t-1}, S_{t-1}): row t of the result
    is row t-1 of `c`, and row 1 is the chunk start (A = Bc = 1, P = 0, K = Db = 0)."""
    def rows(x: torch.Tensor, first: float) -> torch.Tensor:
        pad = torch.full_like(x[..., :1], first)
        return torch.cat([pad, x[..., :-1]], dim=-1)

    def mats(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[..., :1, :]), x[..., :-1, :]], dim=-2)

    return ChunkCoeffs(A=rows(c.A, 1.0), P=rows(c.P, 0.0), K=mats(c.K),
                       Bc=rows(c.Bc, 1.0), Db=mats(c.Db))


class StepFactors(NamedTuple):
    """The state-independent factors of one chunk of the linear delta rule (`chunk_write`,
    `chunk_read` in nlcore.ops.linear_memory.chunk), with eta folded in; m = 2 with momentum, else 1."""
    pK: torch.Tensor  # (..., C, C) p.K[t, s] eta_s: the earlier writes in M_{t-1} (strictly lower)
    cK: torch.Tensor | None  # (..., C, C) c.K[t, s] eta_s: the writes in M_t (read)
    pc: torch.Tensor  # (..., C, m) [p.A_t, p.P_t]: weights of (M_0, S_0) in M_{t-1}
    cc: torch.Tensor | None  # (..., C, m) [c.A_t, c.P_t]: weights of (M_0, S_0) in M_t (read)
    ke: torch.Tensor  # (..., C, m) -eta_s [c.K[C, s], c.Db[C, s]]: weight of G_s k_s^T in (M_C, S_C)
    mix: torch.Tensor  # (..., m, m) [[c.A_C, c.P_C], [0, c.Bc_C]]: (M_0, S_0) -> (M_C, S_C)


def step_factors(eta: torch.Tensor, c: ChunkCoeffs, p: ChunkCoeffs, momentum: bool) -> StepFactors:
    """Factors of full chunks from eta (..., C), c = chunk_coeffs(alpha, beta), p = shift_prev(c).
    Computed once for all chunks, so a loop over chunks only slices them."""
    e = eta.unsqueeze(-2)  # (..., 1, C): eta_s along the columns
    pK, cK = p.K * e, c.K * e  # (..., C, C)
    if not momentum:
        return StepFactors(pK, cK, p.A[..., None], c.A[..., None], -cK[..., -1, :, None],
                           c.A[..., -1, None, None])
    end = torch.stack([c.A[..., -1], c.P[..., -1], torch.zeros_like(c.A[..., -1]), c.Bc[..., -1]], -1)
    return StepFactors(pK, cK, torch.stack([p.A, p.P], -1), torch.stack([c.A, c.P], -1),
                       -torch.stack([cK[..., -1, :], c.Db[..., -1, :] * eta], -1), end.unflatten(-1, (2, 2)))
