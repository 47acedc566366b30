"""nlcore.ops.hope_memory.loop: HOPE's chunk loop as one op with a hand-written backward.

On CPU the op runs its PyTorch loops: their backward is checked by float64 gradcheck and against
autograd through the forward loop, and the memory with the op against the memory with hope_chunks'
own loop and against the token reference. The Triton kernels are checked against the PyTorch loops
under Triton's interpreter when Triton is installed (not a CI dependency) and on a CUDA device when
there is one, where the memory with the kernels is also checked against its token reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlcore.ops.hope_memory import chunk as hope_chunk
from nlcore.ops.hope_memory import loop as hope_loop
from tests.ops.test_triangular import run_interpreted


def inputs(B=2, H=2, N=3, C=5, dh=3, m=2, dtype=torch.float64, device="cpu", seed=0):
    """The op's inputs at sensible scales: x, pK (strictly lower), pc, ke, mix, init, Y."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (scale * torch.randn(*s, generator=g, dtype=dtype)).to(device)

    pK = (0.2 * torch.rand(B, H, N, C, C, generator=g, dtype=dtype)).tril(-1).to(device)
    return [r(B, H, N, C, dh), pK, r(B, H, N, C, m, scale=0.5), r(B, H, N, C, m, scale=0.5),
            r(B, H, N, m, m, scale=0.5), r(H, 3 * dh, dh, scale=0.5), r(B, H, 3 * dh, m, dh, scale=0.3)]


def loss_of(outs, seed=1):
    g = torch.Generator().manual_seed(seed)
    return sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum() for o in outs)


@pytest.mark.parametrize("m", [2, 1])
def test_op_backward_equals_autograd_through_the_loop(m):
    x = [t.requires_grad_() for t in inputs(m=m)]
    got = torch.autograd.grad(loss_of(hope_loop.hope_loop_fwd(*x)[:3]), x)
    want = torch.autograd.grad(loss_of(hope_loop.forward_torch(*x)[:3]), x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert got[1].triu().abs().max() == 0  # pK's entries on and above the diagonal get no gradient


@pytest.mark.parametrize("m", [2, 1])
def test_op_gradcheck_float64(m):
    x = [t.requires_grad_() for t in inputs(B=1, H=2, N=2, C=3, dh=2, m=m)]

    def f(*ts):
        return hope_loop.hope_loop_fwd(*ts)[:3]

    assert torch.autograd.gradcheck(f, tuple(x))


def test_op_registration():
    x = inputs(dtype=torch.float32)
    torch.library.opcheck(hope_loop.hope_loop_fwd, tuple(x))
    outs = hope_loop.hope_loop_fwd(*x)
    grads = [torch.randn_like(t) for t in outs[:3]]
    torch.library.opcheck(hope_loop.hope_loop_bwd, (*x[:6], *outs, *grads))


def test_kernel_fits_only_cuda_float32_and_its_sizes():
    x = inputs(C=64, dh=16, dtype=torch.float32)[0]
    assert not hope_loop.kernel_fits(x)  # CPU
    if torch.cuda.is_available() and hope_loop.triton_available():
        assert hope_loop.kernel_fits(x.cuda())
        assert not hope_loop.kernel_fits(x.cuda().double())
        assert not hope_loop.kernel_fits(inputs(C=32, dh=16, dtype=torch.float32, device="cuda")[0])
        assert not hope_loop.kernel_fits(inputs(C=64, dh=24, dtype=torch.float32, device="cuda")[0])


def _memory_outputs(mem, u, st):
    """The memory's reads, end state and the gradients of a loss of both on its parameters and the
    carried state."""
    st = {k: v.detach().requires_grad_() for k, v in st.items()}
    y, new = mem(u, st, None)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).view_as(y)
    loss = (y * w).sum() + sum((v * v).sum() for v in new.values())
    return [y, *new.values(), *torch.autograd.grad(loss, [*mem.parameters(), *st.values()])]


@pytest.mark.parametrize("momentum", [True, False])
def test_memory_with_the_op_equals_its_own_loop(momentum, monkeypatch):
    from nlcore.models.memory_layers import SelfModifyingMemory

    torch.manual_seed(0)
    mem = SelfModifyingMemory(16, 2, chunk=8, momentum=momentum).double()
    st = {k: 0.1 * torch.randn(3, *s, dtype=torch.float64) for k, s in mem.state_shapes().items()}
    u = torch.randn(3, 32, 16, dtype=torch.float64)
    out = {}
    for fused in (False, True):
        monkeypatch.setattr(hope_chunk, "FUSED", fused)
        out[fused] = _memory_outputs(mem, u, st)
    for a, b in zip(out[False], out[True]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["hope", "hope_nomomentum", "hope_outer"])
def test_hope_with_the_op_equals_the_token_reference_float64(name, monkeypatch):
    from tests.models.test_memory_layers import data, make, randomise_state, run

    xy = data()
    x, y = xy[:, :-1], xy[:, 1:]
    outs = {}
    for impl in ("token", "chunk"):
        monkeypatch.setattr(hope_chunk, "FUSED", impl == "chunk")
        m = make(name, mem_impl=impl)
        logits, new = run(m, x, randomise_state(m, x.shape[0]), targets=y)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()) + sum((v * 0.3).sum() for v in new.values())
        outs[impl] = [logits, *new.values(), *torch.autograd.grad(loss, list(m.parameters()))]
    assert max((a - b).abs().max() for a, b in zip(outs["token"], outs["chunk"])) < 1e-10
    assert max(a.abs().max() for a in outs["token"][-3:]) > 1e-6  # the comparison is not between zeros


def _near(got, ref, tol: float, what: str) -> None:
    """|got − ref| <= tol · max(1, max |ref|): float32 kernels against a float64 reference."""
    err, scale = (got.double() - ref).abs().max().item(), max(1.0, ref.abs().max().item())
    assert err <= tol * scale, f"{what}: error {err:.3g} at scale {scale:.3g}"


def _kernels_match_torch(device: str) -> None:
    """forward_triton / backward_triton (float32) against the PyTorch loops in float64, to 1e-5 of the
    largest entry: (m, dh, state rows per program), one row block per dh and several."""
    default = hope_loop.ROWS
    try:
        for m, dh, rows in ((2, 16, 16), (1, 32, 16), (2, 32, 32)):
            hope_loop.ROWS = rows
            x = inputs(B=2, H=2, N=2, C=64, dh=dh, m=m, device=device)
            what = f"case m={m}, dh={dh}, rows={rows}"
            want = hope_loop.forward_torch(*x)
            for i, (a, b) in enumerate(zip(hope_loop.forward_triton(*(t.float() for t in x)), want)):
                _near(a, b, 1e-5, f"{what}: forward output {i}")
            g = torch.Generator().manual_seed(3)
            args = (*x[:6], *want, *(torch.randn(t.shape, generator=g, dtype=t.dtype).to(device) for t in want[:3]))
            got = hope_loop.backward_triton(*(t.float() for t in args))
            for i, (a, b) in enumerate(zip(got, hope_loop.backward_torch(*args))):
                _near(a, b, 1e-5, f"{what}: backward output {i}")
    finally:
        hope_loop.ROWS = default


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the kernels themselves run (below)")
def test_triton_kernels_under_the_interpreter():
    run_interpreted("ops.test_hope_memory_loop", "_kernels_match_torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_kernels_on_cuda():
    pytest.importorskip("triton")
    torch.backends.cuda.matmul.allow_tf32 = False
    _kernels_match_torch("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dh,momentum", [(64, True), (32, False)])
def test_memory_with_the_kernels_equals_its_token_reference_on_cuda(dh, momentum):
    """The self-modifying memory through the kernels (FUSED None: they run on CUDA) against its token
    loop, float32, reads, end state and gradients, to 1e-5 of the largest entry."""
    pytest.importorskip("triton")
    from nlcore.models.memory_layers import SelfModifyingMemory

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    outs = {}
    for impl in ("chunk", "token"):
        torch.manual_seed(0)
        mem = SelfModifyingMemory(2 * dh, 2, chunk=64, momentum=momentum, impl=impl).cuda()
        if impl == "chunk":
            u = torch.randn(2, 128, 2 * dh, device="cuda")
            st = {k: 0.1 * torch.randn(2, *s, device="cuda") for k, s in mem.state_shapes().items()}
            assert hope_chunk._fused(torch.zeros(2, 2, 128, dh, device="cuda"), 64)
        outs[impl] = _memory_outputs(mem, u, st)
    for a, b in zip(outs["token"], outs["chunk"]):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())


def test_memory_with_the_op_compiles_without_graph_breaks(monkeypatch):
    """The op inside the compiled memory (aot_eager, one graph): the values and gradients of the eager memory."""
    from nlcore.models.memory_layers import SelfModifyingMemory

    monkeypatch.setattr(hope_chunk, "FUSED", True)
    torch.manual_seed(0)
    mem = SelfModifyingMemory(16, 2, chunk=8)
    st = {k: 0.1 * torch.randn(2, *s) for k, s in mem.state_shapes().items()}
    u = torch.randn(2, 24, 16, requires_grad=True)

    def f(u):
        y, new = mem(u, st, None)
        return (y * y).sum() + sum((v * v).sum() for v in new.values())

    got = torch.compile(f, backend="aot_eager", fullgraph=True)(u)
    want = f(u)
    torch.testing.assert_close(got, want)
    params = [u, *mem.parameters()]
    torch.testing.assert_close(torch.autograd.grad(got, params), torch.autograd.grad(want, params))
