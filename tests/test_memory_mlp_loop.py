"""Tests for nlcore.memory.mlp_loop: the hand-written backward of the MLP memory's chunk loop
against finite differences (gradcheck, float64) and against autograd through the same loop, and
the loop under torch.compile (one graph)."""

from __future__ import annotations

import pytest
import torch

from nlcore.memory.mlp_loop import ChunkLoop, factors, silu_grads


def loop_inputs(B=2, H=2, N=3, C=4, d=3, h=5, m=2, anchored=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x = dict(X1=0.3 * r(B, H, d, m, h), X2=0.3 * r(B, H, h, m, d), k=r(B, H, N, C, d) / d**0.5,
             kv=r(B, H, N, C, d), u=0.1 * r(B, H, N, C, m),
             mix=0.9 * torch.eye(m, dtype=torch.float64) + 0.05 * r(B, H, N, m, m),  # near the identity
             a1=0.3 * r(H, d, h) if anchored else None, a2=0.3 * r(H, h, d) if anchored else None)
    return {n: t if t is None else t.requires_grad_(True) for n, t in x.items()}


def autograd_loop(X1, X2, k, kv, u, mix, a1, a2):
    """The same loop with its backward left to autograd (the definition the hand-written one must match)."""
    from nlcore.memory.mlp_loop import _mix, _outer, _plus

    starts, out = [], []
    for n in range(k.shape[2]):
        e, a, delta = factors(_plus(X1[:, :, :, 0], a1), _plus(X2[:, :, :, 0], a2), k[:, :, n], kv[:, :, n])
        starts.append((X1, X2))
        out.append((e, a, delta))
        X1 = _mix(mix[:, :, n], X1) + _outer(k[:, :, n], u[:, :, n], delta)
        X2 = _mix(mix[:, :, n], X2) + _outer(a, u[:, :, n], e)
    S1, S2 = (torch.stack(x, 2) for x in zip(*starts))
    e, a, delta = (torch.stack(x, 2) for x in zip(*out))
    return S1, S2, e, a, delta, X1, X2


@pytest.mark.parametrize("m,anchored", [(2, True), (2, False), (1, False), (1, True)])
def test_backward_matches_finite_differences(m, anchored):
    x = loop_inputs(m=m, anchored=anchored)
    args = tuple(x.values())
    assert torch.autograd.gradcheck(lambda *a: ChunkLoop.apply(*a), args)


@pytest.mark.parametrize("m", [1, 2])
def test_backward_matches_autograd_through_the_loop(m):
    x = loop_inputs(B=3, N=5, C=6, d=4, h=7, m=m, seed=1)
    leaves = [t for t in x.values() if t is not None]
    g = torch.Generator().manual_seed(2)
    got, ref = ChunkLoop.apply(*x.values()), autograd_loop(*x.values())
    assert max((a - b).abs().max() for a, b in zip(got, ref)) < 1e-12
    w = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in got]
    ga = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(got, w)), leaves)
    gb = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(ref, w)), leaves)
    assert max((a - b).abs().max() for a, b in zip(ga, gb)) < 1e-10


def test_unused_outputs_get_zero_gradients():
    """Only the end state is used: the starts' and factors' gradients are absent (zeros), as in training
    where the reads use them all, or at evaluation where none is."""
    x = loop_inputs(seed=3)
    leaves = [t for t in x.values() if t is not None]
    ga = torch.autograd.grad(ChunkLoop.apply(*x.values())[-1].sum(), leaves)
    gb = torch.autograd.grad(autograd_loop(*x.values())[-1].sum(), leaves)
    assert max((a - b).abs().max() for a, b in zip(ga, gb)) < 1e-10


def test_silu_second_derivative():
    z = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
    d1, d2 = silu_grads(z)
    (auto1,) = torch.autograd.grad(torch.nn.functional.silu(z).sum(), z, create_graph=True)
    (auto2,) = torch.autograd.grad(auto1.sum(), z)
    assert (d1 - auto1).abs().max() < 1e-14 and (d2 - auto2).abs().max() < 1e-14


def test_compiles_to_one_graph_and_matches_eager():
    """torch.compile(fullgraph=True) traces the Function with its backward (no graph break)."""
    from nlcore.memory.mlp import mlp_memory

    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    B, H, T, d, hd = 2, 2, 20, 4, 6
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = dict(q=r(B, H, T, d), k=r(B, H, T, d) / 2, v=r(B, H, T, d), eta=0.3 * torch.rand(B, H, T, generator=g),
             alpha=0.9 + 0.1 * torch.rand(B, H, T, generator=g), beta=0.9 * torch.rand(B, H, T, generator=g),
             W1=0.2 * r(B, H, hd, d), W2=0.2 * r(B, H, d, hd))
    leaves = {n: t.requires_grad_(True) for n, t in x.items()}

    def f(**kw):
        y, (W1, W2), (S1, S2) = mlp_memory(**kw, chunk=8)
        return y.square().sum() + W1.sum() + (W2 * S2).sum() + S1.sum()

    eager = f(**leaves)
    ge = torch.autograd.grad(eager, list(leaves.values()))
    comp = torch.compile(f, fullgraph=True, backend="aot_eager")(**leaves)
    gc = torch.autograd.grad(comp, list(leaves.values()))
    assert (eager - comp).abs() < 1e-4 * eager.abs()
    assert max(((a - b).abs().max() / (a.abs().max() + 1e-6)).item() for a, b in zip(ge, gc)) < 1e-5
