r"""Triton kernels of nlcore.memory.mlp_loop: the MLP memory's loop over chunks, forward and backward.

Imported only by `mlp_loop._kernels` (Triton is not a dependency of nlcore). One program per
(row, head) runs all N chunks in sequence (the equations are in mlp_loop's docstring). The state
goes through global memory (L2): the forward writes each chunk's end state into the next slot of
S1, S2 and reads it back for the next chunk; the backward keeps the state gradient in two
ping-pong slots. A barrier orders those stores and loads between the program's threads.

Tiles: k, kv, e (C, D); z, a, δ (C, HD); W1 and X1 channels (HD, D); W2 and X2 channels (D, HD).
M (1 or 2) channels; ANCHOR adds θ_a to channel 0 to form W; PREC is tl.dot's input precision.
"""

import triton
import triton.language as tl


@triton.jit
def _offsets(C: tl.constexpr, D: tl.constexpr, HD: tl.constexpr):
    c, i, j = tl.arange(0, C), tl.arange(0, D), tl.arange(0, HD)
    return (c[:, None] * D + i[None, :], c[:, None] * HD + j[None, :],  # (C, D), (C, HD) row-major
            j[:, None] * D + i[None, :], i[:, None] * HD + j[None, :], c)  # (HD, D), (D, HD), (C,)


@triton.jit
def fwd_kernel(X1, X2, K, KV, U, MIX, A1, A2, S1, S2, E, A, DL, N,
               M: tl.constexpr, C: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
               ANCHOR: tl.constexpr, PREC: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)
    cd, ch, hd, dh, c = _offsets(C, D, HD)
    SZ: tl.constexpr = HD * D
    s1, s2 = S1 + p * (N + 1) * M * SZ, S2 + p * (N + 1) * M * SZ
    for j in tl.static_range(M):  # slot 0: the initial state
        tl.store(s1 + j * SZ + hd, tl.load(X1 + (p * M + j) * SZ + hd))
        tl.store(s2 + j * SZ + dh, tl.load(X2 + (p * M + j) * SZ + dh))
    tl.debug_barrier()
    for n in range(N):
        cur1, cur2 = s1 + n * M * SZ, s2 + n * M * SZ
        W1, W2 = tl.load(cur1 + hd), tl.load(cur2 + dh)  # channel 0: θ − θ_a
        if ANCHOR:
            W1 += tl.load(A1 + p * SZ + hd)
            W2 += tl.load(A2 + p * SZ + dh)
        row = p * N + n  # this chunk's slot in the (B, H, N, ...) tensors
        k = tl.load(K + row * C * D + cd)
        z = tl.dot(k, tl.trans(W1), input_precision=PREC)  # z = k W1ᵀ: (C, HD)
        s = tl.sigmoid(z)
        a = z * s
        e = tl.dot(a, tl.trans(W2), input_precision=PREC) + tl.load(KV + row * C * D + cd)  # (C, D)
        delta = tl.dot(e, W2, input_precision=PREC) * (s * (1.0 + z * (1.0 - s)))  # (C, HD)
        tl.store(E + row * C * D + cd, e)
        tl.store(A + row * C * HD + ch, a)
        tl.store(DL + row * C * HD + ch, delta)
        for i in tl.static_range(M):
            u = tl.load(U + row * C * M + c * M + i)[:, None]  # (C, 1)
            x1 = tl.dot(tl.trans(delta * u), k, input_precision=PREC)  # (u_i ⊙ δ)ᵀ k: (HD, D)
            x2 = tl.dot(tl.trans(e * u), a, input_precision=PREC)  # (u_i ⊙ e)ᵀ a: (D, HD)
            for j in tl.static_range(M):
                mij = tl.load(MIX + row * M * M + i * M + j)
                x1 += mij * tl.load(cur1 + j * SZ + hd)
                x2 += mij * tl.load(cur2 + j * SZ + dh)
            tl.store(cur1 + (M + i) * SZ + hd, x1)  # slot n + 1
            tl.store(cur2 + (M + i) * SZ + dh, x2)
        tl.debug_barrier()


@triton.jit
def bwd_kernel(S1, S2, K, U, MIX, A1, A2, E, A, DL, GS1, GS2, GE, GA, GD, GB1, GB2,
               GK, GKV, GU, GMIX, GA1, GA2, N,
               M: tl.constexpr, C: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
               ANCHOR: tl.constexpr, PREC: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)
    cd, ch, hd, dh, c = _offsets(C, D, HD)
    SZ: tl.constexpr = HD * D
    s1, s2 = S1 + p * (N + 1) * M * SZ, S2 + p * (N + 1) * M * SZ
    g1, g2 = GS1 + p * (N + 1) * M * SZ, GS2 + p * (N + 1) * M * SZ
    b1, b2 = GB1 + p * 2 * M * SZ, GB2 + p * 2 * M * SZ
    for j in tl.static_range(M):  # ping slot 0: the final state's gradient
        tl.store(b1 + j * SZ + hd, tl.load(g1 + (N * M + j) * SZ + hd))
        tl.store(b2 + j * SZ + dh, tl.load(g2 + (N * M + j) * SZ + dh))
    tl.debug_barrier()
    for t in range(N):
        n = N - 1 - t
        cur1, cur2 = s1 + n * M * SZ, s2 + n * M * SZ  # the chunk's start X
        G1, G2 = b1 + (t % 2) * M * SZ, b2 + (t % 2) * M * SZ  # its end state's gradient
        new1, new2 = b1 + ((t + 1) % 2) * M * SZ, b2 + ((t + 1) % 2) * M * SZ
        W1, W2 = tl.load(cur1 + hd), tl.load(cur2 + dh)
        if ANCHOR:
            W1 += tl.load(A1 + p * SZ + hd)
            W2 += tl.load(A2 + p * SZ + dh)
        row = p * N + n
        k = tl.load(K + row * C * D + cd)
        e = tl.load(E + row * C * D + cd)
        a = tl.load(A + row * C * HD + ch)
        delta = tl.load(DL + row * C * HD + ch)
        gdel = tl.load(GD + row * C * HD + ch)
        ge = tl.load(GE + row * C * D + cd)
        ga = tl.load(GA + row * C * HD + ch)
        gk = tl.zeros((C, D), dtype=k.dtype)
        for i in tl.static_range(M):
            u = tl.load(U + row * C * M + c * M + i)[:, None]  # (C, 1)
            G1i, G2i = tl.load(G1 + i * SZ + hd), tl.load(G2 + i * SZ + dh)  # (HD, D), (D, HD)
            P1 = tl.dot(k, tl.trans(G1i), input_precision=PREC)  # k G1_iᵀ: (C, HD)
            P2 = tl.dot(a, tl.trans(G2i), input_precision=PREC)  # a G2_iᵀ: (C, D)
            gdel += u * P1
            ge += u * P2
            tl.store(GU + row * C * M + c * M + i, tl.sum(delta * P1, axis=1) + tl.sum(e * P2, axis=1))
            ga += tl.dot(e * u, G2i, input_precision=PREC)  # (C, HD)
            gk += tl.dot(delta * u, G1i, input_precision=PREC)  # (C, D)
            for j in tl.static_range(M):
                gm = tl.sum(tl.sum(G1i * tl.load(cur1 + j * SZ + hd), axis=1), axis=0)
                gm += tl.sum(tl.sum(G2i * tl.load(cur2 + j * SZ + dh), axis=1), axis=0)
                tl.store(GMIX + row * M * M + i * M + j, gm)
        z = tl.dot(k, tl.trans(W1), input_precision=PREC)  # recomputed: (C, HD)
        s = tl.sigmoid(z)
        d1 = s * (1.0 + z * (1.0 - s))
        g = tl.dot(e, W2, input_precision=PREC)  # (C, HD)
        gg = gdel * d1
        ge += tl.dot(gg, tl.trans(W2), input_precision=PREC)  # (C, D)
        ga += tl.dot(ge, W2, input_precision=PREC)  # (C, HD)
        gz = ga * d1 + gdel * g * (s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s)))
        gk += tl.dot(gz, W1, input_precision=PREC)
        tl.store(GK + row * C * D + cd, gk)
        tl.store(GKV + row * C * D + cd, ge)
        gW1 = tl.dot(tl.trans(gz), k, input_precision=PREC)  # (HD, D)
        gW2 = tl.dot(tl.trans(e), gg, input_precision=PREC) + tl.dot(tl.trans(ge), a, input_precision=PREC)
        if ANCHOR:  # this program's own slice: no other thread touches it
            tl.store(GA1 + p * SZ + hd, tl.load(GA1 + p * SZ + hd) + gW1)
            tl.store(GA2 + p * SZ + dh, tl.load(GA2 + p * SZ + dh) + gW2)
        for j in tl.static_range(M):  # the start's gradient: Σ_i mix[i, j] G_i + its own + [j = 0] W̄
            x1 = tl.load(g1 + (n * M + j) * SZ + hd)
            x2 = tl.load(g2 + (n * M + j) * SZ + dh)
            if j == 0:
                x1 += gW1
                x2 += gW2
            for i in tl.static_range(M):
                mij = tl.load(MIX + row * M * M + i * M + j)
                x1 += mij * tl.load(G1 + i * SZ + hd)
                x2 += mij * tl.load(G2 + i * SZ + dh)
            tl.store(new1 + j * SZ + hd, x1)
            tl.store(new2 + j * SZ + dh, x2)
        tl.debug_barrier()
