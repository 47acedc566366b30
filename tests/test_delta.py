"""Closed-form checks of nlcore.delta (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from nlcore import delta as D

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _proximal_by_solve(W0, x, u, eta):
    """argmin_W ½‖Wx − u‖² + 1/(2η)‖W − W0‖² from the normal equations W (xxᵀ + I/η) = u xᵀ + W0/η."""
    M = torch.outer(x, x) + torch.eye(x.numel(), dtype=F64) / eta  # (d_in, d_in), symmetric
    R = torch.outer(u, x) + W0 / eta  # (d_out, d_in)
    return torch.linalg.solve(M, R.T).T


@pytest.mark.parametrize("eta", [0.01, 0.7, 5.0, 1e3])
def test_proximal_step_is_the_argmin(eta):
    W0, x, u = _rand(5, 7, seed=1), _rand(7, seed=2) * 3, _rand(5, seed=3)
    got = D.proximal_l2_step(W0, x, u, eta)
    assert torch.allclose(got, _proximal_by_solve(W0, x, u, eta), atol=1e-10, rtol=0)
    # it is also (W0 + η u xᵀ)(I + η x xᵀ)⁻¹
    inv = torch.linalg.inv(torch.eye(7, dtype=F64) + eta * torch.outer(x, x))
    assert torch.allclose(got, (W0 + eta * torch.outer(u, x)) @ inv, atol=1e-10, rtol=0)


def test_proximal_step_infinite_eta_overwrites_and_batches():
    W0, x, u = _rand(3, 4, 6), _rand(3, 6, seed=1), _rand(3, 4, seed=2)  # 3 independent memories
    W = D.proximal_l2_step(W0, x, u, math.inf)
    assert torch.allclose((W @ x.unsqueeze(-1)).squeeze(-1), u, atol=1e-12)
    for i in range(3):  # leading dims are independent memories
        assert torch.allclose(W[i], D.proximal_l2_step(W0[i], x[i], u[i], math.inf), atol=1e-14)
    eta = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    Wb = D.proximal_l2_step(W0, x, u, eta)
    for i in range(3):
        assert torch.allclose(Wb[i], _proximal_by_solve(W0[i], x[i], u[i], eta[i].item()),
                              atol=1e-10)


@pytest.mark.parametrize("eta", [0.3, 1.0, 20.0])
def test_normalized_equals_exact_on_unit_inputs(eta):
    W0, g = _rand(4, 6), _rand(4, seed=1)
    x = D.normalize(_rand(6, seed=2))  # ‖x‖ = 1
    norm = D.normalized_delta_step(W0, x, g, eta)
    assert torch.allclose(norm, D.proximal_l2_step(W0, x, -g, eta), atol=1e-12)  # u = −∇_yL
    # and written out with η′ = η/(1+η)
    ep = eta / (1 + eta)
    ref = W0 @ (torch.eye(6, dtype=F64) - ep * torch.outer(x, x)) - ep * torch.outer(g, x)
    assert torch.allclose(norm, ref, atol=1e-12)
    # non-unit x: the normalised rule is the exact step on x̂
    x3 = 3.0 * x
    assert torch.allclose(D.normalized_delta_step(W0, x3, g, eta),
                          D.proximal_l2_step(W0, x, -g, eta), atol=1e-12)


def test_normalized_step_descends_the_loss():
    """Target −∇_yL: a small step lowers L(y) = ½‖y − t‖² (with +∇_yL it would rise)."""
    W0, x, t = _rand(4, 6), _rand(6, seed=1), _rand(4, seed=2)
    g = W0 @ x - t  # ∇_yL at y = W0 x
    W1 = D.normalized_delta_step(W0, x, g, 0.05)
    assert (W1 @ x - t).norm() < (W0 @ x - t).norm()


def test_eta_prime_and_validation():
    assert D.eta_prime(1.0) == 0.5 and D.eta_prime(math.inf) == 1.0
    with pytest.raises(ValueError, match="eta"):
        D.eta_prime(-1.0)


def _orthonormal_keys(d, n, seed=0):
    Q, _ = torch.linalg.qr(_rand(d, d, seed=seed))
    return Q[:, :n].T.contiguous()  # (n, d) orthonormal rows


def _write(rule, K, V, **kw):
    W = torch.zeros(V.shape[1], K.shape[1], dtype=F64)
    for k, v in zip(K, V):
        W = rule(W, k, v, **kw)
    return W


def test_orthonormal_keys_recalled_exactly_after_one_pass():
    K, V = _orthonormal_keys(16, 10), _rand(10, 5, seed=1)
    for W in (_write(D.proximal_l2_step, K, V, eta=math.inf),
              _write(lambda W, k, v, eta: D.normalized_delta_step(W, k, -v, eta), K, V,
                     eta=math.inf),  # η′ = 1
              _write(D.gd_step, K, V, eta=1.0),
              _write(D.hebbian_step, K, V, eta=1.0)):
        assert torch.allclose(K @ W.T, V, atol=1e-12)


def test_correlated_keys_break_hebbian_more_than_delta():
    """Correlated keys: Hebbian crosstalk is large; one delta pass overwrites exactly."""
    base = _rand(1, 16, seed=3)
    K = D.normalize(0.8 * base + 0.6 * D.normalize(_rand(6, 16, seed=4)))  # shared direction
    V = _rand(6, 5, seed=5)

    def err(W):
        return ((K @ W.T - V).pow(2).sum(1) / V.pow(2).sum(1)).mean()

    heb = _write(D.hebbian_step, K, V, eta=1.0)
    dlt = _write(D.proximal_l2_step, K, V, eta=math.inf)
    assert err(heb) > 0.5 and err(dlt) < err(heb)
    assert torch.allclose(dlt @ K[-1], V[-1], atol=1e-12)  # the latest write is exact
    assert not torch.allclose(heb @ K[-1], V[-1], atol=1e-2)


def test_gd_and_hebbian_are_gradient_steps():
    W0, x, v = _rand(3, 4).requires_grad_(True), _rand(4, seed=1), _rand(3, seed=2)
    (gl2,) = torch.autograd.grad(0.5 * (W0 @ x - v).pow(2).sum(), W0)
    (gdot,) = torch.autograd.grad(-(W0 @ x) @ v, W0)
    W0 = W0.detach()
    assert torch.allclose(D.gd_step(W0, x, v, 0.3), W0 - 0.3 * gl2, atol=1e-14)
    assert torch.allclose(D.hebbian_step(W0, x, v, 0.3), W0 - 0.3 * gdot, atol=1e-14)


def test_summed_equals_sum_of_token_steps_and_statistics():
    W0, X, G = _rand(4, 6), _rand(9, 6, seed=1), _rand(9, 4, seed=2)
    eta = 0.25
    ep = D.eta_prime(eta)
    ref = W0 + sum(D.normalized_delta_step(W0, x, g, eta) - W0 for x, g in zip(X, G))
    assert torch.allclose(D.summed_delta_step(W0, X, G, step=ep), ref, atol=1e-12)
    A, B = D.delta_statistics(X.reshape(3, 3, 6), G.reshape(3, 3, 4))  # leading dims flatten
    Xh = X / X.norm(dim=1, keepdim=True)
    assert torch.allclose(A, sum(torch.outer(x, x) for x in Xh), atol=1e-12)
    assert torch.allclose(B, sum(torch.outer(g, x) for g, x in zip(G, Xh)), atol=1e-12)


def test_sequential_equals_loop_of_normalized_steps():
    W0, X, G = _rand(4, 6), _rand(5, 6, seed=1), _rand(5, 4, seed=2)
    eta = 2.0
    W = W0
    for x, g in zip(X, G):
        W = D.normalized_delta_step(W, x, g, eta)
    assert torch.allclose(D.sequential_delta_steps(W0, X, G, step=D.eta_prime(eta)), W,
                          atol=1e-12)
    # with a single token, sequential == summed
    assert torch.allclose(D.sequential_delta_steps(W0, X[:1], G[:1], step=0.4),
                          D.summed_delta_step(W0, X[:1], G[:1], step=0.4), atol=1e-14)


def test_batch_mean_step_closed_form():
    W0, X, Gw = _rand(4, 6), _rand(8, 6, seed=1), _rand(4, 6, seed=2)
    xb = X.mean(0) / X.mean(0).norm()
    ref = W0 @ (torch.eye(6, dtype=F64) - 0.3 * torch.outer(xb, xb)) - 0.1 * Gw
    assert torch.allclose(D.batch_mean_delta_step(W0, X, Gw, lr=0.1, beta=0.3), ref, atol=1e-12)


def test_momentum_rules():
    m, g = _rand(3, 4), _rand(3, 4, seed=1)
    assert torch.allclose(D.momentum_step(m, g, alpha=0.9, eta=0.1), 0.9 * m - 0.1 * g)
    gh = (g / g.norm()).reshape(-1)
    # α = 1: exactly Eq. 22 with a normalised key, m (I − ĝĝᵀ) − η g (flattened)
    ref = m.reshape(-1) @ (torch.eye(12, dtype=F64) - torch.outer(gh, gh)) - 0.1 * g.reshape(-1)
    got = D.delta_momentum_step(m, g, alpha=1.0, eta=0.1)
    assert torch.allclose(got.reshape(-1), ref, atol=1e-12)
    # the component along ĝ is replaced by the new write, the rest decays by α
    got = D.delta_momentum_step(m, g, alpha=0.5, eta=0.1)
    assert torch.allclose((got.reshape(-1) @ gh), -0.1 * g.norm(), atol=1e-12)
    m_perp = m.reshape(-1) - (m.reshape(-1) @ gh) * gh
    assert torch.allclose(got.reshape(-1) + 0.1 * g.reshape(-1), 0.5 * m_perp, atol=1e-12)


def test_proximal_step_gradcheck():
    W0, x, u = _rand(3, 4).requires_grad_(True), _rand(4, seed=1).requires_grad_(True), _rand(3)
    assert torch.autograd.gradcheck(lambda W, x: D.proximal_l2_step(W, x, u, 0.7), (W0, x))
