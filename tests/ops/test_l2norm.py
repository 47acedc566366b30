"""nlcore.ops.l2norm: the L2 normalisation, its hand-written backward and its halves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.ops.l2norm import EPS, l2norm, l2norm_backward, l2norm_parts, l2norm_with_backward


def rows(seed=0):
    """Generic rows and, in row (0, 0, 0..1), a norm below eps and a zero row (both clamped)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    clamped = x.clone()
    clamped[0, 0, 0] = 1e-14 * clamped[0, 0, 0]
    clamped[0, 0, 1] = 0.0
    return x, clamped, torch.randn(x.shape, generator=g, dtype=torch.float64)


def value_and_grad(f, x, w):
    xx = x.clone().requires_grad_(True)
    y = f(xx)
    return y, torch.autograd.grad((y * w).sum(), xx)[0]


def test_l2norm_is_f_normalize():
    _, x, w = rows()
    y, g = value_and_grad(l2norm, x, w)
    y_ref, g_ref = value_and_grad(lambda t: F.normalize(t, dim=-1), x, w)
    assert torch.equal(y, y_ref)
    assert ((g - g_ref).abs().max() / g_ref.abs().max()).item() < 1e-14
    assert y[0, 0, 1].abs().max() == 0  # a zero row stays zero


@pytest.mark.parametrize("dot", ["sum", "matmul"])
def test_hand_written_backward_equals_autograd_and_gradchecks(dot):
    """`l2norm_with_backward` (both arrangements of ⟨g, y⟩) = `l2norm` through autograd in value and
    gradient, also on rows whose norm is clamped (below eps, and zero); float64 gradcheck."""
    x, clamped, w = rows()
    assert torch.autograd.gradcheck(lambda t: l2norm_with_backward(t, dot), (x.clone().requires_grad_(True),))
    got = value_and_grad(lambda t: l2norm_with_backward(t, dot), clamped, w)
    want = value_and_grad(l2norm, clamped, w)
    assert torch.equal(got[0], want[0])
    # gradients of the clamped rows are ~1/eps: compare relative to scale
    assert ((got[1] - want[1]).abs().max() / want[1].abs().max()).item() < 1e-14


@pytest.mark.parametrize("addcmul", [False, True])
def test_parts_and_backward_recompute_the_gradient(addcmul):
    """The two halves, as a hand-written backward that recomputes the forward from x uses them."""
    _, x, w = rows(1)
    y, n, r = l2norm_parts(x)
    assert torch.equal(y, l2norm(x)) and torch.equal(r, n.clamp_min(EPS))
    got = l2norm_backward(w, y, n, r, addcmul=addcmul)
    want = value_and_grad(l2norm, x, w)[1]
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-14
    with pytest.raises(ValueError, match="dot"):
        l2norm_backward(w, y, n, r, dot="einsum")
