r"""Triton kernels of nlcore.memory.hope_loop: one chunk of HOPE's loop, forward and backward.

Imported only by `hope_loop._kernels` (Triton is not a dependency of nlcore). The equations are in
hope_loop's docstring. Per chunk the host launches two kernels in each direction; the launch
boundary is the only synchronisation between programs:

* forward, `fwd_keys` (one program per (row, head) p): F_k, F_v from the chunk's start, the keys k
  and the targets tg, L = pK ⊙ k kᵀ (to a scratch, re-read after a barrier) and T = (I + L)^{-1}
  by nlcore.memory.tri_kernels.blocks; `fwd_state` (p, blocks of BR state rows): R, G = T R and
  the next state of its rows.
* backward, `bwd_state` (p, row blocks): Ḡ, R̄ and the start's gradient of its rows (less F̄), and
  its share of k̄, Ā, k̄e, p̄c, m̄ix; `bwd_keys` (p): sums the shares, p̄K, then back through the
  normalisations and the products with x: x̄, and F̄ into the start's gradient and īnit.

Tensors are contiguous, (B, H) flattened to p; `n` is the chunk. States and their gradients are
(B, H, N + 1, DV, M, DH), slot n the start of chunk n; init (H, DV, DH). PREC is tl.dot's input
precision.
"""

import triton
import triton.language as tl

from nlcore.memory.tri_kernels import blocks

@triton.jit
def _unit(u):
    """Rows of u to unit L2 norm, u / max(‖u‖, 1e-12) (F.normalize's eps)."""
    r = tl.maximum(tl.sqrt(tl.sum(u * u, axis=1)), 1e-12)
    return u / r[:, None]


@triton.jit
def _unit_grad(u, g):
    """The gradient through `_unit`: (g − y ⟨g, y⟩) / r, no ⟨g, y⟩ term where ‖u‖ < 1e-12."""
    n = tl.sqrt(tl.sum(u * u, axis=1))
    r = tl.maximum(n, 1e-12)
    y = u / r[:, None]
    dot = tl.where(n < 1e-12, 0.0, tl.sum(g * y, axis=1))
    return (g - y * dot[:, None]) / r[:, None]


@triton.jit
def _products(X, YS, INIT, p, n, N, H, C: tl.constexpr, DH: tl.constexpr, M: tl.constexpr, PREC: tl.constexpr):
    """F_k, F_v (DH, DH) at chunk n's start, x (C, DH) and x F_kᵀ, x F_vᵀ, v F_kᵀ, v F_vᵀ (C, DH)."""
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    ys = (p * (N + 1) + n) * DV * M * DH
    ini = (p % H) * DV * DH
    Fk = tl.load(YS + ys + (DH + i[:, None]) * M * DH + i[None, :]) + tl.load(INIT + ini + (DH + i[:, None]) * DH + i[None, :])
    Fv = (tl.load(YS + ys + (2 * DH + i[:, None]) * M * DH + i[None, :])
          + tl.load(INIT + ini + (2 * DH + i[:, None]) * DH + i[None, :]))
    xs = tl.load(X + (p * N + n) * C * DH + c[:, None] * DH + i[None, :])
    kx = tl.dot(xs, tl.trans(Fk), input_precision=PREC)
    vx = tl.dot(xs, tl.trans(Fv), input_precision=PREC)
    return Fk, Fv, xs, kx, vx, tl.dot(vx, tl.trans(Fk), input_precision=PREC), tl.dot(vx, tl.trans(Fv), input_precision=PREC)


@triton.jit(do_not_specialize=["n"])
def fwd_keys(X, YS, INIT, PK, K, TG, LS, T, n, N, H, C: tl.constexpr, DH: tl.constexpr, M: tl.constexpr,
             PREC: tl.constexpr):
    """k, the targets [n(v), n(v F_kᵀ), n(v F_vᵀ)] (to TG (P, C, DV)) and T = (I + pK ⊙ k kᵀ)^{-1}."""
    p = tl.program_id(0).to(tl.int64)
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    _, _, _, kx, vx, mkv, mvv = _products(X, YS, INIT, p, n, N, H, C, DH, M, PREC)
    k = _unit(kx)
    tl.store(K + (p * N + n) * C * DH + c[:, None] * DH + i[None, :], k)
    tg = p * C * DV + c[:, None] * DV + i[None, :]
    tl.store(TG + tg, _unit(vx))
    tl.store(TG + tg + DH, _unit(mkv))
    tl.store(TG + tg + 2 * DH, _unit(mvv))
    cc = c[:, None] * C + c[None, :]
    L = tl.load(PK + (p * N + n) * C * C + cc) * tl.dot(k, tl.trans(k), input_precision=PREC)
    tl.store(LS + p * C * C + cc, L)
    tl.debug_barrier()  # L is re-read by other threads of this program
    blocks(LS, p * C * C, T, (p * N + n) * C * C, C, C // 4)


@triton.jit(do_not_specialize=["n"])
def fwd_state(K, T, TG, INIT, YS, PC, KE, MIX, G, n, N, H, C: tl.constexpr, DH: tl.constexpr, M: tl.constexpr,
              BR: tl.constexpr, PREC: tl.constexpr):
    """Rows r of G = T (tg − k initᵀ + Σ_j pc_j ⊙ k Y_jᵀ) and of the next state Y'_a = Σ_b mix[a, b] Y_b + Gᵀ (ke_a ⊙ k)."""
    p, r = tl.program_id(0).to(tl.int64), tl.program_id(1) * BR + tl.arange(0, BR)
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    pn = p * N + n
    k = tl.load(K + pn * C * DH + c[:, None] * DH + i[None, :])  # (C, DH)
    Tn = tl.load(T + pn * C * C + c[:, None] * C + c[None, :])  # (C, C)
    init = tl.load(INIT + (p % H) * DV * DH + r[:, None] * DH + i[None, :])  # (BR, DH)
    R = tl.load(TG + p * C * DV + c[:, None] * DV + r[None, :]) - tl.dot(k, tl.trans(init), input_precision=PREC)
    ys = (p * (N + 1) + n) * DV * M * DH
    for j in tl.static_range(M):
        Yj = tl.load(YS + ys + (r[:, None] * M + j) * DH + i[None, :])  # (BR, DH)
        R += tl.load(PC + (pn * C + c) * M + j)[:, None] * tl.dot(k, tl.trans(Yj), input_precision=PREC)
    Gn = tl.dot(Tn, R, input_precision=PREC)  # (C, BR)
    tl.store(G + pn * C * DV + c[:, None] * DV + r[None, :], Gn)
    for a in tl.static_range(M):
        y = tl.dot(tl.trans(Gn), tl.load(KE + (pn * C + c) * M + a)[:, None] * k, input_precision=PREC)  # (BR, DH)
        for b in tl.static_range(M):
            y += tl.load(MIX + (pn * M + a) * M + b) * tl.load(YS + ys + (r[:, None] * M + b) * DH + i[None, :])
        tl.store(YS + ys + DV * M * DH + (r[:, None] * M + a) * DH + i[None, :], y)


@triton.jit(do_not_specialize=["n"])
def bwd_state(K, T, G, INIT, YS, PC, KE, MIX, GY, GG, GKP, GAP, GKE, GPC, GMIX, GINIT, GTG, n, N, H, NB: tl.constexpr,
              C: tl.constexpr, DH: tl.constexpr, M: tl.constexpr, BR: tl.constexpr, PREC: tl.constexpr):
    """Rows r: Ḡ, R̄ (to GTG), the start's gradient Ȳ_b += Σ_a mix[a, b] Ȳ'_a + (pc_b ⊙ R̄)ᵀ k, īnit −= R̄ᵀ k;
    the block's shares of k̄ (GKP), Ā (GAP), k̄e, p̄c, m̄ix."""
    p, rb = tl.program_id(0).to(tl.int64), tl.program_id(1)
    r = rb * BR + tl.arange(0, BR)
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    pn = p * N + n
    part = pn * NB + rb  # this block's slot in the per-chunk shares
    k = tl.load(K + pn * C * DH + c[:, None] * DH + i[None, :])  # (C, DH)
    Tn = tl.load(T + pn * C * C + c[:, None] * C + c[None, :])  # (C, C)
    Gn = tl.load(G + pn * C * DV + c[:, None] * DV + r[None, :])  # (C, BR)
    init = tl.load(INIT + (p % H) * DV * DH + r[:, None] * DH + i[None, :])  # (BR, DH)
    ys0 = (p * (N + 1) + n) * DV * M * DH
    ys1 = ys0 + DV * M * DH
    gG = tl.load(GG + pn * C * DV + c[:, None] * DV + r[None, :])
    gk = tl.zeros((C, DH), dtype=tl.float32)
    for a in tl.static_range(M):
        gY1 = tl.load(GY + ys1 + (r[:, None] * M + a) * DH + i[None, :])  # Ȳ'_a: (BR, DH)
        ke = tl.load(KE + (pn * C + c) * M + a)
        gG += ke[:, None] * tl.dot(k, tl.trans(gY1), input_precision=PREC)
        gkc = tl.dot(Gn, gY1, input_precision=PREC)  # G Ȳ'_a: (C, DH)
        gk += ke[:, None] * gkc
        tl.store(GKE + (part * C + c) * M + a, tl.sum(gkc * k, axis=1))
    gR = tl.dot(tl.trans(Tn), gG, input_precision=PREC)  # (C, BR)
    gk -= tl.dot(gR, init, input_precision=PREC)
    for b in tl.static_range(M):
        Yb = tl.load(YS + ys0 + (r[:, None] * M + b) * DH + i[None, :])  # (BR, DH)
        gRb = tl.load(PC + (pn * C + c) * M + b)[:, None] * gR
        gk += tl.dot(gRb, Yb, input_precision=PREC)
        tl.store(GPC + (part * C + c) * M + b, tl.sum(gR * tl.dot(k, tl.trans(Yb), input_precision=PREC), axis=1))
        at = ys0 + (r[:, None] * M + b) * DH + i[None, :]
        gYb = tl.load(GY + at) + tl.dot(tl.trans(gRb), k, input_precision=PREC)
        for a in tl.static_range(M):
            gY1 = tl.load(GY + ys1 + (r[:, None] * M + a) * DH + i[None, :])
            gYb += tl.load(MIX + (pn * M + a) * M + b) * gY1
            tl.store(GMIX + (part * M + a) * M + b, tl.sum(tl.sum(gY1 * Yb, axis=1), axis=0))
        tl.store(GY + at, gYb)
    tl.store(GKP + (p * NB + rb) * C * DH + c[:, None] * DH + i[None, :], gk)
    tl.store(GAP + (p * NB + rb) * C * C + c[:, None] * C + c[None, :], -tl.dot(gR, tl.trans(Gn), input_precision=PREC))
    gi = GINIT + p * DV * DH + r[:, None] * DH + i[None, :]
    tl.store(gi, tl.load(gi) - tl.dot(tl.trans(gR), k, input_precision=PREC))
    tl.store(GTG + p * C * DV + c[:, None] * DV + r[None, :], gR)


@triton.jit(do_not_specialize=["n"])
def bwd_keys(X, YS, INIT, PK, K, GK, GKP, GAP, GTG, GX, GPK, GY, GINIT, n, N, H, NB: tl.constexpr,
             C: tl.constexpr, DH: tl.constexpr, M: tl.constexpr, PREC: tl.constexpr):
    """Sums the blocks' shares of k̄ and Ā; p̄K; back through the normalisations and the products with x:
    x̄, and F̄ into the start's gradient (slot 0 of rows DH..3DH) and īnit."""
    p = tl.program_id(0).to(tl.int64)
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    pn = p * N + n
    cd, cc = c[:, None] * DH + i[None, :], c[:, None] * C + c[None, :]
    k = tl.load(K + pn * C * DH + cd)
    gk = tl.load(GK + pn * C * DH + cd)
    gA = tl.zeros((C, C), dtype=tl.float32)
    for b in tl.static_range(NB):
        gk += tl.load(GKP + (p * NB + b) * C * DH + cd)
        gA += tl.load(GAP + (p * NB + b) * C * C + cc)
    lower = c[:, None] > c[None, :]
    tl.store(GPK + pn * C * C + cc, tl.where(lower, gA * tl.dot(k, tl.trans(k), input_precision=PREC), 0.0))
    gAp = gA * tl.load(PK + pn * C * C + cc)
    gk += tl.dot(gAp + tl.trans(gAp), k, input_precision=PREC)
    Fk, Fv, xs, kx, vx, mkv, mvv = _products(X, YS, INIT, p, n, N, H, C, DH, M, PREC)
    tg = p * C * DV + c[:, None] * DV + i[None, :]
    gkx = _unit_grad(kx, gk)
    gmkv, gmvv = _unit_grad(mkv, tl.load(GTG + tg + DH)), _unit_grad(mvv, tl.load(GTG + tg + 2 * DH))
    gvx = (_unit_grad(vx, tl.load(GTG + tg)) + tl.dot(gmkv, Fk, input_precision=PREC)
           + tl.dot(gmvv, Fv, input_precision=PREC))
    tl.store(GX + pn * C * DH + cd, tl.dot(gkx, Fk, input_precision=PREC) + tl.dot(gvx, Fv, input_precision=PREC))
    gFk = tl.dot(tl.trans(gmkv), vx, input_precision=PREC) + tl.dot(tl.trans(gkx), xs, input_precision=PREC)
    gFv = tl.dot(tl.trans(gmvv), vx, input_precision=PREC) + tl.dot(tl.trans(gvx), xs, input_precision=PREC)
    ys0 = (p * (N + 1) + n) * DV * M * DH
    ak = GY + ys0 + (DH + i[:, None]) * M * DH + i[None, :]  # slot 0 of the rows of M_k
    av = GY + ys0 + (2 * DH + i[:, None]) * M * DH + i[None, :]  # and of M_v
    tl.store(ak, tl.load(ak) + gFk)
    tl.store(av, tl.load(av) + gFv)
    ik = GINIT + p * DV * DH + (DH + i[:, None]) * DH + i[None, :]
    iv = ik + DH * DH
    tl.store(ik, tl.load(ik) + gFk)
    tl.store(iv, tl.load(iv) + gFv)
