"""The MLP memory's chunk-end cap on its distance from the anchor (`bound`, `naive.cap_factor`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.ops.mlp_memory import mlp_memory
from nlcore.ops.mlp_memory.naive import cap_factor

B, H, T, d, h, C = 2, 2, 11, 4, 8, 4


def _inputs(seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (F.normalize(torch.randn(B, H, T, d, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))
    eta = scale * torch.rand(B, H, T, generator=g, dtype=torch.float64)  # scale > 1: writes that overshoot
    alpha, beta = (0.9 + 0.1 * torch.rand(B, H, T, generator=g, dtype=torch.float64) for _ in range(2))
    W1 = torch.randn(B, H, h, d, generator=g, dtype=torch.float64) / 2
    W2 = torch.randn(B, H, d, h, generator=g, dtype=torch.float64) / 2
    anchor = (W1[0].clone(), W2[0].clone())  # (H, ...): the initial weights every row retains toward
    return q, k, v, eta, alpha, beta, W1, W2, anchor


def _distance(W1, W2, anchor):
    return ((W1 - anchor[0]).square().sum((-1, -2)) + (W2 - anchor[1]).square().sum((-1, -2))).sqrt()


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("momentum", [False, True])
def test_capped_chunk_path_equals_the_capped_token_reference_float64(normalize, momentum):
    q, k, v, eta, alpha, beta, W1, W2, anchor = _inputs(0, scale=20.0)
    beta = beta if momentum else None
    bound = torch.tensor([0.5, 1.0], dtype=torch.float64)  # per head
    outs = [mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=C, impl=impl, anchor=anchor, normalize=normalize,
                       bound=bound) for impl in ("token", "chunk")]
    free = mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=C, impl="chunk", anchor=anchor, normalize=normalize)
    (y0, (a0, b0), s0), (y1, (a1, b1), s1) = outs
    for x, y in ((y0, y1), (a0, a1), (b0, b1), *(zip(s0, s1) if momentum else ())):
        assert torch.allclose(x, y, atol=1e-12, rtol=1e-10)
    assert (_distance(*free[1], anchor) > bound[None] * 1.5).all()  # these writes leave the bound uncapped
    assert (_distance(a0, b0, anchor) <= bound[None] * (1 + 1e-12)).all()  # and the cap holds at the end


def test_a_bound_the_memory_never_reaches_changes_nothing():
    q, k, v, eta, alpha, beta, W1, W2, anchor = _inputs(1)
    free = mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=C, anchor=anchor, normalize=True)
    far = mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=C, anchor=anchor, normalize=True, bound=1e6)
    for x, y in ((free[0], far[0]), *zip(free[1], far[1]), *zip(free[2], far[2])):
        assert torch.equal(x, y)


def test_the_cap_factor_is_one_with_a_zero_gradient_inside_and_scales_to_the_bound_outside():
    R1 = torch.zeros(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    R2 = torch.zeros(1, 2, 4, 3, dtype=torch.float64)
    R2[0, 1] = 2.0  # head 1 at distance sqrt(12 * 4)
    f = cap_factor(R1, R2, torch.tensor(1.0, dtype=torch.float64))
    assert f[0, 0].item() == 1.0 and f[0, 1].item() == pytest.approx(1 / 48 ** 0.5)
    f.sum().backward()
    assert torch.isfinite(R1.grad).all() and R1.grad[0, 0].abs().max() == 0  # R = 0: no NaN from the norm


def test_the_capped_path_has_the_gradients_of_its_reference():
    """float64 gradcheck of the capped chunk path (through the PyTorch loop) on a tiny memory."""
    g = torch.Generator().manual_seed(2)
    b, hh, t, dd, hid, c = 1, 1, 6, 3, 4, 3
    q, k, v = (F.normalize(torch.randn(b, hh, t, dd, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))
    eta = 5 * torch.rand(b, hh, t, generator=g, dtype=torch.float64)
    alpha, beta = (0.9 + 0.1 * torch.rand(b, hh, t, generator=g, dtype=torch.float64) for _ in range(2))
    W1 = (torch.randn(b, hh, hid, dd, generator=g, dtype=torch.float64) / 2).requires_grad_()
    W2 = (torch.randn(b, hh, dd, hid, generator=g, dtype=torch.float64) / 2).requires_grad_()
    k.requires_grad_()
    anchor = (W1.detach()[0].clone(), W2.detach()[0].clone())  # fixed: gradcheck perturbs W1, W2

    def f(W1, W2, k):
        y, (w1, w2), _ = mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=c, anchor=anchor, normalize=True,
                                    bound=0.3)
        return y, w1, w2

    with torch.no_grad():
        assert _distance(*f(W1, W2, k)[1:], anchor).max().item() == pytest.approx(0.3)  # capped
    assert torch.autograd.gradcheck(f, (W1, W2, k))
