r"""The MLP memory's loop over chunks (`nlcore.memory.mlp`), with a hand-written backward.

The loop carries the memory's state transposed, V1 = W1ᵀ (d, h) and V2 = W2ᵀ (h, d), in m
channels (θ − θ_a, and the momentum S when there is one), interleaved: X1 (B, H, d, m, h),
X2 (B, H, h, m, d), so that kᵀ [u_1 δ, .., u_m δ] is X1's layout and the reads contract over
(d, channel) without copies.
Chunk n, from its start X (V = X[0] + the anchor θ_a, or X[0] without one):

    z = k V1,   a = σ(z),   e = a V2 + (k − v),   g = e V2ᵀ,   δ = g ⊙ σ'(z)       (C, h), (C, d)
    X1'[i] = Σ_j mix[i, j] X1[j] + kᵀ diag(u_i) δ,    X2'[i] = Σ_j mix[i, j] X2[j] + aᵀ diag(u_i) e

with u (C, m) the weights of the chunk's tokens in its end state and mix (m, m) the map of the
start onto the end (`mlp._chunk_path` builds both from the gates). The forward returns every
chunk's start and its (e, a, δ), from which `mlp._chunk_path` computes all reads at once.

Backward. Autograd would replay the reverse of every loop operation inside the reverse loop; only
the state's gradient has to travel from chunk to chunk, so only what it needs is there. For chunk
n, with G = ∂L/∂X' (its end state) and ē, ā, δ̄ the reads' gradients on its (e, a, δ):

    P1_i = k G1_i,   P2_i = a G2_i                                             (C, h), (C, d)
    δ̄ += Σ_i u_i ⊙ P1_i,       ḡ = δ̄ ⊙ σ'(z)
    ē += Σ_i u_i ⊙ P2_i + ḡ V2
    ā += Σ_i (u_i ⊙ e) G2_iᵀ + ē V2ᵀ
    z̄ = ā ⊙ σ'(z) + δ̄ ⊙ g ⊙ σ''(z),       σ''(z) = s (1 − s) (2 + z (1 − 2 s)),  s = sigmoid(z)
    ∂L/∂X1[j] = Σ_i mix[i, j] G1_i + [j = 0] kᵀ z̄  (+ the reads' gradient on the start)
    ∂L/∂X2[j] = Σ_i mix[i, j] G2_i + [j = 0] (aᵀ ē + ḡᵀ e)
    ū_i = rowsum(δ ⊙ P1_i) + rowsum(e ⊙ P2_i)

What the next chunk's G does not need follows for all chunks at once afterwards, as do z, σ', σ''
and g (recomputed from the saved starts):

    k̄ = z̄ V1ᵀ + Σ_i (u_i ⊙ δ) G1_iᵀ,    (k − v)̄ = ē,    mix̄[i, j] = ⟨G1_i, X1[j]⟩ + ⟨G2_i, X2[j]⟩

Tested against the token reference (tests/test_memory_mlp.py, forward and backward, float64 to
1e-10) and by gradcheck (tests/test_memory_mlp_loop.py). The backward is first-order only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def silu_grads(z: Tensor) -> tuple[Tensor, Tensor]:
    """σ'(z) and σ''(z) for σ(z) = z sigmoid(z)."""
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s)), s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


def factors(V1: Tensor, V2: Tensor, k: Tensor, kv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rank-1 factors of ∇ℓ at θ = (W1, W2) = (V1ᵀ, V2ᵀ) for C tokens: ∇W2_s = e_s a_sᵀ, ∇W1_s = δ_s k_sᵀ.

    V1 (..., d, h), V2 (..., h, d), k, kv = k − v (..., C, d) -> e (..., C, d), a (..., C, h), δ (..., C, h).
    """
    z = k @ V1  # z = W1 k: (..., C, h)
    a = F.silu(z)  # a = σ(z)
    e = a @ V2 + kv  # e = M(k) − v = W2 a + (k − v): (..., C, d)
    s = torch.sigmoid(z)
    delta = (e @ V2.transpose(-1, -2)) * (s * (1.0 + z * (1.0 - s)))  # δ = (W2ᵀ e) ⊙ σ'(z): (..., C, h)
    return e, a, delta


def _plus(x: Tensor, a: Tensor | None) -> Tensor:
    return x if a is None else x + a


def _mix(mix: Tensor, X: Tensor) -> Tensor:
    """Σ_j mix[i, j] X[j] on the channel axis: mix (B, H, m, m), X (B, H, r, m, c) -> (B, H, r, m, c)."""
    return (mix[:, :, None, :, :, None] * X.unsqueeze(-3)).sum(-2)


def _mix_t(mix: Tensor, G: Tensor) -> Tensor:
    """Σ_i mix[i, j] G[i] (the transpose of `_mix`): -> (B, H, r, m, c)."""
    return (mix[:, :, None, :, :, None] * G.unsqueeze(-2)).sum(-3)


def _outer(x: Tensor, u: Tensor, y: Tensor) -> Tensor:
    """xᵀ diag(u_i) y for every channel i as one matmul over the chunk: x (B, H, C, r), u (B, H, C, m),
    y (B, H, C, c) -> (B, H, r, m, c)."""
    return (x.transpose(-1, -2) @ (u.unsqueeze(-1) * y.unsqueeze(-2)).flatten(-2)).unflatten(-1, u.shape[-1:] + y.shape[-1:])


def _inner(G: Tensor, X: Tensor) -> Tensor:
    """⟨G_i, X_j⟩ for every pair of channels: G, X (..., r, m, c) -> (..., m, m). A reduction, not a matmul:
    as a matmul its output is m x m with an inner size r·c, which cuBLAS runs as a slow gemv."""
    return (G.unsqueeze(-2) * X.unsqueeze(-3)).sum((-4, -1))


def _add0(X: Tensor, x: Tensor) -> Tensor:
    """X with x added to channel 0: X (B, H, r, m, c), x (B, H, r, c)."""
    return torch.cat([X[:, :, :, :1] + x.unsqueeze(-2), X[:, :, :, 1:]], dim=-2)


class ChunkLoop(torch.autograd.Function):
    """(X1, X2, k, kv, u, mix, a1, a2) -> (starts1, starts2, e, a, δ, X1_end, X2_end).

    Channels interleaved so that every contraction is a matmul on a view: X1 (B, H, d, m, h) (channel j
    is X1[:, :, :, j], V1-shaped), X2 (B, H, h, m, d); k, kv (B, H, N, C, d); u (B, H, N, C, m); mix
    (B, H, N, m, m); a1 (d, h), a2 (h, d) transposed anchors broadcastable to (B, H, ·, ·), or None.
    starts (B, H, N, ·, m, ·): each chunk's start; e (B, H, N, C, d), a, δ (B, H, N, C, h) at that start."""

    @staticmethod
    def forward(ctx, X1, X2, k, kv, u, mix, a1, a2):
        starts, out = [], []
        for n in range(k.shape[2]):  # the only sequential part: each chunk needs its start
            kn, un = k[:, :, n], u[:, :, n]
            e, a, delta = factors(_plus(X1[:, :, :, 0], a1), _plus(X2[:, :, :, 0], a2), kn, kv[:, :, n])
            starts.append((X1, X2))
            out.append((e, a, delta))
            X1 = _mix(mix[:, :, n], X1) + _outer(kn, un, delta)
            X2 = _mix(mix[:, :, n], X2) + _outer(a, un, e)
        S1, S2 = (torch.stack(x, 2) for x in zip(*starts))
        e, a, delta = (torch.stack(x, 2) for x in zip(*out))
        ctx.save_for_backward(S1, S2, k, u, mix, e, a, delta, a1, a2)
        return S1, S2, e, a, delta, X1, X2

    @staticmethod
    def backward(ctx, gS1, gS2, ge_r, ga_r, gd_r, G1, G2):
        S1, S2, k, u, mix, e, a, delta, a1, a2 = ctx.saved_tensors
        at = lambda x: None if x is None else x.unsqueeze(-3)  # noqa: E731  anchor beside the chunk axis
        V1, V2 = _plus(S1[..., 0, :], at(a1)), _plus(S2[..., 0, :], at(a2))  # (B, H, N, d, h), (.., h, d)
        z = k @ V1  # (B, H, N, C, h)
        d1, d2 = silu_grads(z)
        gd2 = (e @ V2.transpose(-1, -2)) * d2  # g ⊙ σ''(z)
        ue = (u.unsqueeze(-1) * e.unsqueeze(-2)).flatten(-2)  # [u_i e]: (B, H, N, C, m·d)
        gV1_sum = gV2_sum = 0.0
        saved = []
        for n in reversed(range(k.shape[2])):
            kn, an, en, un, V2n = k[:, :, n], a[:, :, n], e[:, :, n], u[:, :, n, :, :, None], V2[:, :, n]
            P1 = (kn @ G1.flatten(-2)).unflatten(-1, G1.shape[-2:])  # k G1_i: (B, H, C, m, h)
            P2 = (an @ G2.flatten(-2)).unflatten(-1, G2.shape[-2:])  # a G2_i: (B, H, C, m, d)
            gdel = gd_r[:, :, n] + (un * P1).sum(-2)  # (B, H, C, h)
            gg = gdel * d1[:, :, n]
            ge = ge_r[:, :, n] + (un * P2).sum(-2) + gg @ V2n  # (B, H, C, d)
            ga = ga_r[:, :, n] + ue[:, :, n] @ G2.flatten(-2).transpose(-1, -2) + ge @ V2n.transpose(-1, -2)
            gz = ga * d1[:, :, n] + gdel * gd2[:, :, n]  # (B, H, C, h)
            gV1 = kn.transpose(-1, -2) @ gz  # (B, H, d, h)
            gV2 = an.transpose(-1, -2) @ ge + gg.transpose(-1, -2) @ en  # (B, H, h, d)
            gu = (delta[:, :, n].unsqueeze(-2) * P1).sum(-1) + (en.unsqueeze(-2) * P2).sum(-1)  # (B, H, C, m)
            saved.append((gz, ge, gu, G1, G2))
            G1 = _add0(_mix_t(mix[:, :, n], G1) + gS1[:, :, n], gV1)
            G2 = _add0(_mix_t(mix[:, :, n], G2) + gS2[:, :, n], gV2)
            if a1 is not None:
                gV1_sum, gV2_sum = gV1_sum + gV1, gV2_sum + gV2
        gz, ge, gu, Ge1, Ge2 = (torch.stack(x[::-1], 2) for x in zip(*saved))  # per chunk, in order
        ud = (u.unsqueeze(-1) * delta.unsqueeze(-2)).flatten(-2)  # [u_i δ]: (B, H, N, C, m·h)
        gk = gz @ V1.transpose(-1, -2) + ud @ Ge1.flatten(-2).transpose(-1, -2)  # z̄ V1ᵀ + Σ_i (u_i ⊙ δ) G1_iᵀ
        gmix = _inner(Ge1, S1) + _inner(Ge2, S2)  # (B, H, N, m, m)
        ga1 = None if a1 is None else gV1_sum.sum_to_size(a1.shape)
        ga2 = None if a2 is None else gV2_sum.sum_to_size(a2.shape)
        return G1, G2, gk, ge, gu, gmix, ga1, ga2


__all__ = ["ChunkLoop", "factors", "silu_grads"]
