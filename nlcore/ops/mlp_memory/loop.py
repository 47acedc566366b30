r"""The MLP memory's sequential loop over chunks as one fused op (forward and backward).

`chunk.chunk_path` computes everything that does not depend on a chunk's start state at once;
what remains is the loop over the N chunks. Its state is m channels (θ − θ_a, and the momentum
S with momentum), X1 (m, h, d) shaped like W1 and X2 (m, d, h) like W2. Chunk n, from its start
X (W = X[0] + θ_a, or X[0] without an anchor), with k, kv = k − v (C, d), the end-state weights of
its tokens u (C, m) and the map of its start onto its end mix (m, m):

    z = k W1ᵀ,  a = σ(z),  e = a W2ᵀ + kv,  g = e W2,  δ = g ⊙ σ'(z)          (C, h), (C, d)
    X1'[i] = Σ_j mix[i, j] X1[j] + (u_i ⊙ δ)ᵀ k,    X2'[i] = Σ_j mix[i, j] X2[j] + (u_i ⊙ e)ᵀ a

The op returns every chunk's start and the final state, S1 (N + 1, m, h, d), S2 (N + 1, m, d, h),
and each chunk's (e, a, δ), from which `chunk.chunk_path` computes all reads at once.

Backward, in reverse over the chunks, with G = ∂L/∂X' (the end state's gradient, m channels) and
ē, ā, δ̄ the reads' gradients on the chunk's (e, a, δ):

    P1_i = k G1_iᵀ,  P2_i = a G2_iᵀ                                            (C, h), (C, d)
    δ̄ += Σ_i u_i ⊙ P1_i,   ē += Σ_i u_i ⊙ P2_i,   ū_i = rowsum(δ ⊙ P1_i + e ⊙ P2_i)
    ḡ = δ̄ ⊙ σ'(z),   ē += ḡ W2ᵀ,   ā += Σ_i (u_i ⊙ e) G2_i + ē W2
    z̄ = ā ⊙ σ'(z) + δ̄ ⊙ g ⊙ σ''(z),   σ''(z) = s (1 − s) (2 + z (1 − 2 s)),  s = sigmoid(z)
    k̄ = z̄ W1 + Σ_i (u_i ⊙ δ) G1_i,   (kv)̄ = ē,   mix̄[i, j] = ⟨G1_i, X1[j]⟩ + ⟨G2_i, X2[j]⟩
    W̄1 = z̄ᵀ k,   W̄2 = eᵀ ḡ + ēᵀ a
    ∂L/∂X[j] = Σ_i mix[i, j] G_i + (the start's own gradient) + [j = 0] W̄,   θ̄_a = Σ_n W̄

Two implementations of the same ops, `nlcore::mlp_loop_fwd` and `nlcore::mlp_loop_bwd` (opaque to
torch.compile): on a CUDA device with Triton, float32, and C, d, h powers of two in [16, 128], Triton
kernels, a few launches per chunk, each over many small programs (`kernels.py`: forward 2 per
chunk, backward 4 per chunk for what the state's gradient needs, then k̄ and ū for all chunks at
once), instead of the PyTorch loop's ~15 matmuls per chunk and the pointwise kernels between them;
elsewhere the loops below in PyTorch. Tested against autograd through the plain loop
(tests/ops/test_mlp_memory_loop.py, float64 gradcheck) and the kernels against the float64
PyTorch loops (Triton's interpreter on CPU, and CUDA).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from nlcore.ops.mlp_memory.naive import cap_factor, factors, silu_grad
from nlcore.ops.triangular import triton_available

KERNEL_SIZES = (16, 32, 64, 128)  # C, d and h the Triton kernels take

# The Triton kernels' settings, read at every launch (tests and probes set them; rerun the CUDA
# tests after changing one). The defaults took the least time of those measured: results/bench/profiles/NOTE.md.
PRECISION = "tf32x3"  # tl.dot's input precision: three TF32 tensor-core products ("ieee": exact float32 on FMA units)
BLOCK = 16  # tokens per program in the token kernels
ROWS = 32  # state rows per program in the state kernels
WARPS = 4  # warps per program
TAIL = (16, 1)  # hidden units per step and warps of `bwd_tail` (k̄ and ū after the loop)


def silu_grad2(z: Tensor) -> Tensor:
    """σ''(z) = s (1 − s) (2 + z (1 − 2 s)), s = sigmoid(z)."""
    s = torch.sigmoid(z)
    return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


def add_anchor(x: Tensor, a: Tensor | None) -> Tensor:
    """x + a, or x without an anchor (a = None): the weights from channel 0 of the state."""
    return x if a is None else x + a


def _mix(mix: Tensor, X: Tensor) -> Tensor:
    """Σ_j mix[i, j] X[j]: mix (B, H, m, m), X (B, H, m, r, c) -> (B, H, m, r, c)."""
    return (mix[..., None, None] * X.unsqueeze(2)).sum(3)


def _outer(x: Tensor, u: Tensor, y: Tensor) -> Tensor:
    """(u_i ⊙ x)ᵀ y for every channel i: x (B, H, C, r), u (B, H, C, m), y (B, H, C, c) -> (B, H, m, r, c)."""
    return ((u.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2).mT @ y).unflatten(2, (u.shape[-1], x.shape[-1]))


def forward_torch(X1, X2, k, kv, u, mix, a1, a2, normalize: bool = False, bound: Tensor | None = None,
                  grad_chunks: int = 0):
    """The loop in PyTorch (shapes as in `mlp_loop_fwd`); through autograd, the plain reference graph.
    normalize: the normalised gradient factors (`naive.factors`), which only this path computes.
    bound: every chunk's end state scaled by `naive.cap_factor` of its channel 0 (θ − θ_a), all
    channels alike (also only this path). grad_chunks k > 0 (also only this path): the write of
    every chunk n > 0 with n % k == 0 starts from its start state detached, so a gradient crosses at
    most k writes; the returned starts S1[n], S2[n] stay attached, so that chunk's reads still reach
    the writes before it (`naive.token_path` defines the same)."""
    S1, S2, out = [X1], [X2], []
    for n, (kn, kvn, un, mn) in enumerate(zip(*(x.unbind(2) for x in (k, kv, u, mix)))):  # one node per input
        if grad_chunks > 0 and n > 0 and n % grad_chunks == 0:
            X1, X2 = X1.detach(), X2.detach()  # θ − θ_a and the momenta; the anchor is added back attached
        e, a, delta = factors(add_anchor(X1[:, :, 0], a1), add_anchor(X2[:, :, 0], a2), kn, kvn,
                              normalize)  # at the start
        out.append((e, a, delta))
        X1 = _mix(mn, X1) + _outer(delta, un, kn)  # (B, H, m, h, d)
        X2 = _mix(mn, X2) + _outer(e, un, a)  # (B, H, m, d, h)
        if bound is not None:
            f = cap_factor(X1[:, :, 0], X2[:, :, 0], bound).unsqueeze(2)  # (B, H, 1, 1, 1)
            X1, X2 = f * X1, f * X2
        S1.append(X1)
        S2.append(X2)
    e, a, delta = (torch.stack(x, 2) for x in zip(*out))
    return torch.stack(S1, 2), torch.stack(S2, 2), e, a, delta


def backward_torch(S1, S2, k, u, mix, a1, a2, e, a, delta, gS1, gS2, ge_r, ga_r, gd_r):
    """The reverse loop in PyTorch (shapes as in `mlp_loop_bwd`)."""
    G1, G2 = gS1[:, :, -1], gS2[:, :, -1]  # the final state's gradient: (B, H, m, h, d), (B, H, m, d, h)
    out, gA1, gA2 = [], torch.zeros_like(G1[:, :, 0]), torch.zeros_like(G2[:, :, 0])
    for n in reversed(range(k.shape[2])):
        X1, X2, kn, en, an, dn = S1[:, :, n], S2[:, :, n], k[:, :, n], e[:, :, n], a[:, :, n], delta[:, :, n]
        W1, W2 = add_anchor(X1[:, :, 0], a1), add_anchor(X2[:, :, 0], a2)
        z = kn @ W1.mT
        d1, d2 = silu_grad(z), silu_grad2(z)
        uT = u[:, :, n].mT.unsqueeze(-1)  # (B, H, m, C, 1)
        P1, P2 = kn.unsqueeze(2) @ G1.mT, an.unsqueeze(2) @ G2.mT  # (B, H, m, C, h), (B, H, m, C, d)
        gdel = gd_r[:, :, n] + (uT * P1).sum(2)
        gu = (dn.unsqueeze(2) * P1).sum(-1) + (en.unsqueeze(2) * P2).sum(-1)  # (B, H, m, C)
        gg = gdel * d1
        ge = ge_r[:, :, n] + (uT * P2).sum(2) + gg @ W2.mT
        ga = ga_r[:, :, n] + ((uT * en.unsqueeze(2)) @ G2).sum(2) + ge @ W2
        gz = ga * d1 + gdel * (en @ W2) * d2
        gk = gz @ W1 + ((uT * dn.unsqueeze(2)) @ G1).sum(2)
        gmix = (G1.unsqueeze(3) * X1.unsqueeze(2)).sum((-1, -2)) + (G2.unsqueeze(3) * X2.unsqueeze(2)).sum((-1, -2))
        gW1, gW2 = gz.mT @ kn, en.mT @ gg + ge.mT @ an
        gA1, gA2 = gA1 + gW1, gA2 + gW2
        out.append((gk, ge, gu.mT, gmix))
        G1 = _mix(mix[:, :, n].mT, G1) + gS1[:, :, n]
        G2 = _mix(mix[:, :, n].mT, G2) + gS2[:, :, n]
        G1 = torch.cat([G1[:, :, :1] + gW1.unsqueeze(2), G1[:, :, 1:]], 2)
        G2 = torch.cat([G2[:, :, :1] + gW2.unsqueeze(2), G2[:, :, 1:]], 2)
    gk, gkv, gu, gmix = (torch.stack(x[::-1], 2) for x in zip(*out))
    return G1, G2, gk, gkv, gu, gmix, gA1, gA2


def kernel_fits(X1: Tensor, k: Tensor) -> bool:
    """Whether the Triton kernels take these shapes: X1 (B, H, m, h, d) and k (B, H, N, C, d) on CUDA,
    float32, C, d, h in KERNEL_SIZES, m <= 2."""
    C, d, h, m = k.shape[-2], k.shape[-1], X1.shape[-2], X1.shape[2]
    return (X1.is_cuda and triton_available() and X1.dtype == torch.float32 and m <= 2
            and all(s in KERNEL_SIZES for s in (C, d, h)))


@functools.lru_cache(maxsize=1)
def _kernels():
    """The Triton kernels (`kernels.py`, imported on first use: Triton is optional)."""
    from nlcore.ops.mlp_memory import kernels

    return kernels


def _settings(X1, k, anchored):
    B, H, m, h, d = X1.shape
    C = k.shape[3]
    bc, br1, br2 = min(BLOCK, C), min(ROWS, h), min(ROWS, d)
    const = dict(M=m, C=C, D=d, HD=h, PREC=PRECISION, num_warps=WARPS, num_stages=1)
    tokens = dict(const, BC=bc, ANCHOR=anchored)
    return dict(tokens=((B * H, C // bc), tokens), units=((B * H, C // bc, h // br1), dict(tokens, BU=br1)),
                outputs=((B * H, C // bc, d // br2), dict(tokens, BD=br2)),
                state=((B * H, m, h // br1 + d // br2), dict(const, BR1=br1, BR2=br2)))


def _anchors(a1, a2, B, H, h, d, like):
    if a1 is None:
        return like, like, False
    return a1.expand(B, H, h, d).contiguous(), a2.expand(B, H, d, h).contiguous(), True


def forward_triton(X1, X2, k, kv, u, mix, a1, a2):
    """The loop as two kernel launches per chunk (tokens, then state); shapes as in `mlp_loop_fwd`."""
    B, H, m, h, d = X1.shape
    N, C = k.shape[2], k.shape[3]
    S1, S2 = X1.new_empty(B, H, N + 1, m, h, d), X1.new_empty(B, H, N + 1, m, d, h)
    S1[:, :, 0], S2[:, :, 0] = X1, X2
    e, a, delta = X1.new_empty(B, H, N, C, d), X1.new_empty(B, H, N, C, h), X1.new_empty(B, H, N, C, h)
    A1, A2, anchored = _anchors(a1, a2, B, H, h, d, X1)
    k, kv, u, mix = (x.contiguous() for x in (k, kv, u, mix))
    kern, cfg = _kernels(), _settings(X1, k, anchored)
    (tg, tk), (sg, sk) = cfg["tokens"], cfg["state"]
    for n in range(N):
        kern.fwd_tokens[tg](S1, S2, k, kv, A1, A2, e, a, delta, n, N, **tk)
        kern.fwd_state[sg](S1, S2, k, e, a, delta, u, mix, n, N, **sk)
    return S1, S2, e, a, delta


def backward_triton(S1, S2, k, u, mix, a1, a2, e, a, delta, gS1, gS2, ge_r, ga_r, gd_r):
    """The reverse loop as four kernel launches per chunk, then one for k̄ and ū of all chunks; shapes as in
    `mlp_loop_bwd`."""
    B, H, N1, m, h, d = S1.shape
    N, C = N1 - 1, k.shape[3]
    S1, S2, k, u, mix, e, a, delta, gS1, gS2, ge_r, ga_r, gd_r = (  # the kernels index them contiguously,
        x.contiguous() for x in (S1, S2, k, u, mix, e, a, delta, gS1, gS2, ge_r, ga_r, gd_r))  # and the outputs
    G1, G2 = torch.empty_like(S1), torch.empty_like(S2)  # slot n: the gradient of chunk n's start
    G1[:, :, N], G2[:, :, N] = gS1[:, :, N], gS2[:, :, N]
    gdel, gg, z = (S1.new_empty(B, H, C, h) for _ in range(3))  # δ̄, ḡ, z of the current chunk
    gkv, gz = torch.empty_like(k), S1.new_empty(B, H, N, C, h)  # (kv)̄, z̄ of every chunk
    gA1, gA2 = S1.new_zeros(B, H, h, d), S1.new_zeros(B, H, d, h)
    A1, A2, anchored = _anchors(a1, a2, B, H, h, d, gA1)
    kern, cfg = _kernels(), _settings(S1[:, :, 0], k, anchored)
    (ug, uk), (og, ok), (sg, sk) = cfg["units"], cfg["outputs"], cfg["state"]
    gmix = S1.new_empty(B, H, N, sg[2], m, m)  # each state tile's share of mix̄
    for n in reversed(range(N)):
        kern.bwd_gdel[ug](S1, G1, k, u, A1, gd_r, gdel, gg, z, n, N, **uk)
        kern.bwd_ge[og](S2, G2, a, u, A2, ge_r, gg, gkv, n, N, **ok)
        kern.bwd_gz[ug](S2, G2, e, u, A2, ga_r, gkv, gdel, z, gz, n, N, **uk)
        kern.bwd_state[sg](S1, S2, gS1, gS2, G1, G2, mix, gmix, gA1, gA2, k, e, a, gkv, gz, gg, n, N, ANCHOR=anchored, **sk)
    gk, gu = torch.empty_like(k), torch.empty_like(u)  # k̄, ū for all chunks at once, after the loop
    tail = dict(uk, BU=min(TAIL[0], h), num_warps=TAIL[1])
    kern.bwd_tail[(B * H, N, C // uk["BC"])](S1, G1, G2, k, u, A1, e, a, delta, gz, gk, gu, N, **tail)
    return G1[:, :, 0], G2[:, :, 0], gk, gkv, gu, gmix.sum(3), gA1, gA2


@torch.library.custom_op("nlcore::mlp_loop_fwd", mutates_args=())
def mlp_loop_fwd(X1: Tensor, X2: Tensor, k: Tensor, kv: Tensor, u: Tensor, mix: Tensor,
                 a1: Tensor | None, a2: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """X1 (B, H, m, h, d), X2 (B, H, m, d, h); k, kv (B, H, N, C, d); u (B, H, N, C, m); mix (B, H, N, m, m);
    anchors a1 (h, d), a2 (d, h) broadcastable to (B, H, ·, ·), or None; N >= 1 ->
    S1 (B, H, N + 1, m, h, d), S2 (B, H, N + 1, m, d, h), e (B, H, N, C, d), a, δ (B, H, N, C, h)."""
    if kernel_fits(X1, k):
        return forward_triton(X1, X2, k, kv, u, mix, a1, a2)
    return tuple(x.contiguous() for x in forward_torch(X1, X2, k, kv, u, mix, a1, a2))


@mlp_loop_fwd.register_fake
def _(X1, X2, k, kv, u, mix, a1, a2):
    B, H, m, h, d = X1.shape
    N, C = k.shape[2], k.shape[3]
    return (X1.new_empty(B, H, N + 1, m, h, d), X1.new_empty(B, H, N + 1, m, d, h), X1.new_empty(B, H, N, C, d),
            X1.new_empty(B, H, N, C, h), X1.new_empty(B, H, N, C, h))


@torch.library.custom_op("nlcore::mlp_loop_bwd", mutates_args=())
def mlp_loop_bwd(S1: Tensor, S2: Tensor, k: Tensor, u: Tensor, mix: Tensor, a1: Tensor | None, a2: Tensor | None,
                 e: Tensor, a: Tensor, delta: Tensor, gS1: Tensor, gS2: Tensor, ge: Tensor, ga: Tensor,
                 gd: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of `mlp_loop_fwd`'s inputs (X1, X2, k, kv, u, mix, and a1, a2 per (B, H): zeros without
    anchors) from its saved outputs and their gradients."""
    loop = backward_triton if kernel_fits(S1[:, :, 0], k) else backward_torch
    return tuple(x.contiguous() for x in loop(S1, S2, k, u, mix, a1, a2, e, a, delta, gS1, gS2, ge, ga, gd))


@mlp_loop_bwd.register_fake
def _(S1, S2, k, u, mix, a1, a2, e, a, delta, gS1, gS2, ge, ga, gd):
    B, H, _, m, h, d = S1.shape
    fresh = [x.new_empty(x.shape) for x in (k, k, u, mix)]  # contiguous, as the real kernel returns them
    return (S1.new_empty(B, H, m, h, d), S1.new_empty(B, H, m, d, h), *fresh, S1.new_empty(B, H, h, d),
            S1.new_empty(B, H, d, h))


def _setup(ctx, inputs, output):
    X1, X2, k, kv, u, mix, a1, a2 = inputs
    S1, S2, e, a, delta = output
    ctx.save_for_backward(S1, S2, k, u, mix, a1, a2, e, a, delta)


def _backward(ctx, gS1, gS2, ge, ga, gd):
    S1, S2, k, u, mix, a1, a2, e, a, delta = ctx.saved_tensors
    grads = [torch.zeros_like(x) if g is None else g.contiguous()  # contiguous here, fused into their producers
             for g, x in zip((gS1, gS2, ge, ga, gd), (S1, S2, e, a, delta))]
    gX1, gX2, gk, gkv, gu, gmix, gA1, gA2 = mlp_loop_bwd(S1, S2, k, u, mix, a1, a2, e, a, delta, *grads)
    ga1 = None if a1 is None else gA1.sum_to_size(a1.shape)
    ga2 = None if a2 is None else gA2.sum_to_size(a2.shape)
    return gX1, gX2, gk, gkv, gu, gmix, ga1, ga2


mlp_loop_fwd.register_autograd(_backward, setup_context=_setup)
