"""HOPE's in-forward training: the outer pass over the whole window (the default) equals the
segments' own graphs (the reference) in logits, carried state and every parameter's gradient."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from nlcore.config import ModelConfig
from nlcore.models import build_model
from nlcore.models.base import Resets
from nlcore.models.hope import offset_matmul

V = 11


def make(dtype=torch.float64, **kw):
    cfg = ModelConfig(**{**dict(kind="hope", d_model=16, d_ff=24, n_layers=2, n_heads=2, mem_chunk=4,
                                cms_chunks="8,16", cms_lr=0.3), **kw})
    torch.manual_seed(0)
    return build_model(cfg, V).to(dtype)


def step(model, x, y, state, resets=None):
    """Logits, new state and the parameters' gradients of the summed next-character loss."""
    model.zero_grad(set_to_none=True)
    logits, new = model(x, state, resets, targets=y)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
    return logits, new, {n: p.grad.clone() for n, p in model.named_parameters()}


@contextlib.contextmanager
def route(model, mode: str):
    """outer_pass = mode inside the block; yields the widths of the windows the stack runs on."""
    widths, stack = [], model._stack
    model.outer_pass = mode
    model._stack = lambda xs, *a, **k: (widths.append(xs.shape[1]), stack(xs, *a, **k))[1]
    try:
        yield widths
    finally:
        del model._stack


def took_their_routes(widths: dict, T: int) -> bool:
    """The window pass runs the stack once per segment and once over the whole window; without
    that, both modes would run one path and the comparisons would prove nothing."""
    return sum(widths["segments"]) == T and widths["window"] == [*widths["segments"], T]


def both(model, x, y, state, resets=None):
    out, widths = {}, {}
    for mode in ("window", "segments"):
        with route(model, mode) as widths[mode]:
            out[mode] = step(model, x, y, state, resets)
    assert took_their_routes(widths, x.shape[1])
    return out["window"], out["segments"]


def inputs(model, B=3, T=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, V, (B, T + 1), generator=g)
    dt = next(model.parameters()).dtype
    state = {k: 0.1 * torch.randn(v.shape, generator=g, dtype=dt) for k, v in model.init_state(B).items()}
    return xy[:, :-1], xy[:, 1:], state


def largest(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("kw", [{}, {"momentum": False}, {"cms_chunks": "8"}, {"cms_chunks": "8,8,32"}])
def test_window_pass_equals_segment_graphs_float64(kw):
    m = make(**kw)
    x, y, st = inputs(m)
    (lw, sw, gw), (ls, ss, gs) = both(m, x, y, st)
    assert (lw - ls).abs().max() < 1e-10
    assert largest(sw, ss) < 1e-10
    assert largest(gw, gs) < 1e-10 * max(1.0, max(g.abs().max().item() for g in gs.values()))
    assert all(g.abs().max() > 0 for n, g in gs.items() if ".chain." in n and "weight" in n)  # not vacuous


def test_window_pass_equals_segment_graphs_with_a_reset_at_the_window_start():
    m = make()
    x, y, st = inputs(m)
    mask = torch.zeros(3, 32, dtype=torch.bool)
    mask[1, 0] = True  # row 1 starts a document with this window: no cut inside
    (lw, sw, gw), (ls, ss, gs) = both(m, x, y, st, Resets(mask, ()))
    assert (lw - ls).abs().max() < 1e-10 and largest(sw, ss) < 1e-10 and largest(gw, gs) < 1e-9


def test_window_pass_equals_segment_graphs_float32():
    m = make(torch.float32)
    x, y, st = inputs(m)
    (lw, sw, gw), (ls, ss, gs) = both(m, x, y, st)
    scale = max(g.abs().max().item() for g in gs.values())
    assert (lw - ls).abs().max() < 1e-5 * ls.abs().max()
    assert largest(gw, gs) < 1e-5 * scale


def test_window_pass_gradient_reaches_the_carried_state():
    """Full backpropagation across windows: the gradient with respect to the state the window starts
    from is the same in both passes (the window pass starts its memories from that state)."""
    m = make()
    x, y, st = inputs(m)
    grads, widths = {}, {}
    for mode in ("window", "segments"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in st.items()}
        with route(m, mode) as widths[mode]:
            logits, _ = m(x, leaves, None, targets=y)
        F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
        grads[mode] = {k: v.grad for k, v in leaves.items() if v.grad is not None}
    assert took_their_routes(widths, x.shape[1])
    assert set(grads["window"]) == set(grads["segments"]) and grads["window"]
    assert largest(grads["window"], grads["segments"]) < 1e-10


def test_offset_matmul_uses_one_offset_per_block_of_positions():
    g = torch.Generator().manual_seed(0)
    u, D = torch.randn(2, 12, 5, generator=g, dtype=torch.float64), torch.randn(2, 3, 7, 5, generator=g,
                                                                                dtype=torch.float64)
    got = offset_matmul(u, D)
    for b in range(2):
        for t in range(12):
            assert torch.allclose(got[b, t], D[b, t // 4] @ u[b, t], atol=1e-12)
    assert torch.allclose(offset_matmul(u, D[:, 0]), torch.einsum("bmn,bsn->bsm", D[:, 0], u), atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_window_pass_equals_segment_graphs_on_cuda_compiled():
    """float32 on the GPU with the block and head compiled as the trainer compiles them, at a shape
    where the memories run their Triton kernels (chunk 64, head dimension 64)."""
    from nlcore.accel import compile as compiling

    m = make(torch.float32, d_model=128, d_ff=96, n_heads=2, mem_chunk=64, cms_chunks="64,128").cuda()
    m.compile_parts(compiling.compiler(compiling.resolve("auto", torch.device("cuda"))))
    x, y, st = inputs(m, B=4, T=256)
    x, y, st = x.cuda(), y.cuda(), {k: v.cuda() for k, v in st.items()}
    (lw, sw, gw), (ls, ss, gs) = both(m, x, y, st)
    scale = max(g.abs().max().item() for g in gs.values())
    assert (lw - ls).abs().max() < 1e-5 * ls.abs().max()
    assert largest(sw, ss) < 1e-5 * max(v.abs().max().item() for v in ss.values())
    assert largest(gw, gs) < 1e-5 * scale
