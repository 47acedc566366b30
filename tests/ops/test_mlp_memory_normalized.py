"""The MLP memory's normalised gradient factors: c_s bounds the curvature of ℓ_s along θ."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nlcore.ops.mlp_memory import mlp_memory
from nlcore.ops.mlp_memory.naive import factors


def test_normaliser_bounds_the_jacobians_largest_eigenvalue():
    """c_s − 1 lies between the largest eigenvalue of J Jᵀ and its trace, J the Jacobian of M(k_s) in
    θ = (W1, W2) (float64, by autograd): the normalised step is a step along the gradient divided by
    a bound on its curvature."""
    g = torch.Generator().manual_seed(0)
    d, h = 5, 7
    W1, W2 = torch.randn(h, d, generator=g, dtype=torch.float64), torch.randn(d, h, generator=g, dtype=torch.float64)
    k = torch.randn(1, d, generator=g, dtype=torch.float64)
    v = torch.randn(1, d, generator=g, dtype=torch.float64)
    e, a, delta = factors(W1, W2, k, k - v)
    en, _, dn = factors(W1, W2, k, k - v, normalize=True)
    c = (e / en)[0, 0]
    assert torch.allclose(e / en, c.expand_as(e)) and torch.allclose(delta / dn, c.expand_as(delta))

    def M(w1, w2):
        return k[0] + w2 @ F.silu(w1 @ k[0])

    J1, J2 = torch.autograd.functional.jacobian(M, (W1, W2))  # (d, h, d), (d, d, h)
    J = torch.cat([J1.flatten(1), J2.flatten(1)], 1)  # (d, P)
    eig = torch.linalg.eigvalsh(J @ J.T)
    assert eig[-1] <= c - 1 + 1e-12 and c - 1 <= eig.sum() + 1e-12


def test_normalized_chunk_path_equals_the_token_reference_float64():
    g = torch.Generator().manual_seed(1)
    B, H, T, d, h, C = 2, 2, 11, 4, 8, 4
    q, k, v = (F.normalize(torch.randn(B, H, T, d, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))
    eta, alpha, beta = (torch.rand(B, H, T, generator=g, dtype=torch.float64) for _ in range(3))
    W1 = torch.randn(B, H, h, d, generator=g, dtype=torch.float64) / 2
    W2 = torch.randn(B, H, d, h, generator=g, dtype=torch.float64) / 2
    outs = [mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=C, impl=impl, normalize=True)
            for impl in ("token", "chunk")]
    plain = mlp_memory(q, k, v, eta, alpha, beta, W1, W2, chunk=C, impl="chunk")
    (y0, (a0, b0), (s0, t0)), (y1, (a1, b1), (s1, t1)) = outs
    for x, y in ((y0, y1), (a0, a1), (b0, b1), (s0, s1), (t0, t1)):
        assert torch.allclose(x, y, atol=1e-12, rtol=1e-10)
    assert (y0 - plain[0]).abs().max() > 1e-6  # normalising changes the memory


def _error(W1, W2, k, v):
    """|M(k) − v| of the residual MLP memory M(k) = k + W2 σ(W1 k) (one row, one head)."""
    return (k + W2[0, 0] @ F.silu(W1[0, 0] @ k) - v).norm()


def test_a_chunks_write_needs_its_step_divided_by_the_chunk_size():
    """Within a chunk every token's gradient is taken at the chunk's first weights, so C tokens with
    one key write C normalised steps in one direction. At step 1/C the write is one normalised step
    and never raises that token's error; at step 1 it overshoots and raises it for most draws
    (float64, 40 random memories, C = 16). Between them the normaliser's bound is loose: a summed
    step (C x step) of 4 never raises the error here, 8 does for some draws."""
    d, h, C = 8, 16, 16
    lower, raised = 0, 0
    rose = {4.0: 0, 8.0: 0}
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        k, v = (F.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0) for _ in range(2))
        W1 = torch.randn(1, 1, h, d, generator=g, dtype=torch.float64) / d ** 0.5
        W2 = torch.randn(1, 1, d, h, generator=g, dtype=torch.float64) / h ** 0.5
        K, V = k.expand(1, 1, C, d), v.expand(1, 1, C, d)
        ones = torch.ones(1, 1, C, dtype=torch.float64)

        before = _error(W1, W2, k, v)
        after = [_error(*mlp_memory(K, K, V, eta * ones, ones, None, W1, W2, chunk=C, normalize=True)[1], k, v)
                 for eta in (1.0 / C, 1.0)]
        lower += bool(after[0] < before)
        raised += bool(after[1] > before)
        for total in rose:
            end = mlp_memory(K, K, V, (total / C) * ones, ones, None, W1, W2, chunk=C, normalize=True)[1]
            rose[total] += bool(_error(*end, k, v) > before)
    assert lower == 40 and raised >= 30
    assert rose[4.0] == 0 and rose[8.0] > 0, rose


def test_with_one_key_a_chunks_write_depends_on_its_summed_step_only():
    """C copies of one (k, v) at step s/C write s times one normalised step taken at the chunk's
    first weights, whatever C: the chunk's summed step, not its length, sets how far the write
    goes (float64; C = 4, 16, 64 at s = 2 and 8)."""
    d, h = 8, 16
    g = torch.Generator().manual_seed(3)
    k, v = (F.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0) for _ in range(2))
    W1 = torch.randn(1, 1, h, d, generator=g, dtype=torch.float64) / d ** 0.5
    W2 = torch.randn(1, 1, d, h, generator=g, dtype=torch.float64) / h ** 0.5
    for s in (2.0, 8.0):
        ends = []
        for C in (4, 16, 64):
            K, V, ones = k.expand(1, 1, C, d), v.expand(1, 1, C, d), torch.ones(1, 1, C, dtype=torch.float64)
            ends.append(mlp_memory(K, K, V, (s / C) * ones, ones, None, W1, W2, chunk=C, normalize=True)[1])
        for W1_end, W2_end in ends[1:]:
            assert torch.allclose(W1_end, ends[0][0], rtol=0, atol=1e-12)
            assert torch.allclose(W2_end, ends[0][1], rtol=0, atol=1e-12)
        assert (ends[0][0] - W1).abs().max() > 1e-3  # the write moved the weights
