r"""Triton kernels of nlcore.memory.mlp_loop: one chunk of the MLP memory's loop, forward and backward.

Imported only by `mlp_loop._kernels` (Triton is not a dependency of nlcore). The host launches two
kernels per chunk and direction (the equations are in mlp_loop's docstring); the kernel boundary
is the only synchronisation, so each chunk's work is spread over many programs:

* tokens (grid: rows x heads, token blocks of BC): forward the factors (e, a, δ) at the chunk's
  start; backward the tokens' gradients k̄, (kv)̄, ū and the two per-token terms z̄, ḡ of W̄.
* state (grid: rows x heads, channels, row tiles of BR of X1 (HD, D) and X2 (D, HD)): forward the
  next state X'[i] = Σ_j mix[i, j] X[j] + (u_i ⊙ L)ᵀ R; backward the start's gradient
  Σ_i mix[i, j] G_i + its own + [j = 0] W̄, and the tile's share of mix̄ (summed on the host).

Tensors are contiguous, (B, H) flattened to the program's index p; `n` is the chunk. Tiles: k, e
(BC, D); z, a, δ (BC, HD); W1 and X1 channels (HD, D); W2 and X2 channels (D, HD). M (1 or 2)
channels; ANCHOR adds θ_a to channel 0 to form W; PREC is tl.dot's input precision.
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
    tl.store(DL + ch, tl.dot(e, W2, input_precision=PREC) * (s * (1.0 + z * (1.0 - s))))


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


@triton.jit(do_not_specialize=["n"])
def bwd_tokens(S1, S2, K, U, A1, A2, E, A, DL, GE, GA, GD, G1, G2, GK, GKV, GU, GZ, GG, n, N,
               M: tl.constexpr, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr, HD: tl.constexpr,
               ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """The gradients of one block of BC tokens from the end state's gradient G (G1, G2: (BH, M, ·, ·))
    and the reads' gradients (GE, GA, GD); z̄, ḡ go to the scratch GZ, GG (BH, C, HD)."""
    p, t0 = tl.program_id(0).to(tl.int64), tl.program_id(1) * BC
    SZ: tl.constexpr = HD * D
    c, i, j = tl.arange(0, BC), tl.arange(0, D), tl.arange(0, HD)
    hd, dh = j[:, None] * D + i[None, :], i[:, None] * HD + j[None, :]
    row = p * N + n
    cd = row * C * D + (t0 + c[:, None]) * D + i[None, :]  # (BC, D)
    ch = row * C * HD + (t0 + c[:, None]) * HD + j[None, :]  # (BC, HD)
    k, e, a, delta = tl.load(K + cd), tl.load(E + cd), tl.load(A + ch), tl.load(DL + ch)
    gdel, ge, ga = tl.load(GD + ch), tl.load(GE + cd), tl.load(GA + ch)
    gk = tl.zeros((BC, D), dtype=tl.float32)
    for m in tl.static_range(M):
        u = tl.load(U + row * C * M + (t0 + c) * M + m)[:, None]  # (BC, 1)
        G1m, G2m = tl.load(G1 + (p * M + m) * SZ + hd), tl.load(G2 + (p * M + m) * SZ + dh)
        P1 = tl.dot(k, tl.trans(G1m), input_precision=PREC)  # k G1_mᵀ: (BC, HD)
        P2 = tl.dot(a, tl.trans(G2m), input_precision=PREC)  # a G2_mᵀ: (BC, D)
        gdel += u * P1
        ge += u * P2
        tl.store(GU + row * C * M + (t0 + c) * M + m, tl.sum(delta * P1, axis=1) + tl.sum(e * P2, axis=1))
        ga += tl.dot(e * u, G2m, input_precision=PREC)  # (u_m ⊙ e) G2_m: (BC, HD)
        gk += tl.dot(delta * u, G1m, input_precision=PREC)  # (u_m ⊙ δ) G1_m: (BC, D)
    state = (p * (N + 1) + n) * M * SZ
    W1, W2 = _weights(S1 + state, S2 + state, A1, A2, p, D, HD, ANCHOR)
    z = tl.dot(k, tl.trans(W1), input_precision=PREC)  # recomputed: (BC, HD)
    s = tl.sigmoid(z)
    d1 = s * (1.0 + z * (1.0 - s))
    gg = gdel * d1
    ge += tl.dot(gg, tl.trans(W2), input_precision=PREC)  # (BC, D)
    ga += tl.dot(ge, W2, input_precision=PREC)  # (BC, HD)
    g = tl.dot(e, W2, input_precision=PREC)  # (BC, HD)
    gz = ga * d1 + gdel * g * (s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s)))
    gk += tl.dot(gz, W1, input_precision=PREC)
    tl.store(GK + cd, gk)
    tl.store(GKV + cd, ge)
    scratch = p * C * HD + (t0 + c[:, None]) * HD + j[None, :]
    tl.store(GZ + scratch, gz)
    tl.store(GG + scratch, gg)


@triton.jit
def _grad_tile(X, GS, Gc, Gn, MIX, GMIX, GAa, L1, R1, L2, R2, j, r0,
               M: tl.constexpr, C: tl.constexpr, BR: tl.constexpr, RR: tl.constexpr, CC: tl.constexpr,
               TWO: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """Rows r0..r0+BR of the start's gradient in channel j, GS[j] + Σ_i mix[i, j] Gc[i] (+ W̄ = L1ᵀ R1
    (+ L2ᵀ R2) for j = 0, also added to GAa with ANCHOR), and the tile's ⟨Gc[i], X[j]⟩ into GMIX[i, j].
    X, GS, Gc, Gn (M, RR, CC); MIX, GMIX (M, M); L (C, RR), R (C, CC); GAa (RR, CC)."""
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
def bwd_state(S1, S2, GS1, GS2, G1, G2, N1, N2, MIX, GMIX, GA1, GA2, K, E, A, GKV, GZ, GG, n, N,
              M: tl.constexpr, C: tl.constexpr, BR1: tl.constexpr, BR2: tl.constexpr, D: tl.constexpr,
              HD: tl.constexpr, ANCHOR: tl.constexpr, PREC: tl.constexpr):
    """One row tile of channel j of the chunk start's gradient (into N1, N2) from the end's (G1, G2):
    X1's with W̄1 = z̄ᵀ k, X2's with W̄2 = eᵀ ḡ + ēᵀ a; GMIX (B, H, N, tiles, M, M) the tiles' mix̄."""
    p, j, tile = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    SZ: tl.constexpr = HD * D
    T1: tl.constexpr = HD // BR1
    T: tl.constexpr = HD // BR1 + D // BR2
    state, g = (p * (N + 1) + n) * M * SZ, p * M * SZ
    row = p * N + n
    MIX, GMIX = MIX + row * M * M, GMIX + (row * T + tile) * M * M
    if tile < T1:
        _grad_tile(S1 + state, GS1 + state, G1 + g, N1 + g, MIX, GMIX, GA1 + p * SZ, GZ + p * C * HD,
                   K + row * C * D, GZ, GZ, j, tile * BR1, M, C, BR1, HD, D, False, ANCHOR, PREC)
    else:
        _grad_tile(S2 + state, GS2 + state, G2 + g, N2 + g, MIX, GMIX, GA2 + p * SZ, E + row * C * D,
                   GG + p * C * HD, GKV + row * C * D, A + row * C * HD, j, (tile - T1) * BR2, M, C, BR2,
                   D, HD, True, ANCHOR, PREC)
