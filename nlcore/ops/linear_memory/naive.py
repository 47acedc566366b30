r"""The linear memory's definition: the gated delta rule with momentum, one token at a time.

Titans (Behrouz et al., 2025) §3.1 (surprise with momentum and a forget gate) with a linear
memory; Nested Learning (Behrouz et al., NeurIPS 2025) §2.3, Eqs. 27–29 (the delta / DGD step).

Per head, a matrix memory M (dv, dk) is written once per token t = 1..T by one gradient step on
½‖M k_t − v_t‖², the gradient taken at the CURRENT state M_{t-1}, and then read:

    G_t = M_{t-1} k_t − v_t                   prediction error             (dv)
    U_t = −η_t G_t k_tᵀ                       gradient step                (dv, dk)
    S_t = β_t S_{t-1} + U_t                   momentum ("surprise")       (without: S_t = U_t)
    M_t = α_t M_{t-1} + S_t                   forget gate α, write
    y_t = M_t q_t                             read AFTER the write

With ‖k_t‖ = 1, η_t ∈ (0, 1), α = 1 and no momentum this is the normalised delta rule, the
paper's DGD step  M_t = M_{t-1}(I − η k kᵀ) + η v kᵀ.
"""

from __future__ import annotations

import torch


def token_path(q, k, v, eta, alpha, beta, M, S):
    """The recurrence above, token by token: q, k (B, H, T, dk), v (B, H, T, dv), gates (B, H, T)
    (beta None: no momentum), M, S (B, H, dv, dk), all in the compute dtype. Returns (y, M_T, S_T)."""
    # unbind once: slicing inside the loop would make autograd build a full-size zero gradient
    # per token (O(T²) memory traffic in backward)
    qs, ks, vs = q.unbind(2), k.unbind(2), v.unbind(2)  # T x (B, H, d)
    es, als = eta[..., None, None].unbind(2), alpha[..., None, None].unbind(2)  # T x (B, H, 1, 1)
    bs = None if beta is None else beta[..., None, None].unbind(2)
    ys = []
    for t in range(q.shape[2]):
        G = (M @ ks[t][..., None]).squeeze(-1) - vs[t]  # M_{t-1} k_t − v_t: (B, H, dv)
        U = -es[t] * G[..., :, None] * ks[t][..., None, :]  # −η_t G_t k_tᵀ: (B, H, dv, dk)
        S = U if bs is None else bs[t] * S + U  # S_t = β_t S_{t-1} + U_t (no momentum: U_t)
        M = als[t] * M + S  # M_t = α_t M_{t-1} + S_t
        ys.append((M @ qs[t][..., None]).squeeze(-1))  # y_t = M_t q_t: (B, H, dv)
    y = torch.stack(ys, dim=2) if ys else v.new_zeros(v.shape)  # (B, H, T, dv)
    return y, M, (None if beta is None else S)
