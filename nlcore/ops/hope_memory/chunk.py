r"""HOPE's self-modifying memory over full chunks, with few ops per chunk (forward and backward).

`SelfModifyingMemory` (nlcore.models.memory_layers) generates each chunk's keys and targets
from the memories' states at the chunk start, so the chunks run in a Python loop; every op in
that loop is a kernel launch per chunk, in the forward and again in the backward. `hope_chunks`
is the same computation as one `chunk_write` of nlcore.ops.linear_memory.chunk per chunk plus one
batched `chunk_read`, arranged so that each chunk costs few ops:

* Per (row, head) the carried state is one tensor Y (dv, m, dk) with dv = 3 dh the rows of
  [M_mem; M_k; M_v] and m slots [D, S] (no S without momentum), D = M − M_init the memories'
  difference from their initial weights. Retention pulls M toward M_init, so D follows the plain
  gated recurrence of nlcore.ops.gates and M_init enters with weight 1 (with p = shift_prev(c)):

      M_{t-1} k = M_init k + p.A_t D_0 k + p.P_t S_0 k − (writes)
      D_C = c.A_C D_0 + c.P_C S_0 + (writes),   S_C = c.Bc_C S_0 + (writes)

  M_k, M_v are D's rows plus M_init's (one add per chunk). Carrying D rather than M with M_init
  as a constant extra slot keeps one slot fewer in every product and in the state map.
* One matmul of the keys against [Y's rows; k; M_init] gives D_0 k, S_0 k, k kᵀ and M_init k at once;
  the slot weights are contracted by one baddbmm that also subtracts the targets (the sign is
  folded into the precomputed weights: the loop carries minus the prediction errors).
* The state map is one baddbmm over the dv rows: Y_C = mix Y + Σ_t G_t (ke_t ⊗ k_t)ᵀ (compiled: one
  fused elementwise kernel). mix is expanded over the rows before the loop, so that each chunk's
  backward reduces mix's gradient over dh only; the sum over rows runs once, after the loop.
* The L2 normalisations and the triangular solve have hand-written backwards with fewer ops than
  autograd's decomposed ones (nlcore.ops.l2norm, `solve_unit_lower_product` of
  nlcore.ops.triangular); the solves are posed so that their results come back row-major (no
  copies in the views that follow).
* The read of M_mem (y_t = M_t q_t) runs once after the loop, batched over chunks; M_init q for
  the whole window is one product.

Where its Triton kernels run (CUDA, float32, chunk 64, dh 16/32/64) the loop is instead the op of
`loop.py`, a few launches per chunk with a hand-written backward (`FUSED`); the loop here is the
path elsewhere, and the reads after either are the same code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlcore.ops.gates import chunk_coeffs, shift_prev, step_factors
from nlcore.ops.hope_memory.loop import hope_loop_fwd, kernel_fits
from nlcore.ops.l2norm import l2norm_with_backward
from nlcore.ops.triangular import solve_unit_lower_product

# switches, read at every call (tests set them to compare both sides)
FUSED: bool | None = None  # the loop as loop.py's op (True) or the PyTorch loop here (False); None: the op where its kernels run
ELEMENTWISE: bool | None = None  # small contractions elementwise (True) or as batched matmuls (False); None: elementwise when compiling


def _fused(x: Tensor, chunk: int) -> bool:
    """Whether the loop runs as the fused op `hope_loop_fwd` (see FUSED)."""
    return kernel_fits(x.unflatten(2, (-1, chunk))) if FUSED is None else FUSED


def _elementwise() -> bool:
    """Small contractions (over the state slots, or a dot product per row) as elementwise ops that
    inductor fuses (when compiling), or as batched matmuls, fewer ops in eager mode (see ELEMENTWISE)."""
    return torch.compiler.is_compiling() if ELEMENTWISE is None else ELEMENTWISE


def hope_chunks(x: Tensor, q: Tensor, eta: Tensor, alpha: Tensor, beta: Tensor | None, init: Tensor,
                D: Tensor, S: Tensor | None, chunk: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """All full chunks of one window: x, q (B, H, T, dh) with T a multiple of `chunk`; gates
    (B, H, T) (beta None: no momentum); init (H, 3 dh, dh) the initial [M_mem; M_k; M_v] by rows;
    D, S (B, H, 3 dh, dh) the carried differences from init and momenta. Returns M_mem's reads
    y (B, H, T, dh) and the end (D, S)."""
    B, H, T, dh = x.shape
    N, C, m = T // chunk, chunk, 1 if beta is None else 2
    dv = 3 * dh

    def sp(t):  # (B, H, T, ...) -> (B, H, N, C, ...)
        return t.unflatten(2, (N, C))

    c = chunk_coeffs(sp(alpha), None if beta is None else sp(beta))
    f = step_factors(sp(eta), c, shift_prev(c), beta is not None)  # (B, H, N, ...)

    def loop(t):  # (B, H, N, ...) -> N contiguous (B, H, ...)
        return t.movedim(2, 0).contiguous().unbind(0)

    Y = torch.stack([D, S], 3) if m == 2 else D.unsqueeze(3)  # (B, H, dv, m, dk)
    if _fused(x, chunk):  # the loop as one op: Triton kernels, few launches per chunk (loop.py)
        Ys, k, G, _ = hope_loop_fwd(sp(x), f.pK, -f.pc, -f.ke, f.mix, init, Y)
        return (_read(Ys[:, :, :N, :dh].flatten(3, 4), k, G[..., :dh], sp(q), q, f, init), *_end(Ys[:, :, N], m))
    ew = _elementwise()
    dot = "sum" if ew else "matmul"  # the normalisations' backward arranged as the slot contractions
    mixE = f.mix.unsqueeze(-3).expand(B, H, N, dv, m, m)  # one map per state row (see above)
    per = zip(sp(x.contiguous()).unbind(2), loop(f.pK), loop(-f.pc.unsqueeze(-1)), loop(-f.ke.unsqueeze(-1)),
              loop(mixE))
    Ikv = init[:, dh:]  # [M_k; M_v]'s init (H, 2 dh, dh)
    initB = init.expand(B, H, dv, dh)  # init k rides in the keys' product with the state rows
    Rs, Ks, Gs = [], [], []
    for xs, pK, pcn, ken, mixn in per:
        Fkv = Y.flatten(2, 3)[:, :, dh * m::m] + Ikv  # M_k, M_v = D's rows dh..3dh (slot 0) + init: (B, H, 2 dh, dk)
        kx, vx = (xs @ Fkv.transpose(-1, -2)).split(dh, -1)  # M_k x, M_v x: (B, H, C, dh) each
        kvt = torch.cat([kx, vx, vx @ Fkv.transpose(-1, -2)], -1)  # + M_k M_v x, M_v M_v x
        nt = l2norm_with_backward(kvt.unflatten(-1, (4, dh)), dot)  # k; targets v, M_k v, M_v v: (B, H, C, 4, dh)
        k, tg = nt.split([1, 3], -2)  # one split: one op in the backward
        k = k.squeeze(-2)  # (B, H, C, dh)
        rows = torch.cat([Y.flatten(2, 3), k, initB], 2)  # (B, H, dv m + C + dv, dk)
        out = k @ rows.transpose(-1, -2)  # (B, H, C, dv m + C + dv)
        kY, kk, kI = out.split([dv * m, C, dv], -1)  # [D_0, S_0] k by (row, slot); k kᵀ; init k
        tgI = tg.reshape(B, H, C, dv) - kI  # targets minus init k (init's weight in M_{t-1} is 1)
        if ew:  # contractions over the m slots as fused elementwise kernels (compiled)
            R = tgI + (kY.view(B, H, C, dv, m) * pcn.view(B, H, C, 1, m)).sum(-1)
            kc = (ken * k.unsqueeze(-2)).view(B, H, C, m * dh)  # ke_{t,j} k_t by slot j
        else:  # as batched matmuls: fewer ops in eager mode
            R = torch.baddbmm(tgI.reshape(-1, dv, 1), kY.reshape(-1, dv, m), pcn.view(-1, m, 1)).view(B, H, C, dv)
            kc = (ken.view(-1, m, 1) @ k.reshape(-1, 1, dh)).view(B, H, C, m * dh)
        G = solve_unit_lower_product(pK, kk, R)  # minus the prediction errors (R: minus the errors' rhs)
        GK = (G.transpose(-1, -2) @ kc).view(B, H, dv, m, dh)  # the writes Σ_t G_t (ke_{t,j} k_t)ᵀ
        Rs.append(Y.flatten(2, 3)[:, :, :dh * m])  # what the read needs: M_mem's chunk-start slots, keys, G
        # k as stored in rows, not k itself: then the normalisation's output feeds only `rows`, and the
        # compiled normalisation kernel takes a fraction of the time (results/bench/profiles/NOTE.md)
        Ks.append(rows[:, :, dv * m:dv * m + C])
        Gs.append(G[..., :dh])
        if ew:
            Y = GK + (mixn.view(B, H, dv, m, m, 1) * Y.unsqueeze(-3)).sum(-2)
        else:
            Y = torch.baddbmm(GK.view(-1, m, dh), mixn.view(-1, m, m), Y.view(-1, m, dh)).view(B, H, dv, m, dh)
    return (_read(torch.stack(Rs, 2), torch.stack(Ks, 2), torch.stack(Gs, 2), sp(q), q, f, init), *_end(Y, m))


def _end(Y: Tensor, m: int) -> tuple[Tensor, Tensor | None]:
    """The end state (B, H, dv, m, dk) as (D, S) (S None without momentum)."""
    return Y[:, :, :, 0], (Y[:, :, :, 1] if m == 2 else None)


def _read(Y0: Tensor, k: Tensor, G: Tensor, qc: Tensor, q: Tensor, f, init: Tensor) -> Tensor:
    """M_mem's reads, batched over chunks, from its chunk-start slots Y0 (B, H, N, dh m, dk), the keys
    k (B, H, N, C, dh) and G's M_mem columns (B, H, N, C, dh); q (B, H, T, dh), qc its chunks:
    y_t = init q_t + Σ_j cc_tj (slot j) q_t − Σ_{s<=t} c.K[t,s] eta_s (k_s·q_t) G_s, the slot term
    transposed (Y0 q_tᵀ, not q Y0ᵀ) so that Y0's gradient comes back row-major. Returns y (B, H, T, dh)."""
    dh = q.shape[-1]
    qYT = (Y0 @ qc.transpose(-1, -2)).unflatten(-2, (dh, Y0.shape[-2] // dh))  # (B, H, N, dh, m, C)
    y = (qYT * f.cc.transpose(-1, -2).unsqueeze(-3)).sum(-2).transpose(-1, -2)  # (B, H, N, C, dh)
    y = y + (f.cK * (qc @ k.transpose(-1, -2))) @ G
    return y.flatten(2, 3) + q @ init[:, :dh].transpose(-1, -2)  # + init q
