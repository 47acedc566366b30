r"""The MLP memory's definition: Titans' 2-layer residual MLP written token by token.

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

With an anchor θ_a (retention toward it instead of toward zero) the write is
θ_t = α_t θ_{t-1} + (1 − α_t) θ_a + S_t, i.e. θ_t − θ_a follows the recurrence above.

The gradients are explicit (first-order: formulas, not `torch.autograd.grad`): with z = W1 k,
a = σ(z), e = M(k) − v,

    ∇W2 = e aᵀ,    δ = (W2ᵀ e) ⊙ σ'(z),    ∇W1 = δ kᵀ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def silu_grad(z: Tensor) -> Tensor:
    """σ'(z) for σ(z) = z sigmoid(z): s (1 + z (1 − s)), s = sigmoid(z)."""
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def factors(W1: Tensor, W2: Tensor, k: Tensor, kv: Tensor,
            normalize: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-1 factors of the inner loss's gradient at θ = (W1, W2) for C tokens,
    ∇W2_s = e_s a_sᵀ, ∇W1_s = δ_s k_sᵀ. W1 (..., h, d), W2 (..., d, h), k, kv = k − v (..., C, d)
    -> e (..., C, d), a (..., C, h), δ (..., C, h).

    normalize: both gradients divided by c_s = 1 + |a_s|² + Σ_j σ'(z_sj)² |W2[:, j]|² |k_s|². With J
    the Jacobian of M(k_s) in θ, J Jᵀ = |a_s|² I + |k_s|² W2 diag(σ'²) W2ᵀ, so c_s − 1 bounds its
    largest eigenvalue (the W1 part by its trace): a step of η_s then moves M(k_s) toward v_s by at
    most about η_s |e_s| (normalised LMS)."""
    z = k @ W1.mT  # z = W1 k: (..., C, h)
    a = F.silu(z)  # a = σ(z)
    e = a @ W2.mT + kv  # e = M(k) − v = W2 a + (k − v): (..., C, d)
    g = silu_grad(z)  # σ'(z)
    delta = (e @ W2) * g  # δ = (W2ᵀ e) ⊙ σ'(z): (..., C, h)
    if normalize:
        c = 1.0 + (a * a).sum(-1, keepdim=True) + (g * g) @ (W2 * W2).sum(-2).unsqueeze(-1) * (k * k).sum(
            -1, keepdim=True)  # (..., C, 1)
        e, delta = e / c, delta / c
    return e, a, delta


def cap_factor(R1: Tensor, R2: Tensor, bound: Tensor) -> Tensor:
    """min(1, bound / |(R1, R2)|) per (row, head), the factor that brings the memory's distance from
    its anchor (or from zero without one), R = θ − θ_a, within `bound` (broadcastable to (B, H)).
    Written as bound / sqrt(max(|R|², bound²)), so the factor is exactly 1 with a zero gradient
    inside the bound, also at R = 0. R1 (B, H, h, d), R2 (B, H, d, h) -> (B, H, 1, 1)."""
    sq = (R1 * R1).sum((-1, -2)) + (R2 * R2).sum((-1, -2))
    b = torch.as_tensor(bound, dtype=sq.dtype, device=sq.device).expand_as(sq)
    return (b * torch.rsqrt(torch.maximum(sq, b * b)))[..., None, None]


def _cut(W1, W2, S1, S2, anchor):
    """The chunk-start state with its gradient path cut: the distance from the anchor (θ − θ_a, and
    the momenta) detached, the anchor itself kept; and the difference to the attached state (zero,
    carrying its gradient)."""
    a1, a2 = anchor if anchor is not None else (0.0, 0.0)
    D1, D2 = a1 + (W1 - a1).detach(), a2 + (W2 - a2).detach()
    T1, T2 = (None, None) if S1 is None else (S1.detach(), S2.detach())
    ghost = (W1 - D1, W2 - D2, None if S1 is None else S1 - T1, None if S2 is None else S2 - T2)
    return D1, D2, T1, T2, ghost


def token_chunk(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor=None, normalize: bool = False,
                cut: bool = False):
    """One chunk, token by token: q, k, v (B, H, C, d); gates (B, H, C) (beta None: no momentum);
    W1 (B, H, h, d), W2 (B, H, d, h) and momenta S1, S2 like them; anchor (W1a, W2a) or None.
    Returns (y (B, H, C, d), W1, W2, S1, S2) at the chunk's end.

    cut: the chunk's write starts from the state detached (`token_path`'s grad_chunks), so its end
    state carries no gradient to the chunk's start; the reads still reach the start through the
    weights' linear dependence on it (θ_t = A_t θ_0 + P_t S_0 + ...), carried by a zero-valued
    difference that follows the same recurrence without writes. The values do not change."""
    ghost = None
    if cut:
        W1, W2, S1, S2, ghost = _cut(W1, W2, S1, S2, anchor)
    e, a, delta = factors(W1, W2, k, k - v, normalize)  # the gradients' factors at θ_0 (chunk start)
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
        R1, R2 = W1, W2  # the weights the read uses
        if ghost is not None:  # the start's share of θ_t: ΔS_t = β_t ΔS_{t-1}, Δθ_t = α_t Δθ_{t-1} + ΔS_t
            G1, G2, H1, H2 = ghost
            if beta is not None:
                H1, H2 = b_t * H1, b_t * H2
                G1, G2 = a_t * G1 + H1, a_t * G2 + H2
            else:
                G1, G2 = a_t * G1, a_t * G2
            ghost = (G1, G2, H1, H2)
            R1, R2 = W1 + G1, W2 + G2
        q_t = q[..., t, :, None]  # (B, H, d, 1)
        y_t = q_t + R2 @ F.silu(R1 @ q_t)  # M_{θ_t}(q_t): (B, H, d, 1)
        ys.append(y_t.squeeze(-1))
    return torch.stack(ys, dim=-2), W1, W2, S1, S2


def token_path(q, k, v, eta, alpha, beta, W1, W2, S1, S2, anchor, chunk: int, normalize: bool = False,
               bound: Tensor | None = None, grad_chunks: int = 0):
    """The whole sequence, chunk after chunk of `chunk` tokens (the last may be shorter), each by
    `token_chunk`: q, k, v (B, H, T, d), the rest as there. Returns (y (B, H, T, d), W1, W2, S1, S2).
    bound (broadcastable to (B, H)) or None: at each chunk's end, θ − θ_a and the momenta are scaled
    by `cap_factor`, so the memory's distance from its anchor never exceeds `bound` there.
    grad_chunks k > 0: truncated backprop through the state; the write of every chunk n > 0 with
    n % k == 0 starts from the state detached (`token_chunk`'s cut), so a gradient crosses at most
    k writes; 0: the full graph. The values are the same either way."""
    T, ys = q.shape[2], []
    sizes = [min(chunk, T - t0) for t0 in range(0, T, chunk)]
    parts = [x.split(sizes, dim=2) for x in (q, k, v)]
    gates = [x.split(sizes, dim=-1) for x in (eta, alpha, beta if beta is not None else eta)]
    for n in range(len(sizes)):
        y, W1, W2, S1, S2 = token_chunk(parts[0][n], parts[1][n], parts[2][n], gates[0][n], gates[1][n],
                                        None if beta is None else gates[2][n], W1, W2, S1, S2, anchor, normalize,
                                        cut=grad_chunks > 0 and n > 0 and n % grad_chunks == 0)
        if bound is not None:
            a1, a2 = anchor if anchor is not None else (0.0, 0.0)
            f = cap_factor(W1 - a1, W2 - a2, bound)
            W1, W2 = a1 + f * (W1 - a1), a2 + f * (W2 - a2)
            S1, S2 = (None, None) if beta is None else (f * S1, f * S2)
        ys.append(y)
    y = torch.cat(ys, dim=2) if ys else q.clone()  # (B, H, T, d)
    return y, W1, W2, S1, S2
