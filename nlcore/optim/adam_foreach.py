r"""Adam / AdamW as one chain of foreach ops, for torch.compile to fuse (``TrainConfig.compile``).

torch's fused Adam kernel gives each thread block one chunk of one tensor, at most 36 tensors per
launch; a level of the seed model (under a million parameters) then runs on a few launches of a
few dozen blocks, even on slices (nlcore.optim.sliced). Written with ``torch._foreach_*`` ops,
inductor turns the whole update into a couple of horizontally fused Triton kernels over all the
level's tensors. Same update as torch's (per tensor, t = step count after the increment):

    θ ← θ (1 − lr λ)                                  (AdamW; Adam: g ← g + λ θ instead)
    m ← β₁ m + (1 − β₁) g,     v ← β₂ v + (1 − β₂) g²
    θ ← θ − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

The step counts and lr are 0-d tensors on the parameters' device (no host sync, no recompile
when the schedule changes lr). A gradient clip can ride along (`clip`). Equal to torch.optim.AdamW /
Adam up to float rounding (tests/optim/test_adam_foreach.py); `compile_update` of
nlcore.optim.sliced's optimizers routes a level's step here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def clip_coef(total: Tensor, max_norm: float) -> Tensor:
    """torch's clip_grad_norm_ coefficient: min(1, max_norm / (total + 1e-6)), a 0-d tensor."""
    return torch.clamp(max_norm / (total + 1e-6), max=1.0)


def adam_foreach_(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                  steps: list[Tensor], lr: Tensor, *, beta1: float, beta2: float, eps: float,
                  weight_decay: float, decoupled: bool, clip: tuple[Tensor, float] | None = None) -> None:
    """One Adam(W) step in place on the lists (one entry per parameter); see the module docstring.
    clip = (total gradient norm, max_norm): step with the gradients scaled by
    min(1, max_norm / (total + 1e-6)) (torch's clip_grad_norm_ coefficient), fused into the update;
    the .grad tensors themselves are left unscaled."""
    if clip is not None:
        total, max_norm = clip
        grads = torch._foreach_mul(grads, clip_coef(total, max_norm))
    torch._foreach_add_(steps, 1)
    if weight_decay:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    bc1 = [1 - torch.pow(beta1, s) for s in steps]  # 1 − β₁ᵗ per tensor
    root_bc2 = [(1 - torch.pow(beta2, s)).sqrt() for s in steps]  # √(1 − β₂ᵗ)
    denom = torch._foreach_div(torch._foreach_sqrt(exp_avg_sqs), root_bc2)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(exp_avgs, denom)
    torch._foreach_mul_(update, [lr / b for b in bc1])
    torch._foreach_sub_(params, update)
