"""The delta rule and its relatives as pure functions on a linear memory W.

Nested Learning (Behrouz et al., NeurIPS 2025) §2.2 (Eqs. 2–6: backprop of a linear layer is
a dot-product associative memory mapping x to its local surprise signal ∇_yL), §2.3 (Eqs. 27–29:
the L2-regression "delta" gradient descent, DGD) and §2.3 (Eqs. 17–22: momentum and delta
momentum).

Conventions: W is (d_out, d_in) and y = W x. Single-token functions accept leading batch dims on
W, x and u (independent memories, e.g. one per seed): W (..., d_out, d_in), x (..., d_in),
u (..., d_out). Token-batched functions take X (N, d_in) and G (N, d_out), all N tokens
evaluated at the same W_t.

Two parameterisations of the step size appear, kept apart by name:
- `eta` is the proximal η of  argmin_W ½‖W x − u‖² + 1/(2η)‖W − W_t‖²;
- `step` is η′ = η/(1+η), the coefficient that multiplies both terms of the normalised rule
  (‖x̂‖ = 1), η′ ∈ (0, 1]; `eta_prime(eta)` converts (η = ∞ gives η′ = 1, an exact overwrite).

Sign: the regression target of the delta rule is u = −∇_yL. With +∇_yL as printed in Eq. 27
the step ascends the loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# EPS (one constant for nlcore) floors ‖x‖ when normalising (x = 0 gives x̂ = 0: no update) and
# ‖x‖² in the η → ∞ limit
from nlcore.ops.l2norm import EPS, l2norm


def eta_prime(eta: float) -> float:
    """η′ = η/(1+η): the normalised rule's step for proximal η (η = ∞ → 1)."""
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    return 1.0 if math.isinf(eta) else eta / (1.0 + eta)


def normalize(x: Tensor, eps: float = EPS) -> Tensor:
    """x̂ = x / max(‖x‖, eps) along the last dim (zero rows stay zero): nlcore.ops.l2norm."""
    return l2norm(x, eps)


def _outer(a: Tensor, b: Tensor) -> Tensor:
    return a.unsqueeze(-1) * b.unsqueeze(-2)  # a bᵀ: (..., d_out, d_in)


def _matvec(W: Tensor, x: Tensor) -> Tensor:
    return (W @ x.unsqueeze(-1)).squeeze(-1)  # W x: (..., d_out)


def _as_scalar_or_batch(eta, ref: Tensor):
    """A float, or a tensor of the leading batch shape broadcast onto (..., 1, 1)."""
    if isinstance(eta, Tensor):
        return eta.to(ref.dtype)[..., None, None]
    return eta


# ---------------------------------------------------------------------------------------------
# single-token rules
# ---------------------------------------------------------------------------------------------
def proximal_l2_step(W: Tensor, x: Tensor, u: Tensor, eta) -> Tensor:
    r"""Exact proximal L2 step (one token), the delta rule without approximation.

    W_{t+1} = \arg\min_W ½‖W x − u‖² + \frac{1}{2η}‖W − W_t‖²
            = (W_t + η u xᵀ)(I + η x xᵀ)^{-1}
            = W_t − \frac{η}{1 + η‖x‖²}(W_t x − u) xᵀ          (Sherman–Morrison, no inverse)

    `eta` may be math.inf (exact overwrite: W_{t+1} x = u) or a tensor of W's batch shape.
    """
    sq = (x * x).sum(-1)  # ‖x‖²: (...)
    if isinstance(eta, Tensor) or not math.isinf(eta):
        coef = eta / (1.0 + eta * sq)  # η/(1+η‖x‖²): (...)
    else:
        coef = 1.0 / sq.clamp_min(EPS)  # limit η → ∞
    coef = torch.as_tensor(coef, dtype=W.dtype, device=W.device)
    err = _matvec(W, x) - u  # prediction error W_t x − u: (..., d_out)
    return W - coef[..., None, None] * _outer(err, x)  # (..., d_out, d_in)


def normalized_delta_step(W: Tensor, x: Tensor, grad_y: Tensor, eta) -> Tensor:
    r"""Practical normalised delta rule (DGD; [arXiv] Eq. 57 with λ = 1).

    W_{t+1} = W_t (I − η′ x̂ x̂ᵀ) − η′ ∇_yL x̂ᵀ,    x̂ = x/‖x‖,   η′ = η/(1+η)

    This is `proximal_l2_step(W, x̂, u, η)` with regression target u = −∇_yL (with +∇_yL, as
    printed in the paper, the step ascends). To store a value v, pass grad_y = −v.
    """
    step = eta_prime(eta) if not isinstance(eta, Tensor) else eta / (1.0 + eta)
    step = _as_scalar_or_batch(step, W)
    xh = normalize(x)  # x̂: (..., d_in)
    decay = _outer(_matvec(W, xh), xh)  # W x̂ x̂ᵀ: (..., d_out, d_in)
    write = _outer(grad_y, xh)  # ∇_yL x̂ᵀ: (..., d_out, d_in)
    return W - step * (decay + write)


def hebbian_step(W: Tensor, x: Tensor, v: Tensor, eta) -> Tensor:
    r"""Hebbian / linear-attention write (dot-product objective, Eqs. 13, 16).

    W_{t+1} = W_t + η v xᵀ  =  one GD step on −⟨W x, v⟩ + \frac{1}{2η}‖W − W_t‖²
    """
    return W + _as_scalar_or_batch(eta, W) * _outer(v, x)  # (..., d_out, d_in)


def gd_step(W: Tensor, x: Tensor, v: Tensor, eta) -> Tensor:
    r"""Plain gradient step on ½‖W x − v‖² (un-normalised delta / LMS / Widrow–Hoff).

    W_{t+1} = W_t − η (W_t x − v) xᵀ     (diverges for η‖x‖² > 2)
    """
    err = _matvec(W, x) - v  # W x − v: (..., d_out)
    return W - _as_scalar_or_batch(eta, W) * _outer(err, x)


def batch_mean_delta_step(W: Tensor, X: Tensor, grad_W: Tensor, *, lr: float,
                          beta: float) -> Tensor:
    r"""The batch-mean rule: NOT the delta rule; kept only to compare against it.

    W_{t+1} = W_t (I − β x̄ x̄ᵀ) − lr · G,    x̄ = normalize(mean_n x_n),  G = ∇_W L

    The decay uses the batch-mean input, so it erases W only along ONE direction per batch
    instead of along every token's key, and it is not the solution of any per-token proximal
    problem. x̄ is normalised so that β plays the role of η′ and a comparison with the delta
    rule isolates the one difference: a mean key instead of per-token keys.
    """
    xbar = normalize(X.reshape(-1, X.shape[-1]).mean(0))  # x̄: (d_in,)
    return W - beta * _outer(W @ xbar, xbar) - lr * grad_W  # (d_out, d_in)


# ---------------------------------------------------------------------------------------------
# token-batched rules (N tokens, W frozen during the batch)
# ---------------------------------------------------------------------------------------------
def delta_statistics(X: Tensor, G: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    r"""Sufficient statistics of the summed rule: A = Σ_n x̂_n x̂_nᵀ, B = Σ_n g_n x̂_nᵀ.

    X (..., d_in) and G (..., d_out) with the same leading dims (flattened to N tokens).
    O(d²) memory whatever N is.
    """
    Xh = normalize(X.reshape(-1, X.shape[-1]), eps)  # x̂: (N, d_in)
    G = G.reshape(-1, G.shape[-1])  # g = ∇_yL: (N, d_out)
    return Xh.T @ Xh, G.T @ Xh  # A: (d_in, d_in), B: (d_out, d_in)


def apply_delta_statistics(W: Tensor, A: Tensor, B: Tensor, *, step: float,
                           decay: float | None = None) -> Tensor:
    r"""W − η′_d W A − η′ B  (η′_d = η′ unless `decay` is given): the summed delta update."""
    decay = step if decay is None else decay
    return W - decay * (W @ A) - step * B  # (d_out, d_in)


def summed_delta_step(W: Tensor, X: Tensor, G: Tensor, *, step: float,
                      decay: float | None = None) -> Tensor:
    r"""Sum over N tokens of the normalised rule, every token evaluated at the same W_t.

    W_{t+1} = W_t − η′ [W_t A + B],   A = Σ x̂ x̂ᵀ,  B = Σ ∇_yL x̂ᵀ

    This is one gradient step of size η′ on Σ_n ½‖W x̂_n + g_n‖² (a CMS chunk, Eq. 31).
    Stable (decay eigenvalues in [0, 1]) when η′ λ_max(A) ≤ 1; divide η′ by N for a mean.
    """
    A, B = delta_statistics(X, G)
    return apply_delta_statistics(W, A, B, step=step, decay=decay)


def sequential_delta_steps(W: Tensor, X: Tensor, G: Tensor, *, step: float,
                           decay: float | None = None) -> Tensor:
    r"""Token-by-token normalised rule (reference loop; O(N) sequential steps).

    W_{n+1} = W_n − η′_d (W_n x̂_n) x̂_nᵀ − η′ g_n x̂_nᵀ,   n = 1..N, g_n given (not recomputed)
    """
    decay = step if decay is None else decay
    Xh = normalize(X.reshape(-1, X.shape[-1]))  # x̂: (N, d_in)
    G = G.reshape(-1, G.shape[-1])  # (N, d_out)
    for xh, g in zip(Xh, G):
        W = W - decay * torch.outer(W @ xh, xh) - step * torch.outer(g, xh)  # (d_out, d_in)
    return W


# ---------------------------------------------------------------------------------------------
# momentum as a memory of updates (Eqs. 17, 21–22)
# ---------------------------------------------------------------------------------------------
def momentum_step(m: Tensor, g: Tensor, *, alpha: float, eta: float) -> Tensor:
    r"""Classic momentum (Eq. 17, descent sign): m_{i+1} = α m_i − η g_i;  then W += m_{i+1}."""
    return alpha * m - eta * g


def delta_momentum_step(m: Tensor, g: Tensor, *, alpha: float, eta: float,
                        eps: float = EPS) -> Tensor:
    r"""Delta momentum (Eqs. 21–22, flattened per tensor).

    m_{i+1} = α (I − ĝ_i ĝ_iᵀ) m_i − η g_i,   ĝ = g/‖g‖_F,   then W_{i+1} = W_i + m_{i+1}

    m is a parameter-shaped memory; with the gradient as key, Eq. 22's L2 objective gives a
    right-multiplied decay m(αI − ggᵀ). We normalise the key (an O(n) form) and apply the
    retention α to the whole memory before the delta write, so the old content along the new
    gradient direction is replaced (not kept, as in classic momentum) and the rest decays by α.
    At α = 1 this is exactly (αI − ĝĝᵀ); for α < 1 the literal (αI − ĝĝᵀ) would flip the sign of
    that component (eigenvalue α − 1), which we consider a typo-level artefact.
    """
    gh = g / g.norm().clamp_min(eps)  # ĝ: key, same shape as m
    m = m - (m * gh).sum() * gh  # (I − ĝĝᵀ) m: erase what is stored along ĝ
    return alpha * m - eta * g  # retention α, write −η g
