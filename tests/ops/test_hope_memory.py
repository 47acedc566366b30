"""nlcore.ops.hope_chunk: the hand-written triangular solve against its equation and autograd."""

from __future__ import annotations

import torch

from nlcore.ops.hope_memory.chunk import _Solve


def test_solve_is_the_unit_lower_triangular_system_with_autograd_gradients(solve_path):
    g = torch.Generator().manual_seed(0)
    B, C, d = 3, 6, 4
    pK = (torch.rand(B, C, C, generator=g, dtype=torch.float64) * 0.5).tril(-1).requires_grad_()
    kk = torch.randn(B, C, C, generator=g, dtype=torch.float64, requires_grad=True)
    R = torch.randn(B, C, d, generator=g, dtype=torch.float64, requires_grad=True)
    G = _Solve.apply(pK, kk, R)
    eye = torch.eye(C, dtype=torch.float64)
    torch.testing.assert_close((eye + pK * kk) @ G, R, rtol=0, atol=1e-12)  # (I + pK ⊙ kk) G = R
    ref = torch.linalg.solve_triangular(pK * kk, R, upper=False, unitriangular=True)
    gG = torch.randn(B, C, d, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(G, (pK, kk, R), gG)
    want = torch.autograd.grad(ref, (pK, kk, R), gG)
    lower = torch.ones(C, C, dtype=torch.bool).tril(-1)
    # pK's entries on and above the diagonal are structural zeros: only its strictly lower part is compared
    torch.testing.assert_close(got[0][:, lower], want[0][:, lower], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[2], want[2], rtol=1e-10, atol=1e-12)


def test_elementwise_slot_contractions_equal_the_matmul_ones(monkeypatch):
    """hope_chunks contracts over the state slots elementwise when compiled, by matmuls in eager
    mode: both arrangements give the same values and gradients."""
    from nlcore.models.memory_layers import SelfModifyingMemory
    from nlcore.ops.hope_memory import chunk as hope_chunk

    torch.manual_seed(0)
    mem = SelfModifyingMemory(16, 2, chunk=8).double()
    st = {k: 0.1 * torch.randn(3, *s, dtype=torch.float64) for k, s in mem.state_shapes().items()}
    u = torch.randn(3, 32, 16, dtype=torch.float64)
    out = {}
    for ew in (False, True):
        monkeypatch.setattr(hope_chunk, "ELEMENTWISE", ew)
        y, new = mem(u, st, None)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + sum(v.sum() for v in new.values())
        out[ew] = [y, *new.values(), *torch.autograd.grad(loss, list(mem.parameters()))]
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
