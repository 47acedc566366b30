"""Tests for nlcore.ops.linear_memory: the chunk-parallel path (chunk.py) equals the token recurrence
(naive.py) forward and backward, a closed form of the delta rule, row independence, state carry,
bad inputs."""

from __future__ import annotations

import pytest
import torch

from nlcore.ops.gates import chunk_coeffs, shift_prev
from nlcore.ops.linear_memory import (
    chunk_step,
    linear_memory,
    linear_memory_chunked,
    linear_memory_reference,
)

NAMES = ("q", "k", "v", "eta", "alpha", "beta", "M0", "S0")


def make_inputs(B=2, H=3, T=37, dk=5, dv=4, dtype=torch.float64, momentum=True, seed=0,
                beta_min=0.0):
    """Sensible gates: η ∈ (0,1), α ∈ (0.9,1), β ∈ (beta_min,0.9); q, k L2-normalised."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    x = dict(q=unit(rnd(B, H, T, dk)), k=unit(rnd(B, H, T, dk)), v=rnd(B, H, T, dv),
             eta=torch.sigmoid(rnd(B, H, T)),
             alpha=0.9 + 0.1 * torch.rand(B, H, T, generator=g, dtype=dtype),
             beta=(beta_min + (0.9 - beta_min) * torch.rand(B, H, T, generator=g, dtype=dtype)
                   if momentum else None),
             M0=rnd(B, H, dv, dk), S0=rnd(B, H, dv, dk) if momentum else None)
    return x


def naive(q, k, v, eta, alpha, beta, M0, S0):
    """Independent loop over (b, h, t) with explicit outer products (no batching tricks)."""
    B, H, T, _ = q.shape
    ys = torch.zeros(v.shape, dtype=v.dtype)
    MT, ST = M0.clone(), (None if beta is None else S0.clone())
    for b in range(B):
        for h in range(H):
            M = M0[b, h].clone()
            S = torch.zeros_like(M) if beta is None else S0[b, h].clone()
            for t in range(T):
                kt = k[b, h, t]
                grad = torch.outer(M @ kt - v[b, h, t], kt)  # ∇_M ½‖M k − v‖² at M_{t-1}
                bt = 0.0 if beta is None else beta[b, h, t]
                S = bt * S - eta[b, h, t] * grad
                M = alpha[b, h, t] * M + S
                ys[b, h, t] = M @ q[b, h, t]
            MT[b, h] = M
            if ST is not None:
                ST[b, h] = S
    return ys, MT, ST


def fwd_bwd(x, seed=1, **kw):
    """Outputs and gradients w.r.t. every input for a fixed random upstream cotangent."""
    leaves = {n: t.clone().requires_grad_(True) for n, t in x.items() if t is not None}
    args = [leaves.get(n) for n in NAMES]
    out = linear_memory(*args, **kw)
    g = torch.Generator().manual_seed(seed)
    outs = [o for o in out if o is not None]
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum()
               for o in outs)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach() for o in outs], dict(zip(leaves, grads))


def max_err(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


CASES = [(32, 8), (37, 8), (37, 1), (37, 37), (37, 64)]  # (T, chunk)


@pytest.mark.parametrize("momentum", [False, True])
def test_token_reference_matches_naive_loop(momentum):
    x = make_inputs(B=2, H=2, T=13, momentum=momentum)
    got = linear_memory_reference(*[x[n] for n in NAMES])
    want = naive(*[x[n] for n in NAMES])
    assert (got[2] is None) == (not momentum)
    assert max_err([o for o in got if o is not None], [o for o in want if o is not None]) < 1e-12


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("T,chunk", CASES)
def test_chunk_equals_token_float64(T, chunk, momentum, solve_path):
    x = make_inputs(T=T, momentum=momentum)
    o_tok, g_tok = fwd_bwd(x, impl="token")
    o_chk, g_chk = fwd_bwd(x, impl="chunk", chunk=chunk)
    assert len(o_tok) == len(o_chk) == (3 if momentum else 2)
    assert max_err(o_tok, o_chk) < 1e-10
    assert g_tok.keys() == g_chk.keys()
    for n in g_tok:
        assert (g_tok[n] - g_chk[n]).abs().max().item() < 1e-10, n


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("T,chunk", CASES)
def test_chunk_equals_token_float32(T, chunk, momentum, solve_path):
    # β >= 0.05: the chunk path's dL/dβ comes from log-space gate products (gates.py), whose
    # float32 rounding is amplified by 1/β (about 2e-4 absolute at β ≈ 2e-3).
    x = make_inputs(T=T, momentum=momentum, dtype=torch.float32, beta_min=0.05)
    o_tok, g_tok = fwd_bwd(x, impl="token")
    o_chk, g_chk = fwd_bwd(x, impl="chunk", chunk=chunk)
    assert all(o.dtype == torch.float32 for o in o_chk)
    assert max_err(o_tok, o_chk) < 1e-5
    for n in g_tok:  # 1e-5 relative to the gradient's scale (entries reach ~20)
        scale = max(1.0, g_tok[n].abs().max().item())
        assert (g_chk[n] - g_tok[n]).abs().max().item() < 1e-5 * scale, n


def test_gradcheck_chunk_path(solve_path):
    x = make_inputs(B=1, H=1, T=5, dk=3, dv=2, momentum=True)
    args = tuple(x[n].clone().requires_grad_(True) for n in NAMES)

    def f(*a):
        return tuple(o for o in linear_memory(*a, chunk=2) if o is not None)

    assert torch.autograd.gradcheck(f, args)


def test_closed_form_one_token_stores_the_pair():
    x = make_inputs(B=1, H=1, T=1, dk=6, dv=3, momentum=False)
    k, v, M0 = x["k"], x["v"], x["M0"]
    one = torch.ones(1, 1, 1, dtype=torch.float64)
    for impl in ("token", "chunk"):
        _, M1, S1 = linear_memory(x["q"], k, v, one, one, None, M0, impl=impl)
        assert S1 is None
        kt, vt = k[0, 0, 0], v[0, 0, 0]
        torch.testing.assert_close(M1[0, 0] @ kt, vt, rtol=0, atol=1e-12)  # M_1 k = v
        want = M0[0, 0] - torch.outer(M0[0, 0] @ kt - vt, kt)  # M_0 − (M_0 k − v) kᵀ
        torch.testing.assert_close(M1[0, 0], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["token", "chunk"])
def test_rows_are_independent(impl):
    x = make_inputs(B=3, H=2, T=21, momentum=True)
    full = linear_memory(*[x[n] for n in NAMES], chunk=8, impl=impl)
    for b in range(3):
        row = linear_memory(*[x[n][b:b + 1] for n in NAMES], chunk=8, impl=impl)
        for a, r in zip(full, row):
            torch.testing.assert_close(a[b:b + 1], r, rtol=0, atol=1e-12)


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("impl", ["token", "chunk"])
def test_carrying_state_equals_one_call(impl, momentum):
    x = make_inputs(T=37, momentum=momentum)
    T1 = 13  # not a multiple of the chunk

    def part(sl):
        return [None if x[n] is None else (x[n][:, :, sl] if n not in ("M0", "S0") else x[n])
                for n in NAMES]

    y, M, S = linear_memory(*[x[n] for n in NAMES], chunk=8, impl=impl)
    y1, M1, S1 = linear_memory(*part(slice(0, T1)), chunk=8, impl=impl)
    a2 = part(slice(T1, None))
    a2[6], a2[7] = M1, S1
    y2, M2, S2 = linear_memory(*a2, chunk=8, impl=impl)
    torch.testing.assert_close(torch.cat([y1, y2], dim=2), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(M2, M, rtol=0, atol=1e-12)
    if momentum:
        torch.testing.assert_close(S2, S, rtol=0, atol=1e-12)
    else:
        assert S is None and S2 is None


def test_default_S0_is_zero_and_ignored_without_momentum():
    x = make_inputs(T=9, momentum=True)
    a = [x[n] for n in NAMES]
    with_zero = linear_memory(*a[:7], torch.zeros_like(x["M0"]), chunk=4)
    default = linear_memory(*a[:7], None, chunk=4)
    for p, r in zip(with_zero, default):
        torch.testing.assert_close(p, r, rtol=0, atol=0)
    y, M, S = linear_memory(*a[:5], None, x["M0"], x["S0"], chunk=4)  # S0 ignored, no momentum
    y0, M0_, _ = linear_memory(*a[:5], None, x["M0"], None, chunk=4)
    assert S is None
    torch.testing.assert_close(y, y0, rtol=0, atol=0)


def test_bfloat16_inputs_return_bfloat16():
    x = make_inputs(T=19, momentum=True, dtype=torch.float32)
    a16 = [x[n].to(torch.bfloat16) for n in NAMES]
    y, M, S = linear_memory_chunked(*a16, chunk=8)
    assert y.dtype == M.dtype == S.dtype == torch.bfloat16
    y32, _, _ = linear_memory(*[t.float() for t in a16], impl="token")  # same rounded inputs
    torch.testing.assert_close(y.float(), y32, rtol=2e-2, atol=2e-2)


def test_empty_sequence_returns_start_state():
    x = make_inputs(T=0, momentum=True)
    y, M, S = linear_memory(*[x[n] for n in NAMES])
    assert y.shape == (2, 3, 0, 4)
    torch.testing.assert_close(M, x["M0"])
    torch.testing.assert_close(S, x["S0"])


@pytest.mark.parametrize("name,bad", [
    ("k", lambda x: x["k"][:, :, :-1]),
    ("v", lambda x: x["v"][:, :1]),
    ("eta", lambda x: x["eta"][..., :-1]),
    ("alpha", lambda x: x["alpha"][None]),
    ("beta", lambda x: x["beta"][:1]),
    ("M0", lambda x: x["M0"].transpose(-1, -2)),
    ("S0", lambda x: x["S0"][..., :-1]),
    ("q", lambda x: x["q"][0]),
])
def test_bad_shapes_raise(name, bad):
    x = make_inputs(T=7, momentum=True)
    x[name] = bad(x)
    with pytest.raises(ValueError, match=name):
        linear_memory(*[x[n] for n in NAMES])


def test_bad_impl_and_chunk_raise():
    a = [make_inputs(T=4)[n] for n in NAMES]
    with pytest.raises(ValueError, match="impl"):
        linear_memory(*a, impl="scan")
    for chunk in (0, -3, 2.0):
        with pytest.raises(ValueError, match="chunk"):
            linear_memory(*a, chunk=chunk)


@pytest.mark.parametrize("momentum", [False, True])
def test_chunk_step_equals_token_reference_on_one_chunk(momentum, solve_path):
    """`chunk_step` (HOPE's building block) on one chunk with leading broadcast dims: keys, queries
    and gates (B, 1, H, C, ·) shared by G memories (B, G, H, ·), as HOPE's three memories share
    them; outputs and gradients equal the token reference run on the expanded inputs."""
    B, G, H, C, dk, dv = 2, 3, 2, 6, 5, 4
    x = make_inputs(B=B * G, H=H, T=C, dk=dk, dv=dv, momentum=momentum)
    shared = {n: x[n].view(B, G, H, *x[n].shape[2:])[:, :1].clone()
              for n in ("q", "k", "eta", "alpha", "beta") if x[n] is not None}
    own = {n: x[n].view(B, G, H, *x[n].shape[2:]) for n in ("v", "M0", "S0") if x[n] is not None}
    leaves = {n: t.requires_grad_(True) for n, t in {**shared, **own}.items()}
    beta = leaves.get("beta")
    c = chunk_coeffs(leaves["alpha"], beta)
    y, M, S = chunk_step(leaves["q"], leaves["k"], leaves["v"], leaves["eta"], c, shift_prev(c),
                         leaves["M0"], leaves.get("S0"))
    assert (S is None) == (not momentum)

    def flat(t):  # (B, 1 or G, H, ...) -> (B G, H, ...)
        return None if t is None else t.expand(B, G, *t.shape[2:]).reshape(B * G, *t.shape[2:])

    want = linear_memory(*[flat(leaves.get(n)) for n in NAMES], impl="token")
    got = [flat(o) for o in (y, M, S) if o is not None]
    want = [o for o in want if o is not None]
    assert max_err(got, want) < 1e-10
    g = torch.Generator().manual_seed(3)
    ws = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in want]
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, ws)), list(leaves.values()))
             for outs in (got, want)]
    for n, a, b in zip(leaves, *grads):
        assert (a - b).abs().max().item() < 1e-10, n
    assert max(a.abs().max().item() for a in grads[1]) > 1e-3  # not a comparison between zeros
