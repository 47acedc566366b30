r"""The MLP memory, chunk-parallel: equal to `naive.token_path`, with a short sequential part.

Every update is a sum of rank-1 terms, so with the gates' coefficients (`gates.chunk_coeffs`)
θ_t = A_t θ_0 + P_t S_0 + Σ_{s≤t} K[t,s] U_s and the read needs no per-token weights:

    W1_t q_t = A_t W1_0 q_t + P_t S1_0 q_t − Σ_{s≤t} K[t,s] η_s (k_s·q_t) δ_s
    y_t      = q_t + A_t W2_0 a^q_t + P_t S2_0 a^q_t − Σ_{s≤t} K[t,s] η_s (a_s·a^q_t) e_s,
               a^q_t = σ(W1_t q_t)

and the chunk's end state is, with θ_a the anchor (0 without one),

    θ_C − θ_a = A_C (θ_0 − θ_a) + P_C S_0 − Σ_s K[C,s] η_s ∇_s,    S_C = Bc_C S_0 − Σ_s Db[C,s] η_s ∇_s.

What does not depend on the chunk-start state (the coefficients, K[t,s] η_s, the masked q·k
products, the end weights) is computed once for all N chunks, batched over a chunk axis; the loop
over chunks computes only (e, a, δ) at θ_0 and the end state (five matmuls: three for the factors,
one for W1 and S1 from the shared keys k, one for W2 and S2 from the shared a); the reads follow
for all chunks at once from the stacked chunk-start states and factors. A short last chunk is
padded with no-op tokens (η = 0, α = β = 1) and its end state is taken at its last real token.

The loop lives in `loop.py`: a plain autograd graph, or one op with a hand-written backward whose
Triton kernels take a few launches per chunk (`LOOP` below). Everything else is plain autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nlcore.ops.gates import chunk_coeffs
from nlcore.ops.mlp_memory.loop import add_anchor, forward_torch, kernel_fits, mlp_loop_fwd

# switch, read at every call (tests set it)
LOOPS = ("auto", "autograd", "op")
LOOP = "auto"  # the loop over chunks: "op" = loop.py's op, "autograd" = its plain graph, "auto" = the op where its kernels run


def use_op(X1: Tensor, k: Tensor) -> bool:
    """Whether `chunk_path` runs its loop over chunks as the `mlp_loop_fwd` op (see LOOP)."""
    if LOOP not in LOOPS:
        raise ValueError(f"nlcore.ops.mlp_memory.chunk.LOOP must be one of {LOOPS}, got {LOOP!r}")
    return LOOP == "op" or (LOOP == "auto" and kernel_fits(X1, k))


def _end_row(x: Tensor, r: int) -> Tensor:
    """Each chunk's coefficients at its last token: row C, and row r in the last chunk (its last real
    token, before the padding). x (B, H, N, C, ...) -> (B, H, N, ...)."""
    return torch.cat([x[:, :, :-1, -1], x[:, :, -1:, r - 1]], dim=2)


def chunk_path(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor, C: int, normalize: bool = False,
               bound: Tensor | None = None, grad_chunks: int = 0):
    """All chunks: the state-independent factors at once, a loop over chunks for the states, then
    the reads at once. q, k, v (B, H, T, d); gates (B, H, T) (beta None: no momentum); W1 (B, H, h, d),
    W2 (B, H, d, h), momenta S1, S2 like them; anchor (W1a, W2a) or None; C the chunk length;
    normalize: normalised gradient factors (`naive.factors`; the loop then runs in PyTorch).
    bound: the chunk-end cap of `naive.token_path` (the loop then runs in PyTorch).
    grad_chunks: the truncated backprop through the state of `naive.token_path` (likewise).
    Returns (y (B, H, T, d), W1, W2, S1, S2) at the end, as `naive.token_path`."""
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

    # the loop over chunks (loop.py): every chunk's start and the end state, S1s (B, H, N + 1, m, h, d),
    # S2s (B, H, N + 1, m, d, h); each chunk's factors at its start, e (B, H, N, C, d), a, δ (B, H, N, C, h)
    # contiguous here, where the compiler can make the producers write them so (the op would copy them)
    args = (X1, X2, k.contiguous(), (k - v).contiguous(), -w, mix, a1, a2)
    if normalize or bound is not None or grad_chunks:  # the op's kernels compute the plain loop only
        S1s, S2s, e, a, delta = forward_torch(*args, normalize=normalize, bound=bound, grad_chunks=grad_chunks)
    else:  # one fused op, or a plain autograd graph
        S1s, S2s, e, a, delta = (mlp_loop_fwd if use_op(X1, k) else forward_torch)(*args)
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
    return y, add_anchor(X1[:, :, 0], a1), add_anchor(X2[:, :, 0], a2), S1, S2
