r"""Triton kernels of nlcore.ops.mlp_memory.loop: one chunk of the MLP memory's loop, forward and backward.

Imported only by `loop._kernels` (Triton is not a dependency of nlcore). The host launches a
few kernels per chunk (the equations are in loop.py's docstring); the kernel boundaries are the
only synchronisation, so each chunk's work is spread over many small programs:

* forward, `fwd_tokens` (grid: rows x heads, token blocks of BC): the factors (e, a, δ) at the
  chunk's start; `fwd_state` (rows x heads, channels, row tiles of BR1 of X1 (HD, D) and BR2 of
  X2 (D, HD)): the next state X'[i] = Σ_j mix[i, j] X[j] + (u_i ⊙ L)ᵀ R.
* backward, only what the state's gradient needs, by tiles of tokens x hidden units (BU) or
  outputs (BD) so that no program holds a whole (HD, D) matrix: `bwd_gdel` (δ̄, z, ḡ), `bwd_ge`
  (ē), `bwd_gz` (z̄); then `bwd_state` (tiles as forward): the start's gradient
  Σ_i mix[i, j] G_i + its own + [j = 0] W̄, and each tile's share of mix̄ (summed on the host).
  k̄ and ū do not feed the recurrence: `bwd_tail` computes them after the loop, for all chunks at once.

Tensors are contiguous, (B, H) flattened to the program's index p; `n` is the chunk. States and
their gradients are (B, H, N + 1, M, ·, ·), slot n the start of chunk n. M (1 or 2) channels;
ANCHOR adds θ_a to channel 0 to form W; PREC is tl.dot's input precision.
"""

import triton
import triton.language as tl


@triton.jit
def _weights(X1, X2, A1, A2, p, D: tl.constexpr, HD: tl.constexpr, ANCHOR: tl.constexpr):
    """W1 (HD, D), W2 (D, HD): channel 0 of the chunk-start state (+ θ_a)."""
    i, j = tl.arange(0, D), tl.arange(0, HD)
    hd, dh = j[:, None] * D + i[None, :], i[:, None] * HD + j[None, :]
    W1, W2 = tl.load(X1 + hd), tl.load(X2 + dh)
    if ANCHOR:
        W1 += tl.load(A1 + p * HD * D + hd)
        W2 += tl.load(A2 + p * HD * D + dh)
    return W1, W2


@triton.jit
def _silu_grad(z, s):
    """σ'(z) = s (1 + z (1 − s)), s = sigmoid(z)."""
    return s * (1.0 + z * (1.0 - s))


@triton.jit(do_not_specialize=["n"])
def fwd_tokens(S1, S2, K, KV, A1, A2, E, A, DL, n, N,
               M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
               ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """e = σ(k W1ᵀ) W2ᵀ + kv, a = σ(z), δ = (e W2) ⊙ σ'(z) for one block of BC tokens."""
    p, t0 = tl.program_id(0).to(tl.int64), tl.program_id(1) * BC
    state = (p * (N + 1) + n) * M * HD * D
    W1, W2 = _weights(S1 + state, S2 + state, A1, A2, p, D, HD, ANCHOR)
    c, i, j = tl.arange(0, BC), tl.arange(0, D), tl.arange(0, HD)
    row = p * N + n
    cd = row * C * D + (t0 + c[:, None]) * D + i[None, :]  # (BC, D)
    ch = row * C * HD + (t0 + c[:, None]) * HD + j[None, :]  # (BC, HD)
    z = tl.dot(tl.load(K + cd), tl.trans(W1), input_precision=PREC)  # z = k W1ᵀ: (BC, HD)
    s = tl.sigmoid(z)
    a = z * s
    e = tl.dot(a, tl.trans(W2), input_precision=PREC) + tl.load(KV + cd)  # (BC, D)
    tl.store(E + cd, e)
    tl.store(A + ch, a)
    tl.store(DL + ch, tl.dot(e, W2, input_precision=PREC) * _silu_grad(z, s))


@triton.jit
def _next_tile(X, XN, L, R, U, MIX, i, r0, M: tl.constexpr, C: tl.constexpr, BR: tl.constexpr,
               RR: tl.constexpr, CC: tl.constexpr, PREC: tl.constexpr):
    """Rows r0..r0+BR of X'[i] = Σ_j mix[i, j] X[j] + (u_i ⊙ L)ᵀ R; X, XN (M, RR, CC), L (C, RR),
    R (C, CC), U (C, M), MIX (M, M), all at this program's chunk."""
    r, cc, t = r0 + tl.arange(0, BR), tl.arange(0, CC), tl.arange(0, C)
    tile = r[:, None] * CC + cc[None, :]
    x = tl.zeros((BR, CC), dtype=tl.float32)
    for j in tl.static_range(M):
        x += tl.load(MIX + i * M + j) * tl.load(X + j * RR * CC + tile)
    lu = tl.load(L + t[:, None] * RR + r[None, :]) * tl.load(U + t * M + i)[:, None]  # (C, BR)
    x += tl.dot(tl.trans(lu), tl.load(R + t[:, None] * CC + cc[None, :]), input_precision=PREC)
    tl.store(XN + i * RR * CC + tile, x)


@triton.jit(do_not_specialize=["n"])
def fwd_state(S1, S2, K, E, A, DL, U, MIX, n, N,
              M: tl.constexpr, C: tl.constexpr, BR1: tl.constexpr, BR2: tl.constexpr, D: tl.constexpr,
              HD: tl.constexpr, PREC: tl.constexpr):
    """One row tile of one channel of the next state: X1 from (δ, k), X2 from (e, a)."""
    p, i, tile = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    state = (p * (N + 1) + n) * M * HD * D
    row = p * N + n
    U, MIX = U + row * C * M, MIX + row * M * M
    T1: tl.constexpr = HD // BR1
    if tile < T1:
        _next_tile(S1 + state, S1 + state + M * HD * D, DL + row * C * HD, K + row * C * D, U, MIX, i,
                   tile * BR1, M, C, BR1, HD, D, PREC)
    else:
        _next_tile(S2 + state, S2 + state + M * HD * D, E + row * C * D, A + row * C * HD, U, MIX, i,
                   (tile - T1) * BR2, M, C, BR2, D, HD, PREC)


@triton.jit
def _sub(r0, c0, R: tl.constexpr, CC: tl.constexpr, NC: tl.constexpr):
    """The offsets of rows r0..r0+R, columns c0..c0+CC in a row-major matrix with NC columns."""
    r, c = r0 + tl.arange(0, R), c0 + tl.arange(0, CC)
    return r[:, None] * NC + c[None, :]


@triton.jit
def _w_sub(X, Aa, r0, c0, R: tl.constexpr, CC: tl.constexpr, NC: tl.constexpr, ANCHOR: tl.constexpr):
    """A block of W = X[0] (+ θ_a): X and Aa this program's (·, NC) matrices."""
    at = _sub(r0, c0, R, CC, NC)
    w = tl.load(X + at)
    if ANCHOR:
        w += tl.load(Aa + at)
    return w


@triton.jit
def _tile_ids(n, N, BC: tl.constexpr, BX: tl.constexpr):
    """A backward token kernel's program: (row x head p, first token t0, first column c0, chunk slot
    row = p N + n, the block's tokens c)."""
    p, t0, c0 = tl.program_id(0).to(tl.int64), tl.program_id(1) * BC, tl.program_id(2) * BX
    return p, t0, c0, p * N + n, t0 + tl.arange(0, BC)


@triton.jit(do_not_specialize=["n"])
def bwd_gdel(S1, GS1, K, U, A1, GD, DEL, GGS, ZS, n, N,
             M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, BU: tl.constexpr, D: tl.constexpr,
             HD: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """Tokens t0..t0+BC, hidden units c0..c0+BU: δ̄ = δ̄_r + Σ_m u_m ⊙ k G1_mᵀ, z = k W1ᵀ, ḡ = δ̄ ⊙ σ'(z)
    into the scratch DEL, GGS, ZS (B H, C, HD). GS1 (B, H, N + 1, M, HD, D): slot n + 1 the end's gradient."""
    p, t0, c0, row, c = _tile_ids(n, N, BC, BU)
    SZ: tl.constexpr = HD * D
    k = tl.load(K + row * C * D + _sub(t0, 0, BC, D, D))  # (BC, D)
    at = _sub(t0, c0, BC, BU, HD)  # (BC, BU) of a (C, HD) matrix
    gdel = tl.load(GD + row * C * HD + at)
    for m in tl.static_range(M):
        u = tl.load(U + row * C * M + c * M + m)[:, None]  # (BC, 1)
        G1m = tl.load(GS1 + ((p * (N + 1) + n + 1) * M + m) * SZ + _sub(c0, 0, BU, D, D))  # (BU, D)
        gdel += u * tl.dot(k, tl.trans(G1m), input_precision=PREC)
    W1 = _w_sub(S1 + (p * (N + 1) + n) * M * SZ, A1 + p * SZ, c0, 0, BU, D, D, ANCHOR)  # (BU, D)
    z = tl.dot(k, tl.trans(W1), input_precision=PREC)
    s = tl.sigmoid(z)
    tl.store(DEL + p * C * HD + at, gdel)
    tl.store(GGS + p * C * HD + at, gdel * _silu_grad(z, s))
    tl.store(ZS + p * C * HD + at, z)


@triton.jit(do_not_specialize=["n"])
def bwd_ge(S2, GS2, A, U, A2, GE, GGS, GKV, n, N,
           M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, D: tl.constexpr,
           HD: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """Tokens t0..t0+BC, outputs c0..c0+BD: ē = ē_r + Σ_m u_m ⊙ a G2_mᵀ + ḡ W2ᵀ into GKV ((kv)̄)."""
    p, t0, c0, row, c = _tile_ids(n, N, BC, BD)
    SZ: tl.constexpr = HD * D
    a = tl.load(A + row * C * HD + _sub(t0, 0, BC, HD, HD))  # (BC, HD)
    at = _sub(t0, c0, BC, BD, D)  # (BC, BD) of a (C, D) matrix
    ge = tl.load(GE + row * C * D + at)
    for m in tl.static_range(M):
        u = tl.load(U + row * C * M + c * M + m)[:, None]
        G2m = tl.load(GS2 + ((p * (N + 1) + n + 1) * M + m) * SZ + _sub(c0, 0, BD, HD, HD))  # (BD, HD)
        ge += u * tl.dot(a, tl.trans(G2m), input_precision=PREC)
    W2 = _w_sub(S2 + (p * (N + 1) + n) * M * SZ, A2 + p * SZ, c0, 0, BD, HD, HD, ANCHOR)  # (BD, HD)
    gg = tl.load(GGS + p * C * HD + _sub(t0, 0, BC, HD, HD))
    tl.store(GKV + row * C * D + at, ge + tl.dot(gg, tl.trans(W2), input_precision=PREC))


@triton.jit(do_not_specialize=["n"])
def bwd_gz(S2, GS2, E, U, A2, GA, GKV, DEL, ZS, GZ, n, N,
           M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, BU: tl.constexpr, D: tl.constexpr,
           HD: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """Tokens t0..t0+BC, hidden units c0..c0+BU: ā = ā_r + Σ_m (u_m ⊙ e) G2_m + ē W2, g = e W2,
    z̄ = ā ⊙ σ'(z) + δ̄ ⊙ g ⊙ σ''(z) into GZ (B, H, N, C, HD)."""
    p, t0, c0, row, c = _tile_ids(n, N, BC, BU)
    SZ: tl.constexpr = HD * D
    e = tl.load(E + row * C * D + _sub(t0, 0, BC, D, D))  # (BC, D)
    at = _sub(t0, c0, BC, BU, HD)  # (BC, BU) of a (C, HD) matrix
    ga = tl.load(GA + row * C * HD + at)
    for m in tl.static_range(M):
        u = tl.load(U + row * C * M + c * M + m)[:, None]
        G2m = tl.load(GS2 + ((p * (N + 1) + n + 1) * M + m) * SZ + _sub(0, c0, D, BU, HD))  # (D, BU)
        ga += tl.dot(e * u, G2m, input_precision=PREC)
    W2 = _w_sub(S2 + (p * (N + 1) + n) * M * SZ, A2 + p * SZ, 0, c0, D, BU, HD, ANCHOR)  # (D, BU)
    ga += tl.dot(tl.load(GKV + row * C * D + _sub(t0, 0, BC, D, D)), W2, input_precision=PREC)
    g = tl.dot(e, W2, input_precision=PREC)
    z = tl.load(ZS + p * C * HD + at)
    s = tl.sigmoid(z)
    d2 = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
    tl.store(GZ + row * C * HD + at, ga * _silu_grad(z, s) + tl.load(DEL + p * C * HD + at) * g * d2)


@triton.jit
def _grad_tile(X, GS, Gc, Gn, MIX, GMIX, GAa, L1, R1, L2, R2, j, r0,
               M: tl.constexpr, C: tl.constexpr, BR: tl.constexpr, RR: tl.constexpr, CC: tl.constexpr,
               TWO: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """Rows r0..r0+BR of the start's gradient in channel j, Gn[j] = GS[j] + Σ_i mix[i, j] Gc[i] (+ W̄ =
    L1ᵀ R1 (+ L2ᵀ R2) for j = 0, also added to GAa with ANCHOR), and the tile's ⟨Gc[i], X[j]⟩ into
    GMIX[i, j]. X, GS (the start's own gradient), Gc (the end's), Gn (M, RR, CC); MIX, GMIX (M, M);
    L (C, RR), R (C, CC); GAa (RR, CC)."""
    r, cc = r0 + tl.arange(0, BR), tl.arange(0, CC)
    tile = r[:, None] * CC + cc[None, :]
    x = tl.load(GS + j * RR * CC + tile)
    Xj = tl.load(X + j * RR * CC + tile)
    for i in tl.static_range(M):
        Gi = tl.load(Gc + i * RR * CC + tile)
        x += tl.load(MIX + i * M + j) * Gi
        tl.store(GMIX + i * M + j, tl.sum(tl.sum(Gi * Xj, axis=1), axis=0))
    if j == 0:
        t = tl.arange(0, C)
        lt, rt = t[:, None] * RR + r[None, :], t[:, None] * CC + cc[None, :]
        w = tl.dot(tl.trans(tl.load(L1 + lt)), tl.load(R1 + rt), input_precision=PREC)
        if TWO:
            w += tl.dot(tl.trans(tl.load(L2 + lt)), tl.load(R2 + rt), input_precision=PREC)
        x += w
        if ANCHOR:  # this tile of θ_a's gradient belongs to this program alone
            tl.store(GAa + tile, tl.load(GAa + tile) + w)
    tl.store(Gn + j * RR * CC + tile, x)


@triton.jit(do_not_specialize=["n"])
def bwd_state(S1, S2, GS1, GS2, G1, G2, MIX, GMIX, GA1, GA2, K, E, A, GKV, GZ, GGS, n, N,
              M: tl.constexpr, C: tl.constexpr, BR1: tl.constexpr, BR2: tl.constexpr, D: tl.constexpr,
              HD: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """One row tile of channel j of the chunk start's gradient, slot n of G1, G2 (B, H, N + 1, M, ·, ·),
    from slot n + 1 (the end's) and slot n of GS1, GS2 (the start's own gradient, from the reads):
    X1's with W̄1 = z̄ᵀ k, X2's with W̄2 = eᵀ ḡ + ēᵀ a; GMIX (B, H, N, tiles, M, M) the tiles' mix̄."""
    p, j, tile = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    SZ: tl.constexpr = HD * D
    T1: tl.constexpr = HD // BR1
    T: tl.constexpr = HD // BR1 + D // BR2
    state = (p * (N + 1) + n) * M * SZ
    row = p * N + n
    MIX, GMIX = MIX + row * M * M, GMIX + (row * T + tile) * M * M
    if tile < T1:
        _grad_tile(S1 + state, GS1 + state, G1 + state + M * SZ, G1 + state, MIX, GMIX, GA1 + p * SZ,
                   GZ + row * C * HD, K + row * C * D, GZ, GZ, j, tile * BR1, M, C, BR1, HD, D, False, ANCHOR, PREC)
    else:
        _grad_tile(S2 + state, GS2 + state, G2 + state + M * SZ, G2 + state, MIX, GMIX, GA2 + p * SZ,
                   E + row * C * D, GGS + p * C * HD, GKV + row * C * D, A + row * C * HD, j, (tile - T1) * BR2, M, C, BR2,
                   D, HD, True, ANCHOR, PREC)


@triton.jit
def bwd_tail(S1, G1, G2, K, U, A1, E, A, DL, GZ, GK, GU, N,
             M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, BU: tl.constexpr, D: tl.constexpr,
             HD: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """After the reverse loop, all chunks at once (grid: rows x heads, chunks, token blocks), with G_m the
    chunk end's gradient: k̄ = Σ_m u_m ⊙ δ G1_m + z̄ W1 and ū_m = rowsum(k ⊙ δ G1_m + a ⊙ e G2_m),
    accumulated over blocks of BU hidden units."""
    p, n, t0 = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2) * BC
    SZ: tl.constexpr = HD * D
    row, c = p * N + n, t0 + tl.arange(0, BC)
    start, end = (p * (N + 1) + n) * M * SZ, (p * (N + 1) + n + 1) * M * SZ
    cd = row * C * D + _sub(t0, 0, BC, D, D)
    k, e = tl.load(K + cd), tl.load(E + cd)  # (BC, D)
    gk = tl.zeros((BC, D), dtype=tl.float32)
    gu0 = tl.zeros((BC,), dtype=tl.float32)
    gu1 = tl.zeros((BC,), dtype=tl.float32)
    for h0 in range(0, HD, BU):
        ch = row * C * HD + _sub(t0, h0, BC, BU, HD)  # (BC, BU)
        dl, a = tl.load(DL + ch), tl.load(A + ch)
        gk += tl.dot(tl.load(GZ + ch), _w_sub(S1 + start, A1 + p * SZ, h0, 0, BU, D, D, ANCHOR), input_precision=PREC)
        for m in tl.static_range(M):
            P = tl.dot(dl, tl.load(G1 + end + m * SZ + _sub(h0, 0, BU, D, D)), input_precision=PREC)  # (BC, D)
            Q = tl.dot(e, tl.load(G2 + end + m * SZ + _sub(0, h0, D, BU, HD)), input_precision=PREC)  # (BC, BU)
            gk += tl.load(U + row * C * M + c * M + m)[:, None] * P
            g = tl.sum(k * P, axis=1) + tl.sum(a * Q, axis=1)
            if m == 0:
                gu0 += g
            else:
                gu1 += g
    tl.store(GK + cd, gk)
    tl.store(GU + row * C * M + c * M, gu0)
    if M == 2:
        tl.store(GU + row * C * M + c * M + 1, gu1)
