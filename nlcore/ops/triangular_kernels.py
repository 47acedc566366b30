r"""Triton kernels of nlcore.ops.triangular: T = (I + L)^{-1} for a batch of strictly lower L (C, C).

Imported only by `triangular._inverse_kernels`, when a CUDA solve needs them (Triton is not a dependency
of nlcore: CPU machines run without it). One program per matrix:

* `rows_kernel` (any C): forward substitution over the rows, T_i = e_i − Σ_{j<i} L_ij T_j, in
  C − 1 sequential steps on a (C, C) tile.
* `blocks_kernel` (C = 4 B, B >= 16): the four diagonal (B, B) blocks by rows (B − 1 steps each),
  then the blocks below the diagonal by block forward substitution,
  T_ij = −T_ii Σ_{j<=k<i} L_ik T_kj (ten B x B x B products in exact float32), and zeros above
  the diagonal.
"""

import triton
import triton.language as tl


@triton.jit
def _rows(L, base, C: tl.constexpr, o: tl.constexpr, BC: tl.constexpr, n):
    # (I + L_oo)^{-1} of the diagonal block at offset o (n rows, padded to BC), row by row:
    # T_i = e_i − Σ_{j<i} L_ij T_j
    r = tl.arange(0, BC)
    X = tl.where(r[:, None] == r[None, :], 1.0, 0.0).to(L.dtype.element_ty)  # rows >= i: still e_i
    for i in range(1, n):
        li = tl.load(L + base + (o + i) * C + o + r, mask=r < i, other=0.0)  # L[i, :i]: (BC,)
        row = tl.sum(li[:, None] * X, axis=0)  # Σ_{j<i} L_ij T_j: (BC,)
        X = tl.where(r[:, None] == i, X - row[None, :], X)
    return X


@triton.jit
def rows_kernel(L, T, C: tl.constexpr, BC: tl.constexpr):
    # one program per matrix, all C rows in sequence
    base = tl.program_id(0).to(tl.int64) * C * C
    r = tl.arange(0, BC)
    X = _rows(L, base, C, 0, BC, C)
    tl.store(T + base + r[:, None] * C + r[None, :], X, mask=(r[:, None] < C) & (r[None, :] < C))


@triton.jit
def _blk(L, base, C: tl.constexpr, i: tl.constexpr, j: tl.constexpr, B: tl.constexpr):
    r = tl.arange(0, B)
    return tl.load(L + base + (i * B + r[:, None]) * C + j * B + r[None, :])  # block (i, j): (B, B)


@triton.jit
def _put(T, base, C: tl.constexpr, i: tl.constexpr, j: tl.constexpr, B: tl.constexpr, X):
    r = tl.arange(0, B)
    tl.store(T + base + (i * B + r[:, None]) * C + j * B + r[None, :], X)


@triton.jit
def blocks(L, lbase, T, tbase, C: tl.constexpr, B: tl.constexpr):
    """T = (I + L)^{-1} of the (C, C) matrix at L + lbase into T + tbase, C = 4 B (`blocks_kernel`'s
    body; nlcore.ops.hope_memory.kernels calls it inside its own kernel)."""
    D0, D1 = _rows(L, lbase, C, 0, B, B), _rows(L, lbase, C, B, B, B)
    D2, D3 = _rows(L, lbase, C, 2 * B, B, B), _rows(L, lbase, C, 3 * B, B, B)
    P: tl.constexpr = "ieee"  # exact float32 products, not TF32
    T10 = -tl.dot(D1, tl.dot(_blk(L, lbase, C, 1, 0, B), D0, input_precision=P), input_precision=P)
    T21 = -tl.dot(D2, tl.dot(_blk(L, lbase, C, 2, 1, B), D1, input_precision=P), input_precision=P)
    T32 = -tl.dot(D3, tl.dot(_blk(L, lbase, C, 3, 2, B), D2, input_precision=P), input_precision=P)
    T20 = -tl.dot(D2, tl.dot(_blk(L, lbase, C, 2, 0, B), D0, input_precision=P)
                  + tl.dot(_blk(L, lbase, C, 2, 1, B), T10, input_precision=P), input_precision=P)
    T31 = -tl.dot(D3, tl.dot(_blk(L, lbase, C, 3, 1, B), D1, input_precision=P)
                  + tl.dot(_blk(L, lbase, C, 3, 2, B), T21, input_precision=P), input_precision=P)
    T30 = -tl.dot(D3, tl.dot(_blk(L, lbase, C, 3, 0, B), D0, input_precision=P)
                  + tl.dot(_blk(L, lbase, C, 3, 1, B), T10, input_precision=P)
                  + tl.dot(_blk(L, lbase, C, 3, 2, B), T20, input_precision=P), input_precision=P)
    _put(T, tbase, C, 0, 0, B, D0)
    _put(T, tbase, C, 1, 1, B, D1)
    _put(T, tbase, C, 2, 2, B, D2)
    _put(T, tbase, C, 3, 3, B, D3)
    _put(T, tbase, C, 1, 0, B, T10)
    _put(T, tbase, C, 2, 1, B, T21)
    _put(T, tbase, C, 3, 2, B, T32)
    _put(T, tbase, C, 2, 0, B, T20)
    _put(T, tbase, C, 3, 1, B, T31)
    _put(T, tbase, C, 3, 0, B, T30)
    Z = tl.zeros((B, B), dtype=D0.dtype)  # the blocks above the diagonal
    _put(T, tbase, C, 0, 1, B, Z)
    _put(T, tbase, C, 0, 2, B, Z)
    _put(T, tbase, C, 0, 3, B, Z)
    _put(T, tbase, C, 1, 2, B, Z)
    _put(T, tbase, C, 1, 3, B, Z)
    _put(T, tbase, C, 2, 3, B, Z)


@triton.jit
def blocks_kernel(L, T, C: tl.constexpr, B: tl.constexpr):
    # C = 4 B: the four diagonal blocks by rows (B sequential steps, not C), then the blocks
    # below the diagonal by block forward substitution, T_ij = −T_ii Σ_{j<=k<i} L_ik T_kj
    base = tl.program_id(0).to(tl.int64) * C * C
    blocks(L, base, T, base, C, B)
