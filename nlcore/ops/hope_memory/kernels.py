r"""Triton kernels of nlcore.ops.hope_memory.loop: one chunk of HOPE's loop, forward and backward.

Imported only by `loop._kernels` (Triton is not a dependency of nlcore). The equations are in
loop.py's docstring. Per chunk the host launches two kernels forward and three backward; the
launch boundary is the only synchronisation between programs:

* forward, `fwd_keys` (one program per (row, head) p): F_k, F_v from the chunk's start, the keys k
  and the targets tg, L = pK ⊙ k kᵀ (to a scratch, re-read after a barrier) and T = (I + L)^{-1}
  by nlcore.ops.triangular_kernels.blocks; `fwd_state` (p, blocks of BR state rows): R, G = T R and
  the next state of its rows.
* backward, `bwd_rows` (p, blocks of BR state rows): R̄ and the start's gradient of its rows (less
  F̄), īnit's rows, a share of m̄ix; `bwd_tokens` (p, blocks of BT tokens): the sums over all state
  rows (k̄, Ā's rows and columns at its tokens, k̄e, p̄c) as a loop over row blocks, p̄K's rows, then
  back through the normalisations and the products with x: x̄ and the block's share of F̄;
  `bwd_frame` (p, 2): F̄_k, F̄_v summed over the token blocks into the start's gradient and īnit.
  The token work is split over blocks so that no program holds whole (C, DH) and (C, C) tiles,
  which spill registers (results/bench/profiles/NOTE.md).

Tensors are contiguous, (B, H) flattened to p; `n` is the chunk. States and their gradients are
(B, H, N + 1, DV, M, DH), slot n the start of chunk n; init (H, DV, DH). PREC is tl.dot's input
precision.
"""

import triton
import triton.language as tl

from nlcore.ops.triangular_kernels import blocks


@triton.jit
def _unit(u):
    """Rows of u to unit L2 norm, u / max(‖u‖, 1e-12): nlcore.ops.l2norm in registers (1e-12 = its EPS)."""
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
def bwd_rows(K, T, YS, PC, KE, MIX, GY, GG, GR, GMIX, GINIT, n, N, H, NB: tl.constexpr, C: tl.constexpr,
             DH: tl.constexpr, M: tl.constexpr, BR: tl.constexpr, PREC: tl.constexpr):
    """State rows r: R̄ = Tᵀ (Ḡ + Σ_a ke_a ⊙ k Ȳ'_aᵀ) (to GR), the start's gradient
    Ȳ_b += Σ_a mix[a, b] Ȳ'_a + (pc_b ⊙ R̄)ᵀ k (less F̄), īnit −= R̄ᵀ k, and the block's share of m̄ix."""
    p, rb = tl.program_id(0).to(tl.int64), tl.program_id(1)
    r = rb * BR + tl.arange(0, BR)
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    pn = p * N + n
    k = tl.load(K + pn * C * DH + c[:, None] * DH + i[None, :])  # (C, DH)
    ys0 = (p * (N + 1) + n) * DV * M * DH
    ys1 = ys0 + DV * M * DH
    gG = tl.load(GG + pn * C * DV + c[:, None] * DV + r[None, :])  # (C, BR)
    for a in tl.static_range(M):
        gY1 = tl.load(GY + ys1 + (r[:, None] * M + a) * DH + i[None, :])  # Ȳ'_a: (BR, DH)
        gG += tl.load(KE + (pn * C + c) * M + a)[:, None] * tl.dot(k, tl.trans(gY1), input_precision=PREC)
    gR = tl.dot(tl.trans(tl.load(T + pn * C * C + c[:, None] * C + c[None, :])), gG, input_precision=PREC)  # (C, BR)
    tl.store(GR + p * C * DV + c[:, None] * DV + r[None, :], gR)
    for b in tl.static_range(M):
        at = ys0 + (r[:, None] * M + b) * DH + i[None, :]
        gRb = tl.load(PC + (pn * C + c) * M + b)[:, None] * gR
        gYb = tl.load(GY + at) + tl.dot(tl.trans(gRb), k, input_precision=PREC)
        Yb = tl.load(YS + at)
        for a in tl.static_range(M):
            gY1 = tl.load(GY + ys1 + (r[:, None] * M + a) * DH + i[None, :])
            gYb += tl.load(MIX + (pn * M + a) * M + b) * gY1
            tl.store(GMIX + ((pn * NB + rb) * M + a) * M + b, tl.sum(tl.sum(gY1 * Yb, axis=1), axis=0))
        tl.store(GY + at, gYb)
    gi = GINIT + p * DV * DH + r[:, None] * DH + i[None, :]
    tl.store(gi, tl.load(gi) - tl.dot(tl.trans(gR), k, input_precision=PREC))


@triton.jit(do_not_specialize=["n"])
def bwd_tokens(X, K, G, GR, INIT, YS, PK, PC, KE, GY, GK, GX, GPK, GPC, GKE, GF, n, N, H, NB: tl.constexpr,
               C: tl.constexpr, DH: tl.constexpr, M: tl.constexpr, BR: tl.constexpr, BT: tl.constexpr,
               PREC: tl.constexpr):
    """Tokens t: k̄ (sums over the state rows, in blocks of BR), k̄e, p̄c, p̄K's rows, then back through the
    normalisations and the products with x: x̄, and the block's share of F̄ (to GF)."""
    p, tb = tl.program_id(0).to(tl.int64), tl.program_id(1)
    t = tb * BT + tl.arange(0, BT)
    c, i = tl.arange(0, C), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    pn = p * N + n
    ys0 = (p * (N + 1) + n) * DV * M * DH
    ys1 = ys0 + DV * M * DH
    gkc0 = tl.zeros((BT, DH), dtype=tl.float32)  # G Ȳ'_a, slots 0 and 1
    gkc1 = tl.zeros((BT, DH), dtype=tl.float32)
    gRY0 = tl.zeros((BT, DH), dtype=tl.float32)  # R̄ Y_j, slots 0 and 1
    gRY1 = tl.zeros((BT, DH), dtype=tl.float32)
    gk = tl.load(GK + pn * C * DH + t[:, None] * DH + i[None, :])
    gAr = tl.zeros((BT, C), dtype=tl.float32)  # Ā's rows t
    gAc = tl.zeros((C, BT), dtype=tl.float32)  # and columns t
    for rb in range(NB):  # the sums over the state rows
        r = rb * BR + tl.arange(0, BR)
        Gt = tl.load(G + pn * C * DV + t[:, None] * DV + r[None, :])  # (BT, BR)
        gRt = tl.load(GR + p * C * DV + t[:, None] * DV + r[None, :])
        rows = (r[:, None] * M) * DH + i[None, :]  # slot 0 of rows r: (BR, DH)
        gkc0 += tl.dot(Gt, tl.load(GY + ys1 + rows), input_precision=PREC)
        gRY0 += tl.dot(gRt, tl.load(YS + ys0 + rows), input_precision=PREC)
        if M == 2:
            gkc1 += tl.dot(Gt, tl.load(GY + ys1 + rows + DH), input_precision=PREC)
            gRY1 += tl.dot(gRt, tl.load(YS + ys0 + rows + DH), input_precision=PREC)
        gk -= tl.dot(gRt, tl.load(INIT + (p % H) * DV * DH + r[:, None] * DH + i[None, :]), input_precision=PREC)
        gAr -= tl.dot(gRt, tl.trans(tl.load(G + pn * C * DV + c[:, None] * DV + r[None, :])), input_precision=PREC)
        gAc -= tl.dot(tl.load(GR + p * C * DV + c[:, None] * DV + r[None, :]), tl.trans(Gt), input_precision=PREC)
    k = tl.load(K + pn * C * DH + t[:, None] * DH + i[None, :])  # (BT, DH)
    ke, pc = KE + (pn * C + t) * M, PC + (pn * C + t) * M
    gk += tl.load(ke)[:, None] * gkc0 + tl.load(pc)[:, None] * gRY0
    tl.store(GKE + (pn * C + t) * M, tl.sum(gkc0 * k, axis=1))
    tl.store(GPC + (pn * C + t) * M, tl.sum(gRY0 * k, axis=1))
    if M == 2:
        gk += tl.load(ke + 1)[:, None] * gkc1 + tl.load(pc + 1)[:, None] * gRY1
        tl.store(GKE + (pn * C + t) * M + 1, tl.sum(gkc1 * k, axis=1))
        tl.store(GPC + (pn * C + t) * M + 1, tl.sum(gRY1 * k, axis=1))
    kall = tl.load(K + pn * C * DH + c[:, None] * DH + i[None, :])  # (C, DH)
    tc = t[:, None] * C + c[None, :]  # entries (t, s): (BT, C)
    gpK = gAr * tl.dot(k, tl.trans(kall), input_precision=PREC)
    tl.store(GPK + pn * C * C + tc, tl.where(t[:, None] > c[None, :], gpK, 0.0))
    gk += tl.dot(gAr * tl.load(PK + pn * C * C + tc), kall, input_precision=PREC)  # (Ā ⊙ pK) k, rows t
    pKc = tl.load(PK + pn * C * C + c[:, None] * C + t[None, :])  # pK[:, t]: (C, BT)
    gk += tl.dot(tl.trans(gAc * pKc), kall, input_precision=PREC)  # (Ā ⊙ pK)ᵀ k, rows t
    ini, xo = (p % H) * DV * DH, (pn * C + t[:, None]) * DH + i[None, :]
    d = tl.arange(0, DH)
    Fk = tl.load(YS + ys0 + (DH + d[:, None]) * M * DH + i[None, :]) + tl.load(INIT + ini + (DH + d[:, None]) * DH + i[None, :])
    Fv = (tl.load(YS + ys0 + (2 * DH + d[:, None]) * M * DH + i[None, :])
          + tl.load(INIT + ini + (2 * DH + d[:, None]) * DH + i[None, :]))
    xs = tl.load(X + xo)  # (BT, DH)
    kx = tl.dot(xs, tl.trans(Fk), input_precision=PREC)
    vx = tl.dot(xs, tl.trans(Fv), input_precision=PREC)
    gkx = _unit_grad(kx, gk)
    gr = GR + p * C * DV + t[:, None] * DV + i[None, :]  # t̄g = R̄'s rows t
    gmkv = _unit_grad(tl.dot(vx, tl.trans(Fk), input_precision=PREC), tl.load(gr + DH))
    gmvv = _unit_grad(tl.dot(vx, tl.trans(Fv), input_precision=PREC), tl.load(gr + 2 * DH))
    gvx = (_unit_grad(vx, tl.load(gr)) + tl.dot(gmkv, Fk, input_precision=PREC)
           + tl.dot(gmvv, Fv, input_precision=PREC))
    tl.store(GX + xo, tl.dot(gkx, Fk, input_precision=PREC) + tl.dot(gvx, Fv, input_precision=PREC))
    dd = (p * (C // BT) + tb) * 2 * DH * DH + d[:, None] * DH + i[None, :]  # this block's F̄_k, F̄_v
    tl.store(GF + dd, tl.dot(tl.trans(gmkv), vx, input_precision=PREC) + tl.dot(tl.trans(gkx), xs, input_precision=PREC))
    tl.store(GF + dd + DH * DH,
             tl.dot(tl.trans(gmvv), vx, input_precision=PREC) + tl.dot(tl.trans(gvx), xs, input_precision=PREC))


@triton.jit(do_not_specialize=["n"])
def bwd_frame(GF, GY, GINIT, n, N, TB: tl.constexpr, DH: tl.constexpr, M: tl.constexpr):
    """F̄_k (program axis 1: 0) or F̄_v (1): the token blocks' shares summed, into slot 0 of the rows of
    M_k or M_v of the start's gradient, and into īnit."""
    p, s = tl.program_id(0).to(tl.int64), tl.program_id(1)
    d, i = tl.arange(0, DH), tl.arange(0, DH)
    DV: tl.constexpr = 3 * DH
    gF = tl.zeros((DH, DH), dtype=tl.float32)
    for tb in tl.static_range(TB):
        gF += tl.load(GF + ((p * TB + tb) * 2 + s) * DH * DH + d[:, None] * DH + i[None, :])
    row = (1 + s) * DH + d[:, None]
    gy = GY + (p * (N + 1) + n) * DV * M * DH + row * M * DH + i[None, :]
    tl.store(gy, tl.load(gy) + gF)
    gi = GINIT + p * DV * DH + row * DH + i[None, :]
    tl.store(gi, tl.load(gi) + gF)
