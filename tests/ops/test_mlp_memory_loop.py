"""nlcore.ops.mlp_memory.loop: the MLP memory's loop over chunks as one op with a hand-written backward.

On CPU the op runs its PyTorch loops: their backward is checked by float64 gradcheck and against
autograd through the forward loop. The Triton kernels are checked against those loops under
Triton's interpreter when Triton is installed (not a CI dependency) and on a CUDA device when there
is one. That the whole memory equals its token reference with the op is in tests/ops/test_mlp_memory.py.
"""

from __future__ import annotations

import pytest
import torch

from nlcore.ops.mlp_memory import loop as mlp_loop
from tests.ops.test_triangular import run_interpreted


def inputs(B=2, H=2, N=3, C=4, d=3, h=5, m=2, anchored=False, dtype=torch.float64, device="cpu", seed=0):
    """The op's inputs at sensible scales: X1, X2, k, kv, u, mix, a1, a2."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (scale * torch.randn(*s, generator=g, dtype=dtype)).to(device)

    X1, X2 = r(B, H, m, h, d, scale=0.3), r(B, H, m, d, h, scale=0.3)
    k = torch.nn.functional.normalize(r(B, H, N, C, d), dim=-1)
    kv, u, mix = r(B, H, N, C, d), r(B, H, N, C, m, scale=0.2), r(B, H, N, m, m, scale=0.5)
    a1, a2 = (r(H, h, d, scale=0.3), r(H, d, h, scale=0.3)) if anchored else (None, None)
    return [X1, X2, k, kv, u, mix, a1, a2]


def leaves(x):
    return [t.requires_grad_() for t in x if t is not None]


def loss_of(outs, seed=1):
    g = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum() for o in outs)


@pytest.mark.parametrize("m,anchored", [(2, False), (1, False), (2, True)])
def test_op_backward_equals_autograd_through_the_loop(m, anchored):
    x = inputs(m=m, anchored=anchored)
    ls = leaves(x)
    got = torch.autograd.grad(loss_of(mlp_loop.mlp_loop_fwd(*x)), ls)
    want = torch.autograd.grad(loss_of(mlp_loop.forward_torch(*x)), ls)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m,anchored", [(2, True), (1, False)])
def test_op_gradcheck_float64(m, anchored):
    x = inputs(B=1, H=2, N=2, C=3, d=2, h=3, m=m, anchored=anchored)
    leaves(x)
    idx = [i for i, t in enumerate(x) if t is not None]

    def f(*ts):
        full = list(x)
        for i, t in zip(idx, ts):
            full[i] = t
        return mlp_loop.mlp_loop_fwd(*full)

    assert torch.autograd.gradcheck(f, tuple(x[i] for i in idx))


@pytest.mark.parametrize("strided", [False, True])
def test_op_registration(strided):
    x = inputs(dtype=torch.float32, anchored=True)
    if strided:  # k, kv, u as the memory passes them: views of a wider layout (the fakes must stay contiguous)
        x[2], x[3], x[4] = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in x[2:5])
    torch.library.opcheck(mlp_loop.mlp_loop_fwd, tuple(x))
    S1, S2, e, a, delta = mlp_loop.mlp_loop_fwd(*x)
    grads = [torch.randn_like(t) for t in (S1, S2, e, a, delta)]
    torch.library.opcheck(mlp_loop.mlp_loop_bwd, (S1, S2, x[2], x[4], x[5], x[6], x[7], e, a, delta, *grads))


def test_kernel_fits_only_cuda_float32_and_its_sizes():
    X1, _, k, *_ = inputs(C=16, d=16, h=32, dtype=torch.float32)
    assert not mlp_loop.kernel_fits(X1, k)  # a CPU tensor


def _near(got, ref, tol: float, what: str) -> None:
    """|got − ref| <= tol · max(1, max |ref|): float32 kernels against a float64 reference."""
    err, scale = (got.double() - ref).abs().max().item(), max(1.0, ref.abs().max().item())
    assert err <= tol * scale, f"{what}: error {err:.3g} at scale {scale:.3g}"


def _kernels_match_torch(device: str) -> None:
    """forward_triton / backward_triton (float32) against the PyTorch loops in float64, to 1e-5 of the
    largest entry; the last case with two token blocks per chunk and two row tiles per state matrix."""
    cases = ((2, False, (16, 16, 32), 32), (1, False, (32, 16, 16), 32), (2, True, (16, 32, 16), 32),
             (2, True, (32, 32, 32), 16))
    default = mlp_loop.ROWS
    try:
        for case in cases:
            _case_matches_torch(device, *case)
    finally:
        mlp_loop.ROWS = default


def _case_matches_torch(device: str, m: int, anchored: bool, shape: tuple[int, int, int], rows: int) -> None:
    """One case of `_kernels_match_torch`: m channels, anchors or not, (C, d, h), state rows per tile."""
    C, d, h = shape
    mlp_loop.ROWS = rows
    x = inputs(B=2, H=2, N=3, C=C, d=d, h=h, m=m, anchored=anchored, device=device)  # float64
    x32 = [t if t is None else t.float() for t in x]
    if anchored:  # k, kv, u as the memory passes them: (B, H, ...) views of a (B, N, C, H, ...) layout
        x32[2:5] = [t.permute(0, 2, 3, 1, 4).contiguous().permute(0, 3, 1, 2, 4) for t in x32[2:5]]
    for i, (a, b) in enumerate(zip(mlp_loop.forward_triton(*x32), mlp_loop.forward_torch(*x))):
        _near(a, b, 1e-5, f"case {m, anchored, C, d, h, rows}: forward output {i}")
    S1, S2, e, a, delta = mlp_loop.forward_torch(*x)
    g = torch.Generator().manual_seed(3)
    gs = [torch.randn(t.shape, generator=g, dtype=t.dtype).to(device) for t in (S1, S2, e, a, delta)]
    args = (S1, S2, x[2], x[4], x[5], x[6], x[7], e, a, delta, *gs)
    args32 = [t if t is None else t.float() for t in args]
    if anchored:
        args32[2:4] = x32[2], x32[4]
    got, want = mlp_loop.backward_triton(*args32), mlp_loop.backward_torch(*args)
    for i, (a, b) in enumerate(zip(got, want)):
        if i >= 6 and not anchored:
            continue  # the anchors' gradients: zeros from the kernel, unused
        _near(a, b.expand_as(a), 1e-5, f"case {m, anchored, C, d, h, rows}: backward output {i}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels themselves run (below); the "
                    "interpreter of the GPU image's older Triton fails on a scalar conversion")
def test_triton_kernels_under_the_interpreter():
    run_interpreted("ops.test_mlp_memory_loop", "_kernels_match_torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_kernels_on_cuda():
    pytest.importorskip("triton")
    torch.backends.cuda.matmul.allow_tf32 = False
    _kernels_match_torch("cuda")


def test_memory_with_the_op_compiles_without_graph_breaks(monkeypatch):
    from nlcore.ops import mlp_memory as mlp
    from nlcore.ops.mlp_memory import chunk as mlp_chunk
    from tests.ops.test_mlp_memory import NAMES, make

    monkeypatch.setattr(mlp_chunk, "LOOP", "op")
    x = make(T=21, dtype=torch.float32)

    def f(*ts):
        y, (W1, W2), (S1, S2) = mlp.mlp_memory(*ts, chunk=8)
        return sum((t * t).sum() for t in (y, W1, W2, S1, S2))

    ts = [x[n] for n in NAMES]
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(*ts)
    want = f(*ts)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, ts), torch.autograd.grad(want, ts))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_memory_with_the_kernels_equals_its_token_reference_on_cuda():
    """The whole chunk path through the kernels ("auto" on CUDA) against the token loop, float32,
    forward and backward, to 1e-5 of the largest entry."""
    pytest.importorskip("triton")
    from nlcore.ops import mlp_memory as mlp
    from nlcore.ops.mlp_memory import chunk as mlp_chunk
    from tests.ops.test_mlp_memory import NAMES, make

    torch.backends.cuda.matmul.allow_tf32 = False
    x = {n: (t.detach().cuda().requires_grad_() if t is not None else None)
         for n, t in make(B=2, H=2, T=100, d=16, hd=32, dtype=torch.float32).items()}
    X1 = torch.zeros(2, 2, 2, 32, 16, device="cuda")
    assert mlp_chunk.use_op(X1, x["k"][:, :, :16].unflatten(2, (1, 16)))
    ts = [x[n] for n in NAMES]
    outs = {}
    for impl in ("chunk", "token"):
        y, (W1, W2), (S1, S2) = mlp.mlp_memory(*ts, chunk=16, impl=impl)
        o = [y, W1, W2, S1, S2]
        loss = sum((t * torch.linspace(-1, 1, t.numel(), device="cuda").view_as(t)).sum() for t in o)
        outs[impl] = o + list(torch.autograd.grad(loss, ts))
    for a, b in zip(outs["token"], outs["chunk"]):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
