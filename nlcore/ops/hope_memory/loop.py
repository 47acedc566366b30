r"""HOPE's chunk loop (the self-modifying memory's sequential part) as one fused op, forward and backward.

`chunk.hope_chunks` computes the gates' factors for all chunks at once and the reads after
the loop; what remains is the loop over the N chunks of C tokens. Per (row, head) its state is
Y (dv, m, dh): the rows of [M_mem; M_k; M_v] (dv = 3 dh) by m slots [D, S] (D = M − M_init,
S the momentum; m = 1 without momentum). Chunk n, from its start Y, with x (C, dh) its inputs,
init (dv, dh) = M_init, and the gates' factors pK (C, C) strictly lower, pc, ke (C, m), mix (m, m)
(signs as hope_chunks passes them: pc = −p.A|P of the write, ke = −the end-state weights):

    F_k = Y[dh:2dh, 0] + init_k,  F_v = Y[2dh:, 0] + init_v                    (dh, dh) each
    k = n(x F_kᵀ),  v = x F_vᵀ,  tg = [n(v), n(v F_kᵀ), n(v F_vᵀ)]            n: nlcore.ops.l2norm
    R = tg − k initᵀ + Σ_j pc_j ⊙ k Y_jᵀ                                      (C, dv)
    T = (I + pK ⊙ k kᵀ)^{-1},   G = T R                                        (C, dv)
    Y'_a = Σ_b mix[a, b] Y_b + Gᵀ (ke_a ⊙ k)                                   (dv, dh) per slot a

(G is minus the prediction errors; pc_j ⊙ k Y_jᵀ scales row t by pc[t, j].) The op returns every
chunk's start and the end state Ys (N + 1, dv, m, dh), and each chunk's k, G and T; the reads use
Ys[:N, :dh], k and G[..., :dh], and T is kept for the backward only (no gradient flows into it).

Backward, in reverse over the chunks, from the end state's gradient and the reads' gradients on
each chunk's start, k and G (Ȳ' the complete gradient of the chunk's end):

    Ḡ += Σ_a ke_a ⊙ k Ȳ'_aᵀ,   R̄ = Tᵀ Ḡ,   Ā = −R̄ Gᵀ,   p̄K = Ā ⊙ k kᵀ
    k̄ += Σ_a ke_a ⊙ G Ȳ'_a − R̄ init + Σ_j (pc_j ⊙ R̄) Y_j + (Ā ⊙ pK + (Ā ⊙ pK)ᵀ) k
    k̄e_a = rowsum(G Ȳ'_a ⊙ k),   p̄c_j = rowsum(R̄ ⊙ k Y_jᵀ),   m̄ix[a, b] = ⟨Ȳ'_a, Y_b⟩
    Ȳ_b += Σ_a mix[a, b] Ȳ'_a + (pc_b ⊙ R̄)ᵀ k,   īnit −= R̄ᵀ k,   t̄g = R̄
    then through the normalisations and the products with x: x̄, F̄_k, F̄_v; Ȳ[dh:, 0] += F̄, īnit[dh:] += F̄

Two implementations of the same ops, `nlcore::hope_loop_fwd` and `nlcore::hope_loop_bwd` (opaque to
torch.compile): on a CUDA device with Triton, float32, C = 64 and dh in (16, 32, 64), Triton kernels
(`kernels.py`: per chunk, forward one program per (row, head) for the keys, targets and T, then
programs over (row, head, block of state rows) for the state; backward programs over state rows,
then over (row, head, block of tokens), then a small one for F̄): 5 launches per chunk where the
compiled PyTorch loop takes tens, and the layer takes less time (results/bench/profiles/NOTE.md).
Elsewhere the loops below in PyTorch. `hope_chunks` uses the op only where the kernels run
(`chunk.FUSED`). Tested against autograd through `forward_torch` (float64) and through
hope_chunks' own loop, and the kernels against the float64 PyTorch loops (Triton's interpreter on
CPU, and CUDA): tests/ops/test_hope_memory_loop.py.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from nlcore.ops.l2norm import l2norm, l2norm_backward, l2norm_parts
from nlcore.ops.triangular import solve_unit_lower, triton_available

CHUNKS = (64,)  # the chunk lengths the kernels take (T's blocked inverse needs C = 4 B, B >= 16)
HEAD_DIMS = (16, 32, 64)  # the head sizes the kernels take (the keys' kernel holds (C, dh) tiles)

# The Triton kernels' settings, read at every launch (tests and probes set them). The defaults took
# the least time of those measured (results/bench/profiles/NOTE.md); 8 warps are not safe in these
# kernels (wrong results or illegal memory accesses at dh 16, the same NOTE): rerun the CUDA tests
# after a change.
PRECISION = "tf32x3"  # tl.dot's input precision (T's inverse is always "ieee")
ROWS = 32  # state rows per program in the state kernels (divides dh; tl.dot needs >= 16)
TOKENS = 16  # tokens per program in the backward's token kernel
STAGES = 2  # software-pipelining stages of that kernel's loop over the state rows
WARPS = (4, 4, 4)  # warps per program: the keys' kernel, the state kernels, the backward's token kernel


def _unit_grad(u: Tensor, g: Tensor) -> Tensor:
    """The gradient g through l2norm(u), its forward recomputed from u."""
    return l2norm_backward(g, *l2norm_parts(u))


def _keys(Y: Tensor, init: Tensor, xs: Tensor):
    """F_k, F_v (B, H, dh, dh) and the pre-normalisation products x F_kᵀ, x F_vᵀ, v F_kᵀ, v F_vᵀ (B, H, C, dh)."""
    dh = xs.shape[-1]
    Fk, Fv = Y[:, :, dh:2 * dh, 0] + init[:, dh:2 * dh], Y[:, :, 2 * dh:, 0] + init[:, 2 * dh:]
    kx, vx = xs @ Fk.mT, xs @ Fv.mT
    return Fk, Fv, kx, vx, vx @ Fk.mT, vx @ Fv.mT


def forward_torch(x, pK, pc, ke, mix, init, Y):
    """The loop in PyTorch (shapes as in `hope_loop_fwd`); through autograd, the reference graph."""
    N, C = x.shape[2], x.shape[3]
    Ys, Ks, Gs, Ts = [Y], [], [], []
    for n in range(N):
        _, _, kx, vx, mkv, mvv = _keys(Y, init, x[:, :, n])
        k = l2norm(kx)  # (B, H, C, dh)
        tg = torch.cat([l2norm(vx), l2norm(mkv), l2norm(mvv)], -1)  # (B, H, C, dv)
        R = tg - k @ init.mT + torch.einsum("bhcd,bhrjd,bhcj->bhcr", k, Y, pc[:, :, n])
        L = pK[:, :, n] * (k @ k.mT)
        T = solve_unit_lower(L, torch.eye(C, dtype=L.dtype, device=L.device).expand(L.shape))  # (I + L)^{-1}
        G = T @ R
        Y = torch.einsum("bhij,bhrjd->bhrid", mix[:, :, n], Y) + torch.einsum("bhcr,bhci,bhcd->bhrid", G, ke[:, :, n], k)
        Ys.append(Y)
        Ks.append(k)
        Gs.append(G)
        Ts.append(T)
    return tuple(torch.stack(t, 2) for t in (Ys, Ks, Gs, Ts))


def backward_torch(x, pK, pc, ke, mix, init, Ys, K, G, T, gYs, gK, gG):
    """The reverse loop in PyTorch (shapes as in `hope_loop_bwd`)."""
    N, dh = x.shape[2], x.shape[-1]
    gY = gYs[:, :, N]  # the complete gradient of the current chunk's end
    ginit = torch.zeros_like(init)
    out = []
    for n in reversed(range(N)):
        Y, k, Gn, Tn, pcn, ken = Ys[:, :, n], K[:, :, n], G[:, :, n], T[:, :, n], pc[:, :, n], ke[:, :, n]
        gGn = gG[:, :, n] + torch.einsum("bhca,bhcd,bhrad->bhcr", ken, k, gY)
        gR = Tn.mT @ gGn  # (B, H, C, dv)
        gkc = torch.einsum("bhcr,bhrad->bhcad", Gn, gY)  # G Ȳ'_a: (B, H, C, m, dh)
        gA = -gR @ Gn.mT
        gAp = gA * pK[:, :, n]
        gk = (gK[:, :, n] + torch.einsum("bhca,bhcad->bhcd", ken, gkc) - gR @ init
              + torch.einsum("bhcr,bhcj,bhrjd->bhcd", gR, pcn, Y) + (gAp + gAp.mT) @ k)
        gke = torch.einsum("bhcad,bhcd->bhca", gkc, k)
        gpc = torch.einsum("bhcr,bhcd,bhrjd->bhcj", gR, k, Y)
        gmix = torch.einsum("bhrid,bhrjd->bhij", gY, Y)
        gpK = (gA * (k @ k.mT)).tril(-1)  # only pK's strictly lower part enters
        gYn = (gYs[:, :, n] + torch.einsum("bhij,bhrid->bhrjd", mix[:, :, n], gY)
               + torch.einsum("bhcr,bhcj,bhcd->bhrjd", gR, pcn, k))
        ginit = ginit - torch.einsum("bhcr,bhcd->hrd", gR, k)
        xs = x[:, :, n]
        Fk, Fv, kx, vx, mkv, mvv = _keys(Y, init, xs)
        gkx = _unit_grad(kx, gk)
        gmkv, gmvv = _unit_grad(mkv, gR[..., dh:2 * dh]), _unit_grad(mvv, gR[..., 2 * dh:])
        gvx = _unit_grad(vx, gR[..., :dh]) + gmkv @ Fk + gmvv @ Fv
        gF = torch.cat([gmkv.mT @ vx + gkx.mT @ xs, gmvv.mT @ vx + gvx.mT @ xs], -2)  # F̄_k; F̄_v: (B, H, 2 dh, dh)
        gx = gkx @ Fk + gvx @ Fv
        gY = torch.cat([gYn[:, :, :dh], torch.cat([gYn[:, :, dh:, :1] + gF.unsqueeze(3), gYn[:, :, dh:, 1:]], 3)], 2)
        ginit = ginit + torch.cat([torch.zeros_like(init[:, :dh]), gF.sum(0)], 1)
        out.append((gx, gpK, gpc, gke, gmix))
    gx, gpK, gpc, gke, gmix = (torch.stack(t[::-1], 2) for t in zip(*out))
    return gx, gpK, gpc, gke, gmix, ginit, gY


def kernel_fits(x: Tensor) -> bool:
    """Whether the Triton kernels take these inputs: x (B, H, N, C, dh) on CUDA, float32, C in CHUNKS,
    dh in HEAD_DIMS."""
    return (x.is_cuda and triton_available() and x.dtype == torch.float32 and x.shape[3] in CHUNKS
            and x.shape[4] in HEAD_DIMS)


@functools.lru_cache(maxsize=1)
def _kernels():
    """The Triton kernels (`kernels.py`, imported on first use: Triton is optional)."""
    from nlcore.ops.hope_memory import kernels

    return kernels


def _settings(x: Tensor, m: int) -> tuple[dict, dict, int]:
    B, H, N, C, dh = x.shape
    br = min(ROWS, dh)
    const = dict(N=N, H=H, C=C, DH=dh, M=m, PREC=PRECISION, num_stages=1)
    return dict(const, num_warps=WARPS[0]), dict(const, BR=br, num_warps=WARPS[1]), 3 * dh // br


def forward_triton(x, pK, pc, ke, mix, init, Y):
    """The loop as two kernel launches per chunk (keys and T, then state); shapes as in `hope_loop_fwd`."""
    B, H, N, C, dh = x.shape
    m, dv, P = Y.shape[3], 3 * dh, B * H
    x, pK, pc, ke, mix, init = (t.contiguous() for t in (x, pK, pc, ke, mix, init))
    Ys = x.new_empty(B, H, N + 1, dv, m, dh)
    Ys[:, :, 0] = Y
    K, G, T = x.new_empty(B, H, N, C, dh), x.new_empty(B, H, N, C, dv), x.new_empty(B, H, N, C, C)
    TG, LS = x.new_empty(P, C, dv), x.new_empty(P, C, C)  # the current chunk's targets and pK ⊙ k kᵀ
    kern = _kernels()
    keys, state, nb = _settings(x, m)
    for n in range(N):
        kern.fwd_keys[(P,)](x, Ys, init, pK, K, TG, LS, T, n, **keys)
        kern.fwd_state[(P, nb)](K, T, TG, init, Ys, pc, ke, mix, G, n, **state)
    return Ys, K, G, T


def backward_triton(x, pK, pc, ke, mix, init, Ys, K, G, T, gYs, gK, gG):
    """The reverse loop as three kernel launches per chunk (state rows, tokens, F̄); shapes as in `hope_loop_bwd`."""
    B, H, N, C, dh = x.shape
    m, dv, P = Ys.shape[4], 3 * dh, B * H
    x, pK, pc, ke, mix, init, Ys, K, G, T, gK, gG = (
        t.contiguous() for t in (x, pK, pc, ke, mix, init, Ys, K, G, T, gK, gG))
    gY = gYs.contiguous().clone()  # slot n: the reads' gradient on chunk n's start, completed in the loop
    _, state, nb = _settings(x, m)
    bt = min(TOKENS, C)
    GR = x.new_empty(P, C, dv)  # R̄ of the current chunk
    GMIX, GF = x.new_empty(B, H, N, nb, m, m), x.new_empty(P, C // bt, 2, dh, dh)  # row blocks' m̄ix; token blocks' F̄
    GINIT = x.new_zeros(B, H, dv, dh)
    gx, gpK, gpc, gke = torch.empty_like(x), torch.empty_like(pK), torch.empty_like(pc), torch.empty_like(ke)
    kern = _kernels()
    tokens = dict(state, BT=bt, num_warps=WARPS[2], num_stages=STAGES)
    for n in reversed(range(N)):
        kern.bwd_rows[(P, nb)](K, T, Ys, pc, ke, mix, gY, gG, GR, GMIX, GINIT, n, NB=nb, **state)
        kern.bwd_tokens[(P, C // bt)](x, K, G, GR, init, Ys, pK, pc, ke, gY, gK, gx, gpK, gpc, gke, GF, n, NB=nb,
                                      **tokens)
        kern.bwd_frame[(P, 2)](GF, gY, GINIT, n, N, TB=C // bt, DH=dh, M=m, num_warps=4)
    return gx, gpK, gpc, gke, GMIX.sum(3), GINIT.sum(0), gY[:, :, 0]


@torch.library.custom_op("nlcore::hope_loop_fwd", mutates_args=())
def hope_loop_fwd(x: Tensor, pK: Tensor, pc: Tensor, ke: Tensor, mix: Tensor, init: Tensor,
                  Y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x (B, H, N, C, dh); pK (B, H, N, C, C); pc, ke (B, H, N, C, m); mix (B, H, N, m, m); init (H, 3 dh, dh);
    Y (B, H, 3 dh, m, dh) -> Ys (B, H, N + 1, 3 dh, m, dh), k (B, H, N, C, dh), G (B, H, N, C, 3 dh),
    T (B, H, N, C, C)."""
    if kernel_fits(x):
        return forward_triton(x, pK, pc, ke, mix, init, Y)
    return tuple(t.contiguous() for t in forward_torch(x, pK, pc, ke, mix, init, Y))


@hope_loop_fwd.register_fake
def _(x, pK, pc, ke, mix, init, Y):
    B, H, N, C, dh = x.shape
    m = Y.shape[3]
    return (x.new_empty(B, H, N + 1, 3 * dh, m, dh), x.new_empty(B, H, N, C, dh), x.new_empty(B, H, N, C, 3 * dh),
            x.new_empty(B, H, N, C, C))


@torch.library.custom_op("nlcore::hope_loop_bwd", mutates_args=())
def hope_loop_bwd(x: Tensor, pK: Tensor, pc: Tensor, ke: Tensor, mix: Tensor, init: Tensor, Ys: Tensor,
                  K: Tensor, G: Tensor, T: Tensor, gYs: Tensor, gK: Tensor,
                  gG: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of `hope_loop_fwd`'s inputs (x, pK, pc, ke, mix, init, Y) from its saved inputs and
    outputs and the gradients of Ys, k and G."""
    loop = backward_triton if kernel_fits(x) else backward_torch
    return tuple(t.contiguous() for t in loop(x, pK, pc, ke, mix, init, Ys, K, G, T, gYs, gK, gG))


@hope_loop_bwd.register_fake
def _(x, pK, pc, ke, mix, init, Ys, K, G, T, gYs, gK, gG):
    return tuple(t.new_empty(t.shape) for t in (x, pK, pc, ke, mix, init, Ys[:, :, 0]))


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:6], *output)


def _backward(ctx, gYs, gK, gG, gT):
    x, pK, pc, ke, mix, init, Ys, K, G, T = ctx.saved_tensors
    grads = [torch.zeros_like(t) if g is None else g.contiguous() for g, t in zip((gYs, gK, gG), (Ys, K, G))]
    return hope_loop_bwd(x, pK, pc, ke, mix, init, Ys, K, G, T, *grads)


hope_loop_fwd.register_autograd(_backward, setup_context=_setup)
