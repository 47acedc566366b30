r"""Triton kernels of nlcore.memory.mlp_loop: the MLP memory's loop over chunks, forward and backward.

Imported only by `mlp_loop._kernels` (Triton is not a dependency of nlcore). One program per
(row, head) runs all N chunks in sequence (the equations are in mlp_loop's docstring). Each chunk
takes two phases with a barrier after each, so that one thread's global stores are seen by the
others:

* A, by blocks of BC tokens (rows are independent there): the factors (e, a, δ) forward; the
  tokens' gradients backward (k̄, (kv)̄, ū, and z̄, ḡ into a scratch buffer).
* B, one (HD, D) or (D, HD) state matrix at a time: its next value from the block products
  (u_i ⊙ δ)ᵀ k, (u_i ⊙ e)ᵀ a forward; backward the start's gradient, W̄ and mix̄.

The state goes through global memory (L2): the forward writes each chunk's end state into the
next slot of S1, S2; the backward keeps the state gradient in two ping-pong slots, GB (2, BH, M, ·).
Tiles: k, e (BC, D); z, a, δ (BC, HD); W1 and X1 channels (HD, D); W2 and X2 channels (D, HD).
M (1 or 2) channels; ANCHOR adds θ_a to channel 0 to form W; PREC is tl.dot's input precision.
"""

import triton
import triton.language as tl


@triton.jit
def _weights(cur1, cur2, A1, A2, p, hd, dh, SZ: tl.constexpr, ANCHOR: tl.constexpr):
    W1, W2 = tl.load(cur1 + hd), tl.load(cur2 + dh)  # channel 0: θ − θ_a
    if ANCHOR:
        W1 += tl.load(A1 + p * SZ + hd)
        W2 += tl.load(A2 + p * SZ + dh)
    return W1, W2


@triton.jit
def _grids(BC: tl.constexpr, D: tl.constexpr, HD: tl.constexpr):
    c, i, j = tl.arange(0, BC), tl.arange(0, D), tl.arange(0, HD)
    return (c[:, None] * D + i[None, :], c[:, None] * HD + j[None, :],  # (BC, D), (BC, HD) row-major
            j[:, None] * D + i[None, :], i[:, None] * HD + j[None, :], c)  # (HD, D), (D, HD), (BC,)


@triton.jit
def fwd_kernel(X1, X2, K, KV, U, MIX, A1, A2, S1, S2, E, A, DL, N,
               M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
               ANCHOR: tl.constexpr, PREC: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)
    cd, ch, hd, dh, c = _grids(BC, D, HD)
    SZ: tl.constexpr = HD * D
    s1, s2 = S1 + p * (N + 1) * M * SZ, S2 + p * (N + 1) * M * SZ
    for j in tl.static_range(M):  # slot 0: the initial state
        tl.store(s1 + j * SZ + hd, tl.load(X1 + (p * M + j) * SZ + hd))
        tl.store(s2 + j * SZ + dh, tl.load(X2 + (p * M + j) * SZ + dh))
    tl.debug_barrier()
    for n in range(N):
        cur1, cur2 = s1 + n * M * SZ, s2 + n * M * SZ
        row = p * N + n  # this chunk's slot in the (B, H, N, ...) tensors
        for t0 in range(0, C, BC):  # A: the factors at the chunk's start
            W1, W2 = _weights(cur1, cur2, A1, A2, p, hd, dh, SZ, ANCHOR)
            kb = row * C * D + t0 * D
            k = tl.load(K + kb + cd)
            z = tl.dot(k, tl.trans(W1), input_precision=PREC)  # z = k W1ᵀ: (BC, HD)
            s = tl.sigmoid(z)
            a = z * s
            e = tl.dot(a, tl.trans(W2), input_precision=PREC) + tl.load(KV + kb + cd)  # (BC, D)
            delta = tl.dot(e, W2, input_precision=PREC) * (s * (1.0 + z * (1.0 - s)))  # (BC, HD)
            tl.store(E + kb + cd, e)
            tl.store(A + row * C * HD + t0 * HD + ch, a)
            tl.store(DL + row * C * HD + t0 * HD + ch, delta)
        tl.debug_barrier()
        for i in tl.static_range(M):  # B: the end state, X'[i] = Σ_j mix[i, j] X[j] + block products
            x1 = tl.zeros((HD, D), dtype=tl.float32)
            x2 = tl.zeros((D, HD), dtype=tl.float32)
            for j in tl.static_range(M):
                mij = tl.load(MIX + row * M * M + i * M + j)
                x1 += mij * tl.load(cur1 + j * SZ + hd)
                x2 += mij * tl.load(cur2 + j * SZ + dh)
            for t0 in range(0, C, BC):
                u = tl.load(U + row * C * M + (t0 + c) * M + i)[:, None]  # (BC, 1)
                k = tl.load(K + row * C * D + t0 * D + cd)
                e = tl.load(E + row * C * D + t0 * D + cd)
                a = tl.load(A + row * C * HD + t0 * HD + ch)
                delta = tl.load(DL + row * C * HD + t0 * HD + ch)
                x1 += tl.dot(tl.trans(delta * u), k, input_precision=PREC)  # (u_i ⊙ δ)ᵀ k: (HD, D)
                x2 += tl.dot(tl.trans(e * u), a, input_precision=PREC)  # (u_i ⊙ e)ᵀ a: (D, HD)
            tl.store(cur1 + (M + i) * SZ + hd, x1)  # slot n + 1
            tl.store(cur2 + (M + i) * SZ + dh, x2)
        tl.debug_barrier()


@triton.jit
def bwd_kernel(S1, S2, K, U, MIX, A1, A2, E, A, DL, GS1, GS2, GE, GA, GD, GB1, GB2, ZS, GGS,
               GK, GKV, GU, GMIX, GA1, GA2, N,
               M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
               ANCHOR: tl.constexpr, PREC: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)
    BH = tl.num_programs(0)
    cd, ch, hd, dh, c = _grids(BC, D, HD)
    SZ: tl.constexpr = HD * D
    s1, s2 = S1 + p * (N + 1) * M * SZ, S2 + p * (N + 1) * M * SZ
    g1, g2 = GS1 + p * (N + 1) * M * SZ, GS2 + p * (N + 1) * M * SZ
    zs, ggs = ZS + p * C * HD, GGS + p * C * HD  # this program's scratch for z̄, ḡ: (C, HD)
    for j in tl.static_range(M):  # ping slot 0: the final state's gradient
        tl.store(GB1 + (p * M + j) * SZ + hd, tl.load(g1 + (N * M + j) * SZ + hd))
        tl.store(GB2 + (p * M + j) * SZ + dh, tl.load(g2 + (N * M + j) * SZ + dh))
    tl.debug_barrier()
    for t in range(N):
        n = N - 1 - t
        cur1, cur2 = s1 + n * M * SZ, s2 + n * M * SZ  # the chunk's start X
        G1 = GB1 + ((t % 2) * BH + p) * M * SZ  # its end state's gradient
        G2 = GB2 + ((t % 2) * BH + p) * M * SZ
        new1 = GB1 + (((t + 1) % 2) * BH + p) * M * SZ
        new2 = GB2 + (((t + 1) % 2) * BH + p) * M * SZ
        row = p * N + n
        for t0 in range(0, C, BC):  # A: the tokens' gradients
            kb, hb = row * C * D + t0 * D, row * C * HD + t0 * HD
            k, e = tl.load(K + kb + cd), tl.load(E + kb + cd)
            a, delta = tl.load(A + hb + ch), tl.load(DL + hb + ch)
            gdel, ge, ga = tl.load(GD + hb + ch), tl.load(GE + kb + cd), tl.load(GA + hb + ch)
            gk = tl.zeros((BC, D), dtype=tl.float32)
            for i in tl.static_range(M):
                u = tl.load(U + row * C * M + (t0 + c) * M + i)[:, None]  # (BC, 1)
                G1i, G2i = tl.load(G1 + i * SZ + hd), tl.load(G2 + i * SZ + dh)  # (HD, D), (D, HD)
                P1 = tl.dot(k, tl.trans(G1i), input_precision=PREC)  # k G1_iᵀ: (BC, HD)
                P2 = tl.dot(a, tl.trans(G2i), input_precision=PREC)  # a G2_iᵀ: (BC, D)
                gdel += u * P1
                ge += u * P2
                tl.store(GU + row * C * M + (t0 + c) * M + i,
                         tl.sum(delta * P1, axis=1) + tl.sum(e * P2, axis=1))
                ga += tl.dot(e * u, G2i, input_precision=PREC)  # (BC, HD)
                gk += tl.dot(delta * u, G1i, input_precision=PREC)  # (BC, D)
            W1, W2 = _weights(cur1, cur2, A1, A2, p, hd, dh, SZ, ANCHOR)
            z = tl.dot(k, tl.trans(W1), input_precision=PREC)  # recomputed: (BC, HD)
            s = tl.sigmoid(z)
            d1 = s * (1.0 + z * (1.0 - s))
            gg = gdel * d1
            ge += tl.dot(gg, tl.trans(W2), input_precision=PREC)  # (BC, D)
            ga += tl.dot(ge, W2, input_precision=PREC)  # (BC, HD)
            g = tl.dot(e, W2, input_precision=PREC)  # (BC, HD)
            gz = ga * d1 + gdel * g * (s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s)))
            gk += tl.dot(gz, W1, input_precision=PREC)
            tl.store(GK + kb + cd, gk)
            tl.store(GKV + kb + cd, ge)
            tl.store(zs + t0 * HD + ch, gz)
            tl.store(ggs + t0 * HD + ch, gg)
        tl.debug_barrier()
        for j in tl.static_range(M):  # B: the start's gradient, Σ_i mix[i, j] G_i + its own + [j = 0] W̄
            x1 = tl.load(g1 + (n * M + j) * SZ + hd)
            x2 = tl.load(g2 + (n * M + j) * SZ + dh)
            for i in tl.static_range(M):
                mij = tl.load(MIX + row * M * M + i * M + j)
                G1i, G2i = tl.load(G1 + i * SZ + hd), tl.load(G2 + i * SZ + dh)
                x1 += mij * G1i
                x2 += mij * G2i
                gm = tl.sum(tl.sum(G1i * tl.load(cur1 + j * SZ + hd), axis=1), axis=0)
                gm += tl.sum(tl.sum(G2i * tl.load(cur2 + j * SZ + dh), axis=1), axis=0)
                tl.store(GMIX + row * M * M + i * M + j, gm)  # mix̄[i, j] = ⟨G1_i, X1[j]⟩ + ⟨G2_i, X2[j]⟩
            if j == 0:
                gW1 = tl.zeros((HD, D), dtype=tl.float32)
                gW2 = tl.zeros((D, HD), dtype=tl.float32)
                for t0 in range(0, C, BC):  # W̄1 = z̄ᵀ k, W̄2 = eᵀ ḡ + ēᵀ a
                    kb, hb = row * C * D + t0 * D, row * C * HD + t0 * HD
                    gz, gg = tl.load(zs + t0 * HD + ch), tl.load(ggs + t0 * HD + ch)
                    gW1 += tl.dot(tl.trans(gz), tl.load(K + kb + cd), input_precision=PREC)
                    gW2 += tl.dot(tl.trans(tl.load(E + kb + cd)), gg, input_precision=PREC)
                    gW2 += tl.dot(tl.trans(tl.load(GKV + kb + cd)), tl.load(A + hb + ch), input_precision=PREC)
                x1 += gW1
                x2 += gW2
                if ANCHOR:  # this program's own slice: no other thread touches it
                    tl.store(GA1 + p * SZ + hd, tl.load(GA1 + p * SZ + hd) + gW1)
                    tl.store(GA2 + p * SZ + dh, tl.load(GA2 + p * SZ + dh) + gW2)
            tl.store(new1 + j * SZ + hd, x1)
            tl.store(new2 + j * SZ + dh, x2)
        tl.debug_barrier()
