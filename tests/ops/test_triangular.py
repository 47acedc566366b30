"""nlcore.ops.triangular: the unit lower-triangular solves, both paths, the custom op, the Triton kernel.

The chunk paths that use the solves are checked against their token references with both paths
(the `solve_path` fixture in tests/ops/test_linear_memory.py and tests/models/test_memory_layers.py;
HOPE's product form here and in tests/models/test_memory_layers.py). The Triton kernel runs here under Triton's CPU interpreter when Triton
is installed (it is not a CI dependency) and on a CUDA device when there is one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlcore.ops import triangular as tri

ROOT = Path(__file__).resolve().parents[2]


def lower(B=4, C=9, n=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(B, C, C, generator=g, dtype=dtype) / C**0.5
    R = torch.randn(B, C, n, generator=g, dtype=dtype)
    return L, R


def test_inverse_op_is_the_inverse_and_ignores_the_upper_part():
    L, _ = lower()
    T = tri.unit_lower_inverse(L)  # L's diagonal and upper part are not strictly lower: ignored
    eye = torch.eye(L.shape[-1], dtype=L.dtype)
    torch.testing.assert_close(T, torch.linalg.inv(eye + L.tril(-1)), rtol=0, atol=1e-12)


def test_inverse_op_registration():
    L, _ = lower(dtype=torch.float32)
    torch.library.opcheck(tri.unit_lower_inverse, (L,))


@pytest.mark.parametrize("path", ["solve", "inverse"])
def test_both_paths_solve_the_system_with_autograd_gradients(path, monkeypatch):
    monkeypatch.setattr(tri, "PREFERRED", path)
    L, R = lower()
    L, R = L.tril(-1).requires_grad_(), R.requires_grad_()
    G = tri.solve_unit_lower(L, R)
    eye = torch.eye(L.shape[-1], dtype=L.dtype)
    torch.testing.assert_close((eye + L) @ G, R, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: tri.solve_unit_lower(a.tril(-1), b), (L, R))
    gL = torch.autograd.grad(tri.solve_unit_lower(L, R).square().sum(), L)[0]
    assert torch.equal(gL, gL.tril(-1))  # no gradient into the structural zeros


def test_product_solve_is_the_system_with_autograd_gradients(solve_path):
    """`solve_unit_lower_product` (HOPE's L = pK ⊙ kk, its own backward) against the plain solve of
    pK ⊙ kk through autograd."""
    g = torch.Generator().manual_seed(0)
    B, C, d = 3, 6, 4
    pK = (torch.rand(B, C, C, generator=g, dtype=torch.float64) * 0.5).tril(-1).requires_grad_()
    kk = torch.randn(B, C, C, generator=g, dtype=torch.float64, requires_grad=True)
    R = torch.randn(B, C, d, generator=g, dtype=torch.float64, requires_grad=True)
    G = tri.solve_unit_lower_product(pK, kk, R)
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


def test_bad_preference_names_the_setting(monkeypatch):
    monkeypatch.setattr(tri, "PREFERRED", "cholesky")
    with pytest.raises(ValueError, match="PREFERRED"):
        tri.solve_unit_lower(*lower())


def test_inverse_path_compiles_without_graph_breaks(monkeypatch):
    monkeypatch.setattr(tri, "PREFERRED", "inverse")
    L, R = lower(dtype=torch.float32)
    L, R = L.tril(-1).requires_grad_(), R.requires_grad_()

    def f(a, b):
        return tri.solve_unit_lower(a, b).square().sum()

    got = torch.compile(f, backend="aot_eager", fullgraph=True)(L, R)
    want = f(L, R)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, (L, R)), torch.autograd.grad(f(L, R), (L, R)))
    # the "auto" choice on a CUDA tensor reads triton_available(): it must trace too
    monkeypatch.setattr(tri, "PREFERRED", "auto")
    got = torch.compile(lambda a: a * 2 if tri.triton_available() else a, backend="eager", fullgraph=True)(L)
    torch.testing.assert_close(got, L * 2 if tri.triton_available() else L)


def _kernel_matches_torch(device: str) -> None:
    for C, dtype, tol in ((64, torch.float32, 2e-6), (128, torch.float32, 4e-6), (5, torch.float32, 2e-6),
                           (64, torch.float64, 1e-13), (48, torch.float64, 1e-13)):
        L, _ = lower(B=6, C=C, dtype=dtype, seed=C)
        L = L.tril(-1).to(device)
        T = tri.triton_inverse(L)
        eye = torch.eye(C, dtype=dtype, device=device)
        want = torch.linalg.solve_triangular(eye + L, eye.expand_as(L), upper=False)
        torch.testing.assert_close(T, want, rtol=0, atol=tol)
    # every entry is written (the output starts as NaN), for both kernels
    _, rows_kernel, blocks_kernel = tri._inverse_kernels()
    L, _ = lower(B=3, C=64, dtype=torch.float32, seed=1)
    L = L.tril(-1).to(device)
    for launch in (lambda T: blocks_kernel[(3,)](L, T, C=64, B=16), lambda T: rows_kernel[(3,)](L, T, C=64, BC=64)):
        T = torch.full_like(L, float("nan"))
        launch(T)
        torch.testing.assert_close(T, tri.triton_inverse(L), rtol=0, atol=2e-6)


def run_interpreted(module: str, check: str) -> None:
    """Run `tests.<module>.<check>('cpu')` in a subprocess under Triton's interpreter (TRITON_INTERPRET
    must be set before Triton is imported); skips without Triton."""
    pytest.importorskip("triton")
    code = f"from tests.{module} import {check}; {check}('cpu')"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_triton_kernel_under_the_interpreter():
    run_interpreted("ops.test_triangular", "_kernel_matches_torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_kernel_on_cuda_and_the_linear_memory_paths():
    pytest.importorskip("triton")
    _kernel_matches_torch("cuda")
    from nlcore.ops.linear_memory import linear_memory
    from tests.ops.test_linear_memory import NAMES, make_inputs

    torch.backends.cuda.matmul.allow_tf32 = False
    x = {k: (v.cuda().requires_grad_() if v is not None else None)
         for k, v in make_inputs(B=4, H=4, T=256, dk=64, dv=64, dtype=torch.float32, beta_min=0.05).items()}
    outs = {}
    for impl in ("token", "chunk"):
        o = [t for t in linear_memory(*[x[n] for n in NAMES], chunk=64, impl=impl) if t is not None]
        loss = sum((t * torch.linspace(-1, 1, t.numel(), device="cuda").view_as(t)).sum() for t in o)
        outs[impl] = (o, torch.autograd.grad(loss, [x[n] for n in NAMES if x[n] is not None]))
    for a, b in zip(outs["token"][0] + list(outs["token"][1]), outs["chunk"][0] + list(outs["chunk"][1])):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
