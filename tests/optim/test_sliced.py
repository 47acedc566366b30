"""nlcore.optim.sliced: the fused Adam(W) kernel run on slices is torch's fused step, bit for bit, and
the sliced gradient clip is torch's clip_grad_norm_."""

from __future__ import annotations

import pytest
import torch

from nlcore.cms import build_optimizer
from nlcore.config import LevelConfig
from nlcore.optim import sliced

SHAPES = [(3,), (70, 90), (sliced.SLICE + 7,), (2 * sliced.SLICE,), (5, 4, 3)]


def params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES]


def set_grads(ps, step: int) -> None:
    """Fresh gradients on step 0, then written in place (the graphed step's static buffers)."""
    g = torch.Generator().manual_seed(100 + step)
    for p in ps:
        new = torch.randn(p.shape, generator=g)
        if p.grad is None or step == 0:
            p.grad = new
        else:
            p.grad.copy_(new)


@pytest.mark.parametrize("cls,ref", [(sliced.SlicedAdamW, torch.optim.AdamW), (sliced.SlicedAdam, torch.optim.Adam)])
def test_sliced_step_is_torch_fused_step(cls, ref):
    a, b = params(0), params(0)
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    oa, ob = cls(a, **kw), ref(b, **kw)
    for step in range(5):
        set_grads(a, step)
        set_grads(b, step)
        for g in oa.param_groups + ob.param_groups:
            g["lr"] = 3e-3 * (step + 1)  # a schedule changes lr between steps
        oa.step()
        ob.step()
    cache = next(iter(oa._slice_caches.values()))
    assert cache.cut is not None and len(cache.cut[0]) > len(a)  # steps 2.. ran on the slices
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(oa.state[p][k], ob.state[q][k]), k
    ob.load_state_dict(oa.state_dict())  # same state layout: checkpoints interchange


def test_uncovered_options_fall_back_to_torch():
    a, b = params(1), params(1)
    oa = sliced.SlicedAdamW(a, lr=1e-2, amsgrad=True, fused=True)
    ob = torch.optim.AdamW(b, lr=1e-2, amsgrad=True, fused=True)
    for step in range(3):
        set_grads(a, step)
        set_grads(b, step)
        oa.step()
        ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_clip_grad_norm_matches_torch():
    for max_norm in (0.5, 1e6):  # clipping, and a bound that leaves the gradients alone
        a, b, cache = params(2), params(2), sliced.SliceCache()
        set_grads(a, 0)
        sliced.clip_grad_norm(a, max_norm, cache)  # first sight of these buffers: torch's own clip
        set_grads(a, 1)
        set_grads(b, 0)
        set_grads(b, 1)
        na = sliced.clip_grad_norm(a, max_norm, cache)  # the same buffers again: the sliced clip
        nb = torch.nn.utils.clip_grad_norm_(b, max_norm, foreach=True)
        torch.testing.assert_close(na, nb, rtol=1e-6, atol=0)
        for p, q in zip(a, b):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)
        assert cache.cut is not None


def test_cms_uses_the_sliced_optimizer_when_fused():
    ps = params(3)
    assert type(build_optimizer(LevelConfig("fast", optimizer="adamw"), ps, fused=True)) is sliced.SlicedAdamW
    assert type(build_optimizer(LevelConfig("fast", optimizer="adam"), ps, fused=True)) is sliced.SlicedAdam
    assert type(build_optimizer(LevelConfig("fast", optimizer="adamw"), ps, fused=None)) is torch.optim.AdamW


def test_flat_base_recognises_only_an_exact_tiling():
    flat = torch.arange(10.0)
    a, b, c = flat[:4].view(2, 2), flat[4:7], flat[7:]
    assert sliced.flat_base([a, b, c]) is flat
    assert sliced.flat_base([a, c, b]) is None  # out of order
    assert sliced.flat_base([a, b]) is None  # does not cover the buffer
    assert sliced.flat_base([flat[:4], flat[5:]]) is None  # a hole
    assert sliced.flat_base([torch.zeros(3), torch.zeros(2)]) is None  # not views
    assert sliced.flat_base([flat.view(2, 5).t()]) is None  # not 1-D / contiguous


def test_clip_flat_matches_torch():
    for max_norm in (0.5, 1e6):
        a, b = params(2), params(2)
        set_grads(b, 1)
        flat = torch.cat([p.grad.flatten() for p in b])
        for p, g in zip(a, flat.split([p.numel() for p in a])):
            p.grad = g.view_as(p)
        assert sliced.flat_base([p.grad for p in a]) is flat
        na = sliced.clip_flat(flat, max_norm)
        nb = torch.nn.utils.clip_grad_norm_(b, max_norm, foreach=True)
        torch.testing.assert_close(na, nb, rtol=1e-6, atol=0)
        for p, q in zip(a, b):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)
