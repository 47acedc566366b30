"""Tests for nlcore.ops.mlp_memory: the chunk-parallel MLP memory (chunk.py) equals its token-by-token
reference (naive.py), and chunk=1 equals online gradient descent with autograd gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.ops.mlp_memory import chunk as mlp_chunk
from nlcore.ops.mlp_memory import mlp_memory

NAMES = ("q", "k", "v", "eta", "alpha", "beta", "W1", "W2", "S1", "S2")


def make(B=2, H=3, T=37, d=5, hd=7, dtype=torch.float64, momentum=True, seed=0):
    """Inputs with sensible gates and small weights; leaves that require grad."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    x = dict(q=r(B, H, T, d), k=r(B, H, T, d) / d**0.5, v=r(B, H, T, d),
             eta=0.5 * torch.sigmoid(r(B, H, T)),  # (0, 0.5)
             alpha=0.9 + 0.1 * torch.sigmoid(r(B, H, T)),  # (0.9, 1)
             beta=0.9 * torch.sigmoid(r(B, H, T)) if momentum else None,  # (0, 0.9)
             W1=0.1 / d**0.5 * r(B, H, hd, d), W2=0.1 / d**0.5 * r(B, H, d, hd),
             S1=0.01 * r(B, H, hd, d) if momentum else None,
             S2=0.01 * r(B, H, d, hd) if momentum else None)
    return {n: (t.requires_grad_() if t is not None else None) for n, t in x.items()}


@pytest.fixture(params=["autograd", "op"])
def loop(request, monkeypatch):
    """Run the chunk path's loop both ways: a plain autograd graph, and loop.py's op with its
    hand-written backward (its PyTorch loops on CPU; the Triton kernels are in tests/ops/test_mlp_memory_loop.py)."""
    monkeypatch.setattr(mlp_chunk, "LOOP", request.param)
    return request.param


def run(x, **kw):
    return mlp_memory(*(x[n] for n in NAMES), **kw)


def flat(out):
    y, (W1, W2), S = out
    return [y, W1, W2] + ([] if S is None else list(S))


def grads(x, out, seed=1):
    """Gradients of a random linear functional of every output w.r.t. every input."""
    g = torch.Generator().manual_seed(seed)
    outs = flat(out)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    leaves = [x[n] for n in NAMES if x[n] is not None]
    return torch.autograd.grad(loss, leaves)


def max_err(a, b):
    return max((u - w).abs().max().item() for u, w in zip(a, b))


def online_gd(x):
    """θ ← α θ + (β S − η ∇ℓ_t(θ)) per token, ∇ℓ_t from torch.autograd.grad; y_t = M_θ_t(q_t)."""
    W1, W2 = x["W1"].detach().clone(), x["W2"].detach().clone()
    mom = x["beta"] is not None
    S1 = x["S1"].detach().clone() if mom else None
    S2 = x["S2"].detach().clone() if mom else None
    ys = []
    for t in range(x["q"].shape[2]):
        k, v, q = (x[n][:, :, t].detach() for n in ("k", "v", "q"))  # (B, H, d)
        p1, p2 = W1.clone().requires_grad_(), W2.clone().requires_grad_()
        pred = k + (p2 @ F.silu(p1 @ k.unsqueeze(-1))).squeeze(-1)
        loss = 0.5 * ((pred - v) ** 2).sum()  # rows are independent: sum gives per-row grads
        g1, g2 = torch.autograd.grad(loss, (p1, p2))
        eta, alpha = (x[n][:, :, t, None, None].detach() for n in ("eta", "alpha"))
        if mom:
            beta = x["beta"][:, :, t, None, None].detach()
            S1, S2 = beta * S1 - eta * g1, beta * S2 - eta * g2
            W1, W2 = alpha * W1 + S1, alpha * W2 + S2
        else:
            W1, W2 = alpha * W1 - eta * g1, alpha * W2 - eta * g2
        ys.append(q + (W2 @ F.silu(W1 @ q.unsqueeze(-1))).squeeze(-1))
    return [torch.stack(ys, 2), W1, W2] + ([S1, S2] if mom else [])


@pytest.mark.parametrize("impl", ["chunk", "token"])
@pytest.mark.parametrize("momentum", [True, False])
def test_chunk1_is_online_gd_with_autograd_gradients(impl, momentum):
    x = make(T=11, momentum=momentum)
    out = flat(run(x, chunk=1, impl=impl))
    ref = online_gd(x)
    assert len(out) == len(ref)
    assert max_err(out, ref) < 1e-12


def test_chunk_gradients_are_taken_at_chunk_start():
    # with chunk > 1 the result differs from online GD (gradients frozen at θ_0 within a chunk)
    x = make(T=11, momentum=True)
    assert max_err(flat(run(x, chunk=4)), online_gd(x)) > 1e-6


@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("T,chunk", [(32, 8), (37, 8), (5, 8), (8, 8), (37, 1)])
def test_chunk_equals_token_float64(T, chunk, momentum, loop):
    x = make(T=T, momentum=momentum)
    a, b = run(x, chunk=chunk, impl="chunk"), run(x, chunk=chunk, impl="token")
    assert (a[2] is None) == (b[2] is None) == (not momentum)
    assert max_err(flat(a), flat(b)) < 1e-10
    assert max_err(grads(x, a), grads(x, b)) < 1e-10


@pytest.mark.parametrize("momentum", [True, False])
def test_chunk_equals_token_float32(momentum, loop):
    x = make(B=2, H=2, T=45, d=8, hd=16, dtype=torch.float32, momentum=momentum)
    a, b = run(x, chunk=16, impl="chunk"), run(x, chunk=16, impl="token")
    assert max_err(flat(a), flat(b)) < 1e-5
    assert max_err(grads(x, a), grads(x, b)) < 1e-5
    assert a[0].dtype == torch.float32


def test_rows_are_independent(loop):
    x = make(B=3, T=20)
    y, (W1, W2), (S1, S2) = run(x, chunk=6)
    b = 1
    xb = {n: (t[b:b + 1] if t is not None else None) for n, t in x.items()}
    yb, (W1b, W2b), (S1b, S2b) = run(xb, chunk=6)
    assert max_err([y[b:b + 1], W1[b:b + 1], W2[b:b + 1], S1[b:b + 1], S2[b:b + 1]],
                   [yb, W1b, W2b, S1b, S2b]) < 1e-12


@pytest.mark.parametrize("impl", ["chunk", "token"])
def test_state_carries_across_calls(impl, loop):
    x = make(T=29)
    full = flat(run(x, chunk=8, impl=impl))
    seq = ("q", "k", "v", "eta", "alpha", "beta")
    first = {n: (x[n][:, :, :16] if n in seq else x[n]) for n in NAMES}
    y1, (W1, W2), (S1, S2) = run(first, chunk=8, impl=impl)
    second = {n: x[n][:, :, 16:] for n in seq} | dict(W1=W1, W2=W2, S1=S1, S2=S2)
    y2, (W1, W2), (S1, S2) = run(second, chunk=8, impl=impl)
    assert max_err(full, [torch.cat([y1, y2], 2), W1, W2, S1, S2]) < 1e-12


def test_zero_momentum_state_default_and_no_momentum_ignores_S():
    x = make(T=13)
    x0 = x | dict(S1=None, S2=None)
    xz = x | dict(S1=torch.zeros_like(x["S1"]), S2=torch.zeros_like(x["S2"]))
    assert max_err(flat(run(x0, chunk=4)), flat(run(xz, chunk=4))) == 0
    xn = x | dict(beta=None)
    out = run(xn, chunk=4)
    assert out[2] is None
    assert max_err(flat(out), flat(run(xn | dict(S1=None, S2=None), chunk=4))) == 0


def test_half_precision_inputs_compute_in_float32():
    x = {n: (t.detach().to(torch.bfloat16) if t is not None else None)
         for n, t in make(T=10, dtype=torch.float32).items()}
    y, (W1, _), (S1, _) = run(x, chunk=4)
    x32 = {n: (t.float() if t is not None else None) for n, t in x.items()}
    y32 = run(x32, chunk=4)[0]
    assert y.dtype == W1.dtype == S1.dtype == torch.bfloat16
    assert torch.equal(y, y32.to(torch.bfloat16))


def test_bad_inputs_raise_naming_the_argument():
    x = make(T=6)
    with pytest.raises(ValueError, match="impl"):
        run(x, impl="scan")
    with pytest.raises(ValueError, match="chunk"):
        run(x, chunk=0)
    with pytest.raises(ValueError, match="chunk"):
        run(x, chunk=2.0)
    with pytest.raises(ValueError, match="eta"):
        run(x | dict(eta=x["eta"][:, :, :5]))
    with pytest.raises(ValueError, match="W2"):
        run(x | dict(W2=x["W2"].transpose(-1, -2)))
    with pytest.raises(ValueError, match="S1"):
        run(x | dict(S1=x["S1"][:, :, :-1]))
    with pytest.raises(ValueError, match="^k must"):
        run(x | dict(k=x["k"][..., :-1]))
    with pytest.raises(ValueError, match="^q must"):
        run(x | dict(q=x["q"][0]))


def test_bad_loop_setting_names_it(monkeypatch):
    monkeypatch.setattr(mlp_chunk, "LOOP", "fused")
    with pytest.raises(ValueError, match="LOOP"):
        run(make(T=6))


def _anchor_inputs(dtype=torch.float64, T=37, momentum=True, seed=3):
    g = torch.Generator().manual_seed(seed)
    B, H, d, h = 2, 2, 6, 10
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    gate = lambda lo, hi: lo + (hi - lo) * torch.rand(B, H, T, generator=g, dtype=dtype)  # noqa: E731
    x = dict(q=r(B, H, T, d), k=torch.nn.functional.normalize(r(B, H, T, d), dim=-1), v=r(B, H, T, d),
             eta=gate(0.05, 0.5), alpha=gate(0.8, 1.0), beta=gate(0.1, 0.9) if momentum else None,
             W1=0.3 * r(B, H, h, d), W2=0.3 * r(B, H, d, h))
    anchor = (0.3 * r(H, h, d), 0.3 * r(H, d, h))  # shared by the rows, like meta-learned weights
    return x, anchor


@pytest.mark.parametrize("momentum", [True, False])
def test_anchor_chunk_equals_token_float64(momentum, loop):
    x, anchor = _anchor_inputs(momentum=momentum)
    leaves = [t.requires_grad_(True) for t in (*[v for v in x.values() if v is not None], *anchor)]
    outs = {}
    for impl in ("chunk", "token"):
        y, (W1, W2), S = mlp_memory(**x, chunk=8, impl=impl, anchor=anchor)
        flat = [y, W1, W2, *(S or ())]
        loss = sum((f * torch.linspace(-1, 1, f.numel(), dtype=f.dtype).view_as(f)).sum() for f in flat)
        outs[impl] = (flat, torch.autograd.grad(loss, leaves))
    (fc, gc), (ft, gt) = outs["chunk"], outs["token"]
    assert max((a - b).abs().max() for a, b in zip(fc, ft)) < 1e-10
    assert max((a - b).abs().max() for a, b in zip(gc, gt)) < 1e-10
    assert gc[-1].abs().max() > 1e-6  # the anchor gets a gradient


def test_anchor_without_writes_holds_the_anchor():
    """eta = 0 and theta_0 = anchor: retention toward the anchor leaves theta exactly there."""
    x, anchor = _anchor_inputs(momentum=False)
    x["eta"] = torch.zeros_like(x["eta"])
    x["W1"], x["W2"] = (a.expand_as(w).clone() for a, w in zip(anchor, (x["W1"], x["W2"])))
    _, (W1, W2), _ = mlp_memory(**x, chunk=8, anchor=anchor)
    assert (W1 - anchor[0]).abs().max() < 1e-12 and (W2 - anchor[1]).abs().max() < 1e-12
    plain, (P1, _), _ = mlp_memory(**x, chunk=8)  # toward zero instead: the weights shrink
    assert P1.abs().max() < W1.abs().max()


def test_zero_anchor_is_no_anchor():
    x, anchor = _anchor_inputs()
    zero = tuple(torch.zeros_like(a) for a in anchor)
    a = mlp_memory(**x, chunk=8, anchor=zero)
    b = mlp_memory(**x, chunk=8)
    assert (a[0] - b[0]).abs().max() < 1e-12 and (a[1][0] - b[1][0]).abs().max() < 1e-12


@pytest.mark.parametrize("momentum,anchored", [(True, False), (False, False), (True, True)])
def test_chunk_loop_op_budget(momentum, anchored):
    """The chunk path's loop over chunks is launch-bound on a GPU, so its cost is its number of
    operations per chunk (forward + backward): aten ops counted on CPU, the difference between 8
    and 4 chunks (each with a short last chunk) over 4. The budget: 15 matmuls per chunk, 5 forward
    (3 for the factors at θ_0, 1 for W1 and S1, 1 for W2 and S2) and 10 backward, and at most 90
    non-view ops; everything that does not depend on the chunk's start state stays out of the loop."""
    from torch.utils._python_dispatch import TorchDispatchMode

    mm = {"mm", "bmm", "baddbmm", "addmm"}

    class Count(TorchDispatchMode):
        ops = mms = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 0 if func.is_view else 1
            self.mms += func.overloadpacket.__name__ in mm
            return func(*args, **(kwargs or {}))

    def count(n_chunks: int) -> tuple[int, int]:
        x, anchor = _anchor_inputs(dtype=torch.float32, T=8 * n_chunks + 3, momentum=momentum)
        leaves = [t.requires_grad_(True) for t in (*[t for t in x.values() if t is not None], *anchor)]
        with Count() as c:
            y, (W1, W2), S = mlp_memory(**x, chunk=8, anchor=anchor if anchored else None)
            sum(t.sum() for t in (y, W1, W2, *(S or ()))).backward(inputs=leaves)
        return c.ops, c.mms

    (ops4, mms4), (ops8, mms8) = count(4), count(8)
    assert (mms8 - mms4) / 4 <= 15, (mms8 - mms4) / 4
    assert (ops8 - ops4) / 4 <= 90, (ops8 - ops4) / 4


@pytest.mark.parametrize("impl", ["chunk", "token"])
def test_empty_window_keeps_the_state(impl, loop):
    x = make(T=0)
    y, (W1, W2), (S1, S2) = run(x, chunk=4, impl=impl)
    assert y.shape == x["q"].shape
    assert max_err([W1, W2, S1, S2], [x[n] for n in ("W1", "W2", "S1", "S2")]) == 0
